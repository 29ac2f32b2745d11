// CudaMultipassRunnerOf (cuda_multipass.h): model/multipass.cpp's runner on the CUDA
// model. A step is prepared on the host (checks, uploads, every buffer sized), then
// queued on the model's stream: the passes forward with the thoughts copied in from the
// final norm's states, the LM head's loss on the targeted rows, and the passes backward
// in reverse, each thought's gradient carried back to the row that produced it.
#include "model/cuda_multipass.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "model/cuda_buffers.h"
#include "model/multipass.h"
#include "runtime/check.h"

namespace coconut::model {
namespace {

using cuda_buffers::copy;
using cuda_buffers::ensure;
using cuda_buffers::zero;
using gpu::bf16;

}  // namespace

template <typename Act>
CudaMultipassRunnerOf<Act>::~CudaMultipassRunnerOf() {
  drop_graphs();
  for (cudaEvent_t e : phase_events_) (void)cudaEventDestroy(e);  // best effort
}

template <typename Act>
void CudaMultipassRunnerOf<Act>::set_phase_timing(bool on) {
  phase_timing_ = on;
}

template <typename Act>
void CudaMultipassRunnerOf<Act>::mark_phase(const std::string& name, cudaStream_t stream) {
  if (!phase_timing_) return;
  if (name.empty()) phase_names_.clear();  // "" marks the step's start: event 0
  const size_t k = name.empty() ? 0 : phase_names_.size() + 1;
  while (phase_events_.size() <= k) {
    cudaEvent_t e = nullptr;
    CUDA_CHECK(cudaEventCreate(&e));
    phase_events_.push_back(e);
  }
  CUDA_CHECK(cudaEventRecord(phase_events_[k], stream));
  if (!name.empty()) phase_names_.push_back(name);
}

template <typename Act>
std::vector<typename CudaMultipassRunnerOf<Act>::PhaseTime> CudaMultipassRunnerOf<Act>::last_phases() const {
  std::vector<PhaseTime> out;
  for (size_t k = 0; k < phase_names_.size(); ++k) {
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, phase_events_[k], phase_events_[k + 1]));
    out.push_back({phase_names_[k], ms});
  }
  return out;
}

template <typename Act>
void CudaMultipassRunnerOf<Act>::drop_graphs() {
  // Best effort (also called from the destructor): a failed destroy leaves nothing to do.
  for (Graph& g : graphs_)
    if (g.exec) (void)cudaGraphExecDestroy(g.exec);
  graphs_.clear();
  seen_.clear();
}

template <typename Act>
void CudaMultipassRunnerOf<Act>::set_cuda_graphs(bool on, int max_graphs) {
  COCONUT_CHECK(max_graphs >= 1, "set_cuda_graphs: max_graphs must be at least 1 (got {})", max_graphs);
  use_graphs_ = on;
  max_graphs_ = size_t(max_graphs);
  if (!on) drop_graphs();
  while (graphs_.size() > max_graphs_) drop_oldest_graph();
}

template <typename Act>
void CudaMultipassRunnerOf<Act>::drop_oldest_graph() {
  (void)cudaGraphExecDestroy(graphs_.front().exec);  // best effort, as drop_graphs
  graphs_.erase(graphs_.begin());
}

template <typename Act>
void CudaMultipassRunnerOf<Act>::set_target_rows_multiple(int multiple) {
  COCONUT_CHECK(multiple >= 1, "set_target_rows_multiple: {} is not a positive count", multiple);
  target_rows_multiple_ = size_t(multiple);
}

template <typename Act>
void CudaMultipassRunnerOf<Act>::set_dropout(uint64_t seed, uint64_t step, std::vector<int64_t> sample_ids) {
  dropout_pending_ = true;
  dropout_seed_ = seed;
  dropout_step_ = step;
  dropout_ids_ = std::move(sample_ids);
}

template <typename Act>
int CudaMultipassRunnerOf<Act>::prepare(CudaGPT2Of<Act>& model, const SequenceBatch& batch) {
  const GPT2Config& cfg = model.config();
  validate_batch(batch, cfg);
  const int B = batch.B, T = batch.T, C = cfg.d_model;
  const size_t R = size_t(B) * T;
  acts_.resize(cfg, B, T, model.attention_storage(T), model.stream());
  model.ensure_scratch(int(R), B, T);
  acts_.pos_ids.copy_from_host(batch.pos_ids);
  acts_.key_mask.copy_from_host(batch.key_mask);
  acts_.dropout_enabled = false;
  if (cfg.dropout > 0.f) {
    COCONUT_CHECK(dropout_pending_, "model.dropout is {}: call set_dropout(seed, step, sample ids) before each "
                  "forward_backward", cfg.dropout);
    COCONUT_CHECK(dropout_ids_.empty() || dropout_ids_.size() == size_t(B),
                  "set_dropout got {} sample ids for a batch of {} sequences", dropout_ids_.size(), B);
    dropout_pending_ = false;
    std::vector<int64_t> ids(B);
    for (int s = 0; s < B; ++s) ids[s] = dropout_ids_.empty() ? s : dropout_ids_[s];
    acts_.set_dropout(dropout_seed_, dropout_step_, batch.pos_ids, ids);
  }
  ensure(tokens_, R);
  tokens_.copy_from_host(batch.tokens);
  for (DeviceBuffer<Act>* b : {&embeds_, &d_embeds_, &d_hidden_}) ensure(*b, R * C);
  ensure(embedding_ws_, gpu::embedding_backward_workspace_bytes(int(R)));

  // The targeted rows and their tokens: the loss is taken on these rows only.
  std::vector<int> rows, ids;
  for (size_t r = 0; r < R; ++r)
    if (batch.targets[r] >= 0) rows.push_back(int(r)), ids.push_back(batch.targets[r]);
  // Rounded up to a multiple of target_rows_multiple_ with rows that have no target
  // (distinct, as scatter_rows wants; their label -100 gives them no loss and no
  // gradient), so that batches of one padded shape share a plan; where too few such
  // rows exist the count stays as it is.
  if (target_rows_multiple_ > 1 && !rows.empty()) {
    const size_t want = (rows.size() + target_rows_multiple_ - 1) / target_rows_multiple_ * target_rows_multiple_;
    std::vector<int> spare;
    for (size_t r = 0; r < R && spare.size() < want - rows.size(); ++r)
      if (batch.targets[r] < 0) spare.push_back(int(r));
    if (spare.size() == want - rows.size())
      for (int r : spare) rows.push_back(r), ids.push_back(-100);
  }
  const int n = int(rows.size());
  if (n > 0) {
    ensure(target_rows_, rows.size());
    ensure(target_ids_, ids.size());
    target_rows_.copy_from_host(rows);
    target_ids_.copy_from_host(ids);
    ensure(gathered_, size_t(n) * C);
    ensure(d_gathered_, size_t(n) * C);
  }
  model.ensure_lm_head(n, true);  // before the plan key, as the scratch above
  return n;
}

template <typename Act>
void CudaMultipassRunnerOf<Act>::queue_step(CudaGPT2Of<Act>& model, const SequenceBatch& batch, int n) {
  const GPT2Config& cfg = model.config();
  const int B = batch.B, T = batch.T, C = cfg.d_model, L = cfg.n_layer;
  COCONUT_CHECK(cfg.thought_scale == 1.f, "model.thought_scale {} is not implemented on the GPU (train.device=cpu)",
                cfg.thought_scale);
  const size_t R = size_t(B) * T;
  const cudaStream_t s = model.stream();
  mark_phase("", s);
  gpu::embed_tokens(embeds_.data(), model.wte(), tokens_.data(), int(R), C, s);

  // Forward pass by pass; after each, its outputs become the next pass's thoughts.
  std::vector<uint8_t> is_thought(R, 0);
  for (size_t p = 0; p < batch.passes.size(); ++p) {
    const Pass& pass = batch.passes[p];
    model.forward_stage(acts_, pass.begin, pass.end, 0, L, embeds_.data() + size_t(pass.begin) * B * C, true, true);
    // One copy per run of consecutive samples (model/batch.h), not one per sample.
    for (const FeedbackRun& run : feedback_runs(pass, B))
      copy(embeds_.data() + (run.first_row + B) * C, static_cast<const Act*>(acts_.lnf + run.first_row * C),
           run.count * C, s);
    for (const Feedback& f : pass.feedback) is_thought[size_t(f.from + 1) * B + f.sample] = 1;
    mark_phase("forward " + std::to_string(p), s);
  }

  // Loss over the targeted rows only, gathered from the final-norm hidden states.
  zero(d_hidden_.data(), R * C, s);
  if (n > 0) {
    gpu::embed_tokens(gathered_.data(), acts_.lnf, target_rows_.data(), n, C, s);  // a row gather
    model.queue_lm_head_loss(gathered_.data(), target_ids_.data(), n, d_gathered_.data());
    gpu::scatter_rows(d_hidden_.data(), d_gathered_.data(), target_rows_.data(), n, C, s);
  }
  mark_phase("loss", s);

  // Backward: passes in reverse. A thought's input gradient is added to the hidden
  // state it came from before that earlier pass runs its backward.
  zero(d_embeds_.data(), R * C, s);
  acts_.zero_grads(s);
  for (size_t p = batch.passes.size(); p-- > 0;) {
    const Pass& pass = batch.passes[p];
    for (const FeedbackRun& run : feedback_runs(pass, B)) {
      Act* source = d_hidden_.data() + run.first_row * C;
      gpu::add_forward(source, source, d_embeds_.data() + (run.first_row + B) * C, int64_t(run.count * C), s);
    }
    const size_t off = size_t(pass.begin) * B * C;
    // The first pass's backward runs last: each layer's gradient is final after it.
    typename CudaGPT2Of<Act>::LayerDone layer_done;
    if (p == 0 && grad_ready_)
      layer_done = [this](int l) {
        if (l > 0) grad_ready_(l);
      };
    model.backward_stage(acts_, pass.begin, pass.end, 0, L, d_hidden_.data() + off, d_embeds_.data() + off, true,
                         true, layer_done);
    mark_phase("backward " + std::to_string(p), s);
  }
  // Token embeddings get their gradient; thought rows are not tokens.
  for (const RowRun& run : flagged_runs(is_thought)) zero(d_embeds_.data() + run.first * C, run.count * C, s);
  gpu::embed_tokens_backward(model.wte_grad(), d_embeds_.data(), tokens_.data(), int(R), C, cfg.vocab_size,
                             embedding_ws_.data(), s);
  if (grad_ready_) grad_ready_(0);  // layer 0, wte and wpe
  mark_phase("token embeddings", s);
}

// What a captured step depends on besides the uploaded data: the buffers (the model, the
// batch shape, the number of targets, where every buffer is) and the order of the
// kernels (the passes, the feedback, dropout on or off, the attention's precision).
template <typename Act>
std::vector<int64_t> CudaMultipassRunnerOf<Act>::plan_key(const CudaGPT2Of<Act>& model, const SequenceBatch& batch,
                                                          int n) const {
  std::vector<int64_t> key = {int64_t(reinterpret_cast<uintptr_t>(&model)), batch.B, batch.T, n,
                              acts_.dropout_enabled ? 1 : 0, int64_t(model.attention()), grad_ready_ ? 1 : 0};
  // Every buffer's address: a graph captured before a larger batch moved one of them
  // would write to freed memory. (Equal addresses are safe: buffers only grow.)
  std::vector<const void*> at = model.buffer_addresses();
  for (const std::vector<const void*>& more :
       {acts_.buffer_addresses(),
        std::vector<const void*>{tokens_.data(), target_rows_.data(), target_ids_.data(), embedding_ws_.data(),
                                 embeds_.data(), d_embeds_.data(), d_hidden_.data(), gathered_.data(),
                                 d_gathered_.data()}})
    at.insert(at.end(), more.begin(), more.end());
  for (const void* p : at) key.push_back(int64_t(reinterpret_cast<uintptr_t>(p)));
  for (const Pass& pass : batch.passes) {
    key.insert(key.end(), {pass.begin, pass.end, int64_t(pass.feedback.size())});
    for (const Feedback& f : pass.feedback) key.insert(key.end(), {f.sample, f.from});
  }
  return key;
}

template <typename Act>
double CudaMultipassRunnerOf<Act>::forward_backward(CudaGPT2Of<Act>& model, const SequenceBatch& batch,
                                                    float loss_scale) {
  // Checked here, not where the events are recorded: a replayed step records none.
  COCONUT_CHECK(!phase_timing_ || !use_graphs_, "phase timing records events between a step's phases: not with "
                "CUDA graphs");
  const int n = prepare(model, batch);
  model.set_loss_scale(loss_scale);  // read on the device: not part of a captured plan
  const cudaStream_t s = model.stream();
  if (use_graphs_) {
    queue_graphed_step(model, batch, n);
  } else {
    queue_step(model, batch, n);
  }
  CUDA_CHECK(cudaStreamSynchronize(s));
  return model.read_lm_head_loss(n);
}

template <typename Act>
void CudaMultipassRunnerOf<Act>::queue_graphed_step(CudaGPT2Of<Act>& model, const SequenceBatch& batch, int n) {
  if (grad_ready_ && !grad_ready_in_graphs_) {  // set_grad_ready(..., in_graphs = false)
    queue_step(model, batch, n);
    return;
  }
  const cudaStream_t s = model.stream();
  // The loss scale is not part of the plan: the LM head reads it from device memory.
  std::vector<int64_t> key = plan_key(model, batch, n);
  // Graphs are kept per plan, the least recently used dropped beyond max_graphs_.
  for (size_t g = 0; g < graphs_.size(); ++g) {
    if (graphs_[g].key != key) continue;
    std::rotate(graphs_.begin() + long(g), graphs_.begin() + long(g) + 1, graphs_.end());  // now the newest
    CUDA_CHECK(cudaGraphLaunch(graphs_.back().exec, s));
    ++graph_replays_;
    return;
  }
  const auto seen = std::find(seen_.begin(), seen_.end(), key);
  if (seen == seen_.end()) {
    queue_step(model, batch, n);  // a new plan: sizes the buffers
    seen_.push_back(std::move(key));
    if (seen_.size() > 4 * max_graphs_) seen_.erase(seen_.begin());
    return;
  }
  // Second step of this plan: every buffer has its size, so the capture allocates
  // nothing. A failure mid-capture ends the capture before it propagates.
  seen_.erase(seen);
  if (graphs_.size() == max_graphs_) drop_oldest_graph();
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  cudaGraph_t graph = nullptr;
  try {
    queue_step(model, batch, n);
  } catch (...) {
    (void)cudaStreamEndCapture(s, &graph);
    if (graph) (void)cudaGraphDestroy(graph);
    throw;
  }
  CUDA_CHECK(cudaStreamEndCapture(s, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);
  CUDA_CHECK(made);
  graphs_.push_back({std::move(key), exec});
  ++graph_captures_;
  CUDA_CHECK(cudaGraphLaunch(exec, s));
}

template class CudaMultipassRunnerOf<float>;
template class CudaMultipassRunnerOf<bf16>;

}  // namespace coconut::model
