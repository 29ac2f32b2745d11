// The lane driver of generate_through_stages (staged_generation.h).
#include "launcher/staged_generation.h"

#include <memory>

#include "parallel/pipeline_decoder.h"
#include "runtime/check.h"

namespace coconut::launcher {

namespace {

constexpr int kLaneTag = 0x5700;  // + lane: a lane's rows from one stage to the next

// One batch at a time in flight through the stages; see the top of the header.
struct Lane {
  explicit Lane(model::StageDecoder stage) : stage(std::move(stage)) {}
  model::StageDecoder stage;                          // this rank's stage of the lane's batch
  std::unique_ptr<curriculum::BatchDecoding> decoding;  // null: no batch
  size_t batch = 0;                                      // which one
  bool in_flight = false;     // a forward is on its way through the stages
  bool first_forward = false; // ... and it is the batch's first: each stage begins the batch
  long long entered = -1;     // the tick it entered stage 0
  curriculum::BatchDecoding::Forward forward;
  std::vector<float> hidden;  // [B, C] last column's final-norm states, from the last stage
  std::vector<int> tokens;    // [B] their greedy tokens
  std::vector<float> in;      // the rows received from the previous stage
};

// What the decoding loop reads of a lane's last column: the broadcast buffers.
class Broadcast final : public model::ColumnOutput {
 public:
  explicit Broadcast(Lane& lane) : lane_(lane) {}
  void greedy_tokens(int* out) override {
    COCONUT_CHECK(lane_.forward.needs_tokens, "staged decoding: greedy tokens of a forward that computed none "
                  "(internal error)");
    std::copy(lane_.tokens.begin(), lane_.tokens.end(), out);
  }
  const float* hidden() override { return lane_.hidden.data(); }

 private:
  Lane& lane_;
};

}  // namespace

std::vector<std::vector<curriculum::Generation>> generate_through_stages(
    const model::GPT2& model, parallel::Communicator& pipeline, const std::vector<parallel::StageLayers>& partition,
    const std::vector<std::vector<const curriculum::BuiltSample*>>& batches, const curriculum::Tokenizer& tok,
    const curriculum::GenerateOptions& options) {
  const parallel::StageLayers mine = parallel::decoding_stage(model, pipeline, partition);
  const int S = pipeline.size(), stage = pipeline.rank(), C = model.config().d_model;
  const bool first = stage == 0, last = stage == S - 1;
  std::vector<Lane> lanes;
  lanes.reserve(S);  // never moved once a lane's decoder has begun
  for (int k = 0; k < S; ++k) lanes.emplace_back(model::StageDecoder(model, mine.begin, mine.end));
  auto lane_at = [&](long long tick) -> Lane* {  // the lane that entered stage 0 at `tick`
    if (tick < 0) return nullptr;
    Lane& lane = lanes[static_cast<size_t>(tick % S)];
    return lane.in_flight && lane.entered == tick ? &lane : nullptr;
  };
  std::vector<std::vector<curriculum::Generation>> out(batches.size());
  size_t next_batch = 0;
  // options.stop_requested, asked of every rank before each new batch and agreed over the
  // replica (a signal may reach one rank only): once stopped no batch starts, and the
  // batches in flight finish, so that no message is left unmatched.
  bool stopping = false;
  auto stop_agreed = [&] {
    if (!options.stop_requested) return false;
    int64_t stops = options.stop_requested() ? 1 : 0;
    pipeline.all_reduce_sum(&stops, 1);
    return stops > 0;
  };
  parallel::Request sent;  // this stage's rows of the previous tick, to the next stage
  for (long long t = 0;; ++t) {
    // 1. A lane enters stage 0 (every rank decides alike): its batch's next forward, or
    // a new batch's first. Its previous forward left the last stage at tick t - 1.
    Lane& entering = lanes[static_cast<size_t>(t % S)];
    const bool wants_batch = !entering.decoding && next_batch < batches.size();
    if (wants_batch && !stopping) stopping = stop_agreed();
    const bool new_batch = wants_batch && !stopping;
    if (new_batch) {
      entering.decoding = std::make_unique<curriculum::BatchDecoding>(batches[next_batch], tok, options, model.config());
      entering.batch = next_batch++;
      const int B = entering.decoding->batch_size();
      entering.hidden.assign(static_cast<size_t>(B) * C, 0.f);
      entering.tokens.assign(B, 0);
    }
    if (entering.decoding) {
      entering.forward = entering.decoding->next_forward();
      entering.in_flight = true;
      entering.first_forward = new_batch;
      entering.entered = t;
    }
    bool any_in_flight = false;
    for (const Lane& lane : lanes) any_in_flight = any_in_flight || lane.in_flight;
    if (!any_in_flight) break;

    // 2. This stage's work: the lane that entered `stage` ticks ago.
    if (Lane* w = lane_at(t - stage)) {
      const curriculum::BatchDecoding::Forward& f = w->forward;
      const int B = w->decoding->batch_size();
      const size_t count = static_cast<size_t>(f.b - f.a) * B * C;
      const int tag = kLaneTag + static_cast<int>(w - lanes.data());
      parallel::Request received;
      if (!first) {
        w->in.resize(count);
        received = pipeline.irecv(w->in.data(), count, stage - 1, tag);
      }
      if (sent.pending()) sent.wait();  // the next stage has posted its receive by now
      if (received.pending()) received.wait();
      if (w->first_forward) w->stage.begin(B, w->decoding->max_columns());
      const float* rows = w->stage.forward(f.a, f.b, f.tokens, f.pos_ids, f.key_mask, f.thought, w->hidden.data(),
                                           w->in.data());
      if (!last) {
        sent = pipeline.isend(rows, count, stage + 1, tag);  // its rows stay put: waited for next tick
      } else {
        if (f.needs_tokens) w->stage.greedy_tokens(w->tokens.data());  // no LM head for thoughts only
        std::copy_n(w->stage.last_hidden(), w->hidden.size(), w->hidden.begin());
      }
    }

    // 3. The lane leaving the last stage: its outputs to every rank, then its decisions.
    if (Lane* x = lane_at(t - (S - 1))) {
      pipeline.broadcast(x->hidden.data(), x->hidden.size(), S - 1);
      if (x->forward.needs_tokens)
        pipeline.broadcast_bytes(x->tokens.data(), x->tokens.size() * sizeof(int), S - 1);
      x->in_flight = false;
      Broadcast column(*x);
      if (!x->decoding->take(column)) {
        out[x->batch] = std::move(x->decoding->generations());
        x->decoding.reset();
      }
    }
  }
  if (sent.pending()) sent.wait();
  out.resize(next_batch);  // the batches started (all of them unless stopped)
  return out;
}

}  // namespace coconut::launcher
