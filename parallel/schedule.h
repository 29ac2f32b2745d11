// Pipeline schedules over micro-stages (DESIGN.md section 4).
//
// The unit of work is a micro-stage F(m, p, s) / B(m, p, s): forward / backward of
// micro-batch m, latent pass p, over the layers of pipeline stage s (one rank per
// stage). A schedule is one ordered op list per stage: compute ops and the sends and
// receives that carry activations, gradients and the fed-back hidden state between
// stages. The executor runs these lists; the simulator (simulator.h) predicts their
// timing. Nothing here knows what a token is: a micro-batch is just a list of passes
// with a relative cost and an activation size each.
//
// Dependencies (the rules every schedule respects):
//   F(m,p,s) needs F(m,p,s-1); for s = 0 and p > 0 it needs F(m,p-1,S-1) (feedback).
//   B(m,p,s) needs F(m,p,s), B(m,p,s+1); for s = S-1 and p < P_m-1 it needs
//   B(m,p+1,0) (gradient of the fed-back state); and B(m,p',s) for every p' > p
//   (gradients w.r.t. cached keys/values accumulate from later passes).
#pragma once

#include <string>
#include <vector>

namespace coconut::parallel {

// What the scheduler knows about one micro-batch: one entry per pass.
struct MicroBatchPlan {
  std::vector<double> pass_cost;              // relative compute cost (e.g. rows = columns x sequences)
  std::vector<double> pass_activation_bytes;  // bytes one stage keeps from F(m,p,s) until B(m,p,s)

  int passes() const { return static_cast<int>(pass_cost.size()); }
};

enum class OpKind {
  Forward,
  Backward,
  SendActivation,    // F(m,p,s) output, stage s -> s+1
  RecvActivation,
  SendGrad,          // B(m,p,s) input gradient, stage s -> s-1
  RecvGrad,
  SendFeedback,      // F(m,p,S-1) last hidden state, stage S-1 -> 0, feeds pass p+1
  RecvFeedback,
  SendFeedbackGrad,  // B(m,p,0) gradient of the fed-back state, stage 0 -> S-1, feeds pass p-1
  RecvFeedbackGrad,
};

// One entry of a rank's op list. `stage` is the rank that runs the op (the index of
// the list it sits in). For a message, (micro, pass) name the micro-stage that
// PRODUCED the data (SendFeedback of pass p feeds F(m,p+1,0); SendFeedbackGrad of
// pass p feeds B(m,p-1,S-1)), and `peer` is the other rank; compute ops have peer -1.
struct Op {
  OpKind kind = OpKind::Forward;
  int micro = 0;
  int pass = 0;
  int stage = 0;
  int peer = -1;

  bool operator==(const Op&) const = default;
};

// One ordered op list per stage. With S == 1 there are no messages.
using Schedule = std::vector<std::vector<Op>>;

bool is_compute(OpKind k);
bool is_send(OpKind k);
bool is_recv(OpKind k);
const char* op_kind_name(OpKind k);
std::string to_string(const Op& op);  // e.g. "F(m=3,p=1,s=0)", "SendFeedback(m=3,p=0) 7->0"

// The op on the peer rank that pairs with a send or receive (same micro and pass).
Op matching_message(const Op& message);

// Time model shared by the schedulers (which order work by it) and the simulator
// (which predicts a schedule's step time by it). Units are arbitrary but consistent:
// with forward_time_per_cost = 1, a time of 1 is the forward of one unit of pass
// cost on one stage.
struct CostModel {
  double forward_time_per_cost = 1.0;
  double backward_factor = 2.0;      // backward = 2x forward (two products per forward product)
  std::vector<double> stage_scale;   // per-stage compute multiplier (unequal stages); empty: all 1
  double message_latency = 0.0;      // fixed time per message
  double message_bytes_per_cost = 0.0;  // bytes of a boundary activation per unit of pass cost
  double bandwidth = 0.0;            // bytes per unit time; 0 = infinite

  double compute_time(const MicroBatchPlan& plan, bool backward, int pass, int stage) const;
  // Transfer time of a message kind carrying data produced by `pass` of `plan`.
  double message_time(const MicroBatchPlan& plan, OpKind kind, int pass) const;
};

// Throws coconut::Error naming the micro-batch and field if the plans are unusable
// (no micro-batches, a micro-batch with no pass, negative or non-finite costs,
// activation sizes not one per pass) or S < 1.
void validate_plans(int S, const std::vector<MicroBatchPlan>& plans);

// GPipe: every forward of every micro-batch, then every backward in exactly the
// reverse order; no memory cap (all M micro-batches are in flight at once).
// MicroMajor (the default, standard GPipe with a micro-batch as the unit): a stage
// runs all passes of micro-batch 0, then all of micro-batch 1, ... so a stage idles
// while each fed-back state travels around the ring. PassMajor: pass 0 of every
// micro-batch, then pass 1 of every micro-batch, ... (a GPipe sweep per pass).
enum class GpipeOrder { MicroMajor, PassMajor };
Schedule gpipe(int S, const std::vector<MicroBatchPlan>& plans, GpipeOrder order = GpipeOrder::MicroMajor);

// 1F1B with the micro-batch as the unit: at most max_in_flight micro-batches hold
// activations on a stage at once (a micro-batch is in flight on stage s from the
// start of F(m,0,s) to the end of B(m,0,s)); a ready backward goes before any
// forward; a stage runs one micro-batch's forward passes at a time (it does not
// interleave forwards of different micro-batches).
Schedule one_f_one_b(int S, const std::vector<MicroBatchPlan>& plans, int max_in_flight,
                     const CostModel& cost = {});

// Ring: like 1F1B (same cap, micro-batches admitted in order), but a stage may run
// any ready micro-stage of any admitted micro-batch, so while micro-batch m's
// fed-back state travels around the ring the stages work on other micro-batches'
// passes. A greedy list scheduler: an idle stage starts the ready micro-stage with
// the longest remaining critical path under the cost model.
Schedule ring(int S, const std::vector<MicroBatchPlan>& plans, int max_in_flight, const CostModel& cost = {});

}  // namespace coconut::parallel
