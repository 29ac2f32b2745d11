// Pipeline simulator (see simulator.h): runs a Schedule's op lists under a cost model.
#include "parallel/simulator.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <tuple>

#include "runtime/check.h"

namespace coconut::parallel {

namespace {

// A message is identified by its send: kind, micro-batch, pass, sender, receiver.
using MessageKey = std::tuple<int, int, int, int, int>;

MessageKey key_of_send(const Op& send) {
  return {static_cast<int>(send.kind), send.micro, send.pass, send.stage, send.peer};
}

struct Message {
  double arrival = 0;
  bool received = false;
};

}  // namespace

SimulationResult simulate(const Schedule& schedule, const std::vector<MicroBatchPlan>& plans, const CostModel& cost) {
  const int S = static_cast<int>(schedule.size());
  validate_plans(S, plans);
  COCONUT_CHECK(cost.stage_scale.empty() || static_cast<int>(cost.stage_scale.size()) == S,
                "simulate: cost model has {} stage_scale entries, expected {} (one per stage) or none",
                cost.stage_scale.size(), S);
  const int M = static_cast<int>(plans.size());

  // Check every op names a real micro-stage before running anything.
  for (int r = 0; r < S; ++r) {
    for (size_t i = 0; i < schedule[r].size(); ++i) {
      const Op& op = schedule[r][i];
      COCONUT_CHECK(op.stage == r, "simulate: rank {} op #{} {} names stage {}", r, i, to_string(op), op.stage);
      COCONUT_CHECK(op.micro >= 0 && op.micro < M, "simulate: rank {} op #{} {}: micro-batch out of range [0, {})", r,
                    i, to_string(op), M);
      const int P = plans[op.micro].passes();
      COCONUT_CHECK(op.pass >= 0 && op.pass < P, "simulate: rank {} op #{} {}: pass out of range [0, {})", r, i,
                    to_string(op), P);
      if (is_compute(op.kind)) continue;
      COCONUT_CHECK(op.peer >= 0 && op.peer < S && op.peer != r, "simulate: rank {} op #{} {}: bad peer {}", r, i,
                    to_string(op), op.peer);
      // Each message kind travels one way: activations down, gradients up, feedback
      // from the last stage to the first and its gradient back.
      const int from = is_send(op.kind) ? r : op.peer, to = is_send(op.kind) ? op.peer : r;
      bool direction = false;
      switch (op.kind) {
        case OpKind::SendActivation: case OpKind::RecvActivation: direction = to == from + 1; break;
        case OpKind::SendGrad: case OpKind::RecvGrad: direction = to == from - 1; break;
        case OpKind::SendFeedback: case OpKind::RecvFeedback: direction = from == S - 1 && to == 0; break;
        default: direction = from == 0 && to == S - 1; break;
      }
      COCONUT_CHECK(direction, "simulate: rank {} op #{} {}: this message kind cannot go from rank {} to rank {}", r,
                    i, to_string(op), from, to);
      // A feedback message must have a pass on the other side of the ring to feed.
      const bool forward_feedback = op.kind == OpKind::SendFeedback || op.kind == OpKind::RecvFeedback;
      const bool backward_feedback = op.kind == OpKind::SendFeedbackGrad || op.kind == OpKind::RecvFeedbackGrad;
      COCONUT_CHECK(!(forward_feedback && op.pass + 1 >= P) && !(backward_feedback && op.pass == 0),
                    "simulate: rank {} op #{} {}: no pass for the fed-back state to feed", r, i, to_string(op));
    }
  }

  SimulationResult out;
  out.busy_time.assign(S, 0);
  out.finish_time.assign(S, 0);
  out.peak_activation_bytes.assign(S, 0);
  out.peak_in_flight.assign(S, 0);
  out.op_end.resize(S);
  std::vector<double> clock(S, 0), held_bytes(S, 0);
  std::vector<int> in_flight(S, 0);
  std::vector<size_t> next(S, 0);
  std::map<MessageKey, Message> sent;

  // Run each rank as far as it can; repeat until all are done or none can move.
  // The order in which ranks are visited does not change any time: a receive waits
  // for the arrival computed from the sender's own clock.
  for (;;) {
    bool progress = false, all_done = true;
    for (int r = 0; r < S; ++r) {
      const std::vector<Op>& ops = schedule[r];
      while (next[r] < ops.size()) {
        const Op& op = ops[next[r]];
        const MicroBatchPlan& plan = plans[op.micro];
        if (is_recv(op.kind)) {
          auto it = sent.find(key_of_send(matching_message(op)));
          if (it == sent.end()) break;  // blocked until the peer sends
          COCONUT_CHECK(!it->second.received, "simulate: rank {} receives {} a second time", r, to_string(op));
          it->second.received = true;
          clock[r] = std::max(clock[r], it->second.arrival);
        } else if (is_send(op.kind)) {
          const auto [it, inserted] = sent.insert({key_of_send(op), {clock[r] + cost.message_time(plan, op.kind, op.pass)}});
          COCONUT_CHECK(inserted, "simulate: rank {} sends {} a second time", r, to_string(op));
          ++out.messages;
        } else {
          const bool backward = op.kind == OpKind::Backward;
          const double t = cost.compute_time(plan, backward, op.pass, r);
          clock[r] += t;
          out.busy_time[r] += t;
          const double bytes = plan.pass_activation_bytes[op.pass];
          if (!backward) {
            held_bytes[r] += bytes;
            if (op.pass == 0) ++in_flight[r];
          } else {
            held_bytes[r] -= bytes;
            if (op.pass == 0) --in_flight[r];
          }
          out.peak_activation_bytes[r] = std::max(out.peak_activation_bytes[r], held_bytes[r]);
          out.peak_in_flight[r] = std::max(out.peak_in_flight[r], in_flight[r]);
        }
        out.op_end[r].push_back(clock[r]);
        ++next[r];
        progress = true;
      }
      if (next[r] < ops.size()) all_done = false;
    }
    if (all_done) break;
    if (!progress) {
      std::string blocked;
      for (int r = 0; r < S; ++r)
        if (next[r] < schedule[r].size())
          blocked += fmt::format("\n  rank {} op #{} {}", r, next[r], to_string(schedule[r][next[r]]));
      COCONUT_FAIL("simulate: deadlock, every unfinished rank waits on a receive whose send never comes:{}", blocked);
    }
  }
  for (const auto& [key, message] : sent)
    COCONUT_CHECK(message.received, "simulate: {} (micro {} pass {}) from rank {} to rank {} is never received",
                  op_kind_name(static_cast<OpKind>(std::get<0>(key))), std::get<1>(key), std::get<2>(key),
                  std::get<3>(key), std::get<4>(key));

  double busy_sum = 0;
  for (int r = 0; r < S; ++r) {
    out.finish_time[r] = clock[r];
    out.step_time = std::max(out.step_time, clock[r]);
    busy_sum += out.busy_time[r];
  }
  out.bubble_fraction.assign(S, 0);
  if (out.step_time > 0) {
    for (int r = 0; r < S; ++r) out.bubble_fraction[r] = 1 - out.busy_time[r] / out.step_time;
    out.bubble_fraction_overall = 1 - busy_sum / (S * out.step_time);
  }
  return out;
}

double step_time_lower_bound(int S, const std::vector<MicroBatchPlan>& plans, const CostModel& cost) {
  validate_plans(S, plans);
  const int M = static_cast<int>(plans.size());
  double bound = 0;

  // One micro-batch alone: P_m trips around the ring forward and P_m back.
  for (int m = 0; m < M; ++m) {
    const MicroBatchPlan& plan = plans[m];
    double path = 0;
    for (int p = 0; p < plan.passes(); ++p)
      for (int s = 0; s < S; ++s) {
        path += cost.compute_time(plan, false, p, s) + cost.compute_time(plan, true, p, s);
        if (s + 1 < S) path += cost.message_time(plan, OpKind::SendActivation, p) +
                               cost.message_time(plan, OpKind::SendGrad, p);
        if (s + 1 == S && p + 1 < plan.passes() && S > 1)
          path += cost.message_time(plan, OpKind::SendFeedback, p) +
                  cost.message_time(plan, OpKind::SendFeedbackGrad, p + 1);
      }
    bound = std::max(bound, path);
  }

  // Per stage: earliest first start + all work + shortest tail.
  for (int s = 0; s < S; ++s) {
    double head = 1e300, tail = 1e300, work = 0;
    for (int m = 0; m < M; ++m) {
      const MicroBatchPlan& plan = plans[m];
      double h = 0, t = 0;
      for (int q = 0; q < s; ++q) {
        h += cost.compute_time(plan, false, 0, q) + cost.message_time(plan, OpKind::SendActivation, 0);
        t += cost.compute_time(plan, true, 0, q) + cost.message_time(plan, OpKind::SendGrad, 0);
      }
      head = std::min(head, h);
      tail = std::min(tail, t);
      for (int p = 0; p < plan.passes(); ++p)
        work += cost.compute_time(plan, false, p, s) + cost.compute_time(plan, true, p, s);
    }
    bound = std::max(bound, head + work + tail);
  }
  return bound;
}

}  // namespace coconut::parallel
