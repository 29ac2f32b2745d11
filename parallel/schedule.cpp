// Pipeline schedulers: GPipe, 1F1B and the ring list scheduler (see schedule.h).
//
// Every schedule is built as a per-stage order of compute micro-stages that is the
// projection of ONE global order in which each micro-stage comes after all of its
// prerequisites. Receives are placed right before the compute that consumes them and
// sends right after the compute that produces them, so in that global order every
// receive follows its matching send: running the per-rank lists with blocking
// receives and buffered sends can therefore never deadlock (induction along the
// global order). GPipe gets its global order from a sort key; 1F1B and ring get it
// from an event simulation of the cost model, in the order ops are started.
#include "parallel/schedule.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>

#include "runtime/check.h"

namespace coconut::parallel {

bool is_compute(OpKind k) { return k == OpKind::Forward || k == OpKind::Backward; }

bool is_send(OpKind k) {
  return k == OpKind::SendActivation || k == OpKind::SendGrad || k == OpKind::SendFeedback ||
         k == OpKind::SendFeedbackGrad;
}

bool is_recv(OpKind k) { return !is_compute(k) && !is_send(k); }

const char* op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::Forward: return "Forward";
    case OpKind::Backward: return "Backward";
    case OpKind::SendActivation: return "SendActivation";
    case OpKind::RecvActivation: return "RecvActivation";
    case OpKind::SendGrad: return "SendGrad";
    case OpKind::RecvGrad: return "RecvGrad";
    case OpKind::SendFeedback: return "SendFeedback";
    case OpKind::RecvFeedback: return "RecvFeedback";
    case OpKind::SendFeedbackGrad: return "SendFeedbackGrad";
    case OpKind::RecvFeedbackGrad: return "RecvFeedbackGrad";
  }
  return "?";
}

std::string to_string(const Op& op) {
  if (is_compute(op.kind))
    return fmt::format("{}(m={},p={},s={})", op.kind == OpKind::Forward ? "F" : "B", op.micro, op.pass, op.stage);
  const int from = is_send(op.kind) ? op.stage : op.peer, to = is_send(op.kind) ? op.peer : op.stage;
  return fmt::format("{}(m={},p={}) {}->{}", op_kind_name(op.kind), op.micro, op.pass, from, to);
}

Op matching_message(const Op& message) {
  COCONUT_CHECK(!is_compute(message.kind), "matching_message: {} is not a message", to_string(message));
  Op other = message;
  // The enum lists each send right before its receive.
  other.kind = static_cast<OpKind>(static_cast<int>(message.kind) + (is_send(message.kind) ? 1 : -1));
  other.stage = message.peer;
  other.peer = message.stage;
  return other;
}

double CostModel::compute_time(const MicroBatchPlan& plan, bool backward, int pass, int stage) const {
  const double scale = stage_scale.empty() ? 1.0 : stage_scale.at(stage);
  return plan.pass_cost.at(pass) * forward_time_per_cost * scale * (backward ? backward_factor : 1.0);
}

double CostModel::message_time(const MicroBatchPlan& plan, OpKind kind, int pass) const {
  double cost = plan.pass_cost.at(pass);
  // The fed-back state is one column per sequence: the size of a latent pass's input,
  // approximated by the smaller of the producing and the consuming pass.
  if (kind == OpKind::SendFeedback || kind == OpKind::RecvFeedback)
    cost = std::min(cost, plan.pass_cost.at(pass + 1));
  if (kind == OpKind::SendFeedbackGrad || kind == OpKind::RecvFeedbackGrad)
    cost = std::min(cost, plan.pass_cost.at(pass - 1));
  const double bytes = cost * message_bytes_per_cost;
  return message_latency + (bandwidth > 0 ? bytes / bandwidth : 0.0);
}

void validate_plans(int S, const std::vector<MicroBatchPlan>& plans) {
  COCONUT_CHECK(S >= 1, "pipeline: number of stages must be >= 1, got {}", S);
  COCONUT_CHECK(!plans.empty(), "pipeline: no micro-batches to schedule");
  for (size_t m = 0; m < plans.size(); ++m) {
    const MicroBatchPlan& p = plans[m];
    COCONUT_CHECK(!p.pass_cost.empty(), "pipeline: micro-batch {} has no pass (pass_cost is empty)", m);
    COCONUT_CHECK(p.pass_activation_bytes.size() == p.pass_cost.size(),
                  "pipeline: micro-batch {} has {} pass_activation_bytes entries, expected one per pass ({})", m,
                  p.pass_activation_bytes.size(), p.pass_cost.size());
    for (int i = 0; i < p.passes(); ++i) {
      COCONUT_CHECK(std::isfinite(p.pass_cost[i]) && p.pass_cost[i] >= 0,
                    "pipeline: micro-batch {} pass {}: pass_cost must be finite and >= 0, got {}", m, i,
                    p.pass_cost[i]);
      COCONUT_CHECK(std::isfinite(p.pass_activation_bytes[i]) && p.pass_activation_bytes[i] >= 0,
                    "pipeline: micro-batch {} pass {}: pass_activation_bytes must be finite and >= 0, got {}", m, i,
                    p.pass_activation_bytes[i]);
    }
  }
}

namespace {

struct MicroStage {
  int micro, pass, stage;
  bool backward;
};

// Numbers the micro-stages 0..size-1 and states the dependency rules once.
class Graph {
 public:
  Graph(int S, const std::vector<MicroBatchPlan>& plans) : S_(S), plans_(plans) {
    for (const MicroBatchPlan& p : plans) {
      base_.push_back(size_);
      size_ += p.passes() * S * 2;
    }
  }

  int size() const { return size_; }
  int stages() const { return S_; }
  int micros() const { return static_cast<int>(plans_.size()); }
  int passes(int micro) const { return plans_[micro].passes(); }
  const MicroBatchPlan& plan(int micro) const { return plans_[micro]; }

  int id(const MicroStage& x) const { return base_[x.micro] + (x.pass * S_ + x.stage) * 2 + (x.backward ? 1 : 0); }

  MicroStage at(int id) const {
    const int m = static_cast<int>(std::upper_bound(base_.begin(), base_.end(), id) - base_.begin()) - 1;
    const int local = id - base_[m];
    return {m, local / 2 / S_, local / 2 % S_, local % 2 == 1};
  }

  std::vector<MicroStage> prerequisites(const MicroStage& x) const {
    const int m = x.micro, p = x.pass, s = x.stage, last = passes(m) - 1;
    std::vector<MicroStage> out;
    if (!x.backward) {
      if (s > 0) out.push_back({m, p, s - 1, false});
      if (s == 0 && p > 0) out.push_back({m, p - 1, S_ - 1, false});
      return out;
    }
    out.push_back({m, p, s, false});
    if (s < S_ - 1) out.push_back({m, p, s + 1, true});
    if (s == S_ - 1 && p < last) out.push_back({m, p + 1, 0, true});
    // KV-cache gradients of this pass's columns come from the later passes on this
    // stage. The rules above already imply it (for S == 1 the previous line is it).
    if (p < last && S_ > 1) out.push_back({m, p + 1, s, true});
    return out;
  }

  // The micro-stages on other stages that consume x's output, with the message kind
  // (the send kind) that carries it.
  std::vector<std::pair<MicroStage, OpKind>> remote_consumers(const MicroStage& x) const {
    const int m = x.micro, p = x.pass, s = x.stage;
    std::vector<std::pair<MicroStage, OpKind>> out;
    if (S_ == 1) return out;
    if (!x.backward) {
      if (s < S_ - 1) out.push_back({{m, p, s + 1, false}, OpKind::SendActivation});
      if (s == S_ - 1 && p < passes(m) - 1) out.push_back({{m, p + 1, 0, false}, OpKind::SendFeedback});
    } else {
      if (s > 0) out.push_back({{m, p, s - 1, true}, OpKind::SendGrad});
      if (s == 0 && p > 0) out.push_back({{m, p - 1, S_ - 1, true}, OpKind::SendFeedbackGrad});
    }
    return out;
  }

  // The send kind carrying producer's output to consumer (on different stages).
  static OpKind message_kind(const MicroStage& producer, const MicroStage& consumer) {
    if (!producer.backward) return producer.pass == consumer.pass ? OpKind::SendActivation : OpKind::SendFeedback;
    return producer.pass == consumer.pass ? OpKind::SendGrad : OpKind::SendFeedbackGrad;
  }

 private:
  int S_;
  const std::vector<MicroBatchPlan>& plans_;
  std::vector<int> base_;
  int size_ = 0;
};

Op compute_op(const MicroStage& x) {
  return {x.backward ? OpKind::Backward : OpKind::Forward, x.micro, x.pass, x.stage, -1};
}

// Turns per-stage compute orders into op lists: receives right before their
// consumer, sends right after their producer (see the file comment for why this
// cannot deadlock when the orders come from one global order).
Schedule emit(const Graph& g, const std::vector<std::vector<MicroStage>>& order) {
  Schedule schedule(g.stages());
  for (int s = 0; s < g.stages(); ++s) {
    std::vector<Op>& ops = schedule[s];
    for (const MicroStage& x : order[s]) {
      for (const MicroStage& pre : g.prerequisites(x)) {
        if (pre.stage == s) continue;
        const Op send{Graph::message_kind(pre, x), x.micro, pre.pass, pre.stage, s};
        ops.push_back(matching_message(send));
      }
      ops.push_back(compute_op(x));
      for (const auto& [consumer, kind] : g.remote_consumers(x))
        ops.push_back({kind, x.micro, x.pass, s, consumer.stage});
    }
  }
  return schedule;
}

}  // namespace

Schedule gpipe(int S, const std::vector<MicroBatchPlan>& plans, GpipeOrder order) {
  validate_plans(S, plans);
  const Graph g(S, plans);
  const int M = static_cast<int>(plans.size());
  int max_passes = 0;
  for (const MicroBatchPlan& p : plans) max_passes = std::max(max_passes, p.passes());

  // The forward order of one stage; the global order sorts by (that order, stage).
  std::vector<std::pair<int, int>> forward;  // (micro, pass)
  if (order == GpipeOrder::MicroMajor) {
    for (int m = 0; m < M; ++m)
      for (int p = 0; p < plans[m].passes(); ++p) forward.push_back({m, p});
  } else {
    for (int p = 0; p < max_passes; ++p)
      for (int m = 0; m < M; ++m)
        if (p < plans[m].passes()) forward.push_back({m, p});
  }
  std::vector<std::vector<MicroStage>> per_stage(S);
  for (int s = 0; s < S; ++s) {
    for (const auto& [m, p] : forward) per_stage[s].push_back({m, p, s, false});
    for (auto it = forward.rbegin(); it != forward.rend(); ++it) per_stage[s].push_back({it->first, it->second, s, true});
  }
  return emit(g, per_stage);
}

namespace {

enum class Policy { OneFOneB, Ring };

// Event simulation of S stages under the cost model. An idle stage starts the best
// allowed micro-stage whose inputs have arrived; returns each stage's start order.
//
// Admission of micro-batches is first-in-first-out on every stage and capped at
// `cap` in flight. That keeps the simulation from stalling: the oldest unfinished
// micro-batch is admitted (or admissible) everywhere, so its earliest unfinished
// micro-stage is always allowed once its inputs arrive.
std::vector<std::vector<MicroStage>> list_schedule(const Graph& g, int cap, const CostModel& cost, Policy policy) {
  const int S = g.stages(), N = g.size(), M = g.micros();
  const double inf = std::numeric_limits<double>::infinity();

  // Edges with their delays (message time when the two ends are on different stages).
  std::vector<std::vector<std::pair<int, double>>> successors(N);
  std::vector<int> remaining(N, 0);
  std::vector<double> duration(N);
  for (int id = 0; id < N; ++id) {
    const MicroStage x = g.at(id);
    duration[id] = cost.compute_time(g.plan(x.micro), x.backward, x.pass, x.stage);
    for (const MicroStage& pre : g.prerequisites(x)) {
      const double delay =
          pre.stage == x.stage ? 0.0 : cost.message_time(g.plan(x.micro), Graph::message_kind(pre, x), pre.pass);
      successors[g.id(pre)].push_back({id, delay});
      ++remaining[id];
    }
  }

  // Ring priority: longest path from the start of a micro-stage to the end of the
  // step (its "bottom level"), computed in reverse topological order.
  std::vector<double> bottom(N, 0.0);
  if (policy == Policy::Ring) {
    std::vector<int> indegree = remaining, topo;
    for (int id = 0; id < N; ++id)
      if (indegree[id] == 0) topo.push_back(id);
    for (size_t i = 0; i < topo.size(); ++i)
      for (const auto& [next, delay] : successors[topo[i]])
        if (--indegree[next] == 0) topo.push_back(next);
    COCONUT_CHECK(static_cast<int>(topo.size()) == N, "pipeline: dependency graph has a cycle (internal error)");
    for (auto it = topo.rbegin(); it != topo.rend(); ++it) {
      double tail = 0;
      for (const auto& [next, delay] : successors[*it]) tail = std::max(tail, delay + bottom[next]);
      bottom[*it] = duration[*it] + tail;
    }
  }

  std::vector<double> ready_at(N, 0.0);
  std::vector<std::vector<int>> candidates(S);  // prerequisites done, not started
  for (int id = 0; id < N; ++id)
    if (remaining[id] == 0) candidates[g.at(id).stage].push_back(id);
  std::vector<int> running(S, -1), in_flight(S, 0), next_admit(S, 0), current_forward(S, 0);
  std::vector<double> busy_until(S, 0.0);
  std::vector<std::vector<int>> forwards_left(S, std::vector<int>(M));
  for (int s = 0; s < S; ++s)
    for (int m = 0; m < M; ++m) forwards_left[s][m] = g.passes(m);

  auto allowed = [&](int id) {
    const MicroStage x = g.at(id);
    if (x.backward) return true;
    if (policy == Policy::OneFOneB && x.micro != current_forward[x.stage]) return false;
    if (x.pass == 0) return x.micro == next_admit[x.stage] && in_flight[x.stage] < cap;
    return true;
  };
  // True when a should start before b.
  auto better = [&](int a, int b) {
    const MicroStage x = g.at(a), y = g.at(b);
    if (policy == Policy::Ring) {
      if (bottom[a] != bottom[b]) return bottom[a] > bottom[b];
      return std::tuple(x.micro, !x.backward, x.pass) < std::tuple(y.micro, !y.backward, y.pass);
    }
    // 1F1B: backward first (oldest micro-batch, latest pass first), else the forward.
    return std::tuple(!x.backward, x.micro, x.backward ? -x.pass : x.pass) <
           std::tuple(!y.backward, y.micro, y.backward ? -y.pass : y.pass);
  };

  std::vector<std::vector<MicroStage>> order(S);
  double now = 0;
  int completed = 0;
  while (completed < N) {
    for (int s = 0; s < S; ++s) {
      if (running[s] >= 0) continue;
      int best = -1;
      for (int id : candidates[s])
        if (ready_at[id] <= now && allowed(id) && (best < 0 || better(id, best))) best = id;
      if (best < 0) continue;
      std::erase(candidates[s], best);
      const MicroStage x = g.at(best);
      if (!x.backward) {
        if (x.pass == 0) ++in_flight[s], ++next_admit[s];
        if (--forwards_left[s][x.micro] == 0)
          while (current_forward[s] < M && forwards_left[s][current_forward[s]] == 0) ++current_forward[s];
      }
      running[s] = best;
      busy_until[s] = now + duration[best];
      order[s].push_back(x);
    }
    double next = inf;
    for (int s = 0; s < S; ++s) {
      if (running[s] >= 0) {
        next = std::min(next, busy_until[s]);
        continue;
      }
      for (int id : candidates[s])
        if (ready_at[id] > now && allowed(id)) next = std::min(next, ready_at[id]);
    }
    COCONUT_CHECK(next < inf, "pipeline: list scheduler stalled with {} of {} micro-stages done (internal error)",
                  completed, N);
    now = next;
    for (int s = 0; s < S; ++s) {
      if (running[s] < 0 || busy_until[s] > now) continue;
      const int id = running[s];
      running[s] = -1;
      ++completed;
      const MicroStage x = g.at(id);
      if (x.backward && x.pass == 0) --in_flight[s];
      for (const auto& [next_id, delay] : successors[id]) {
        ready_at[next_id] = std::max(ready_at[next_id], busy_until[s] + delay);
        if (--remaining[next_id] == 0) candidates[g.at(next_id).stage].push_back(next_id);
      }
    }
  }
  return order;
}

}  // namespace

Schedule one_f_one_b(int S, const std::vector<MicroBatchPlan>& plans, int max_in_flight, const CostModel& cost) {
  validate_plans(S, plans);
  COCONUT_CHECK(max_in_flight >= 1, "pipeline: max_in_flight must be >= 1, got {}", max_in_flight);
  const Graph g(S, plans);
  return emit(g, list_schedule(g, max_in_flight, cost, Policy::OneFOneB));
}

Schedule ring(int S, const std::vector<MicroBatchPlan>& plans, int max_in_flight, const CostModel& cost) {
  validate_plans(S, plans);
  COCONUT_CHECK(max_in_flight >= 1, "pipeline: max_in_flight must be >= 1, got {}", max_in_flight);
  const Graph g(S, plans);
  return emit(g, list_schedule(g, max_in_flight, cost, Policy::Ring));
}

}  // namespace coconut::parallel
