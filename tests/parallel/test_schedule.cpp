// Tests of the pipeline schedulers and the simulator (parallel/schedule.h, simulator.h).
//
// The checker below restates the dependency rules of DESIGN.md section 4 on its own
// (it does not use the library's dependency code) and runs a schedule's op lists the
// way ranks would: a receive blocks until its peer has issued the matching send,
// sends are buffered. A schedule passes when every rank finishes (no deadlock), every
// F and B runs exactly once per (micro-batch, pass, stage) on its own stage, every
// micro-stage's inputs are present when it runs (computed locally before it, or
// received from the rank that computed them), sends and receives pair one-to-one,
// exactly the needed messages are sent, and the in-flight cap holds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <string>
#include <tuple>

#include "parallel/schedule.h"
#include "parallel/simulator.h"
#include "runtime/check.h"

namespace cp = coconut::parallel;
using cp::Op;
using cp::OpKind;

namespace {

// (backward?, micro, pass, stage)
using Work = std::tuple<bool, int, int, int>;

struct CheckResult {
  int peak_in_flight = 0;  // over all ranks
  long messages = 0;
};

// Returns the prerequisites of a micro-stage, stated from the rules directly.
std::vector<Work> needs(const Work& w, int S, const std::vector<cp::MicroBatchPlan>& plans) {
  const auto [backward, m, p, s] = w;
  const int P = plans[m].passes();
  std::vector<Work> out;
  if (!backward) {
    if (s > 0) out.push_back({false, m, p, s - 1});
    if (s == 0 && p > 0) out.push_back({false, m, p - 1, S - 1});
  } else {
    out.push_back({false, m, p, s});
    if (s < S - 1) out.push_back({true, m, p, s + 1});
    if (s == S - 1 && p < P - 1) out.push_back({true, m, p + 1, 0});
    for (int later = p + 1; later < P; ++later) out.push_back({true, m, later, s});
  }
  return out;
}

CheckResult check_schedule(const cp::Schedule& schedule, int S, const std::vector<cp::MicroBatchPlan>& plans, int cap,
                           const std::string& what) {
  const int M = static_cast<int>(plans.size());
  CheckResult result;
  EXPECT_EQ(static_cast<int>(schedule.size()), S) << what;
  if (static_cast<int>(schedule.size()) != S) return result;

  std::set<Work> done;                            // all computed micro-stages
  std::vector<std::set<Work>> available(S);       // outputs present on each rank
  std::map<std::tuple<std::string, int, int, int, int>, int> posted;  // (channel, m, p, from, to) -> sends - recvs
  std::vector<int> in_flight(S, 0);
  std::vector<size_t> next(S, 0);
  long sends = 0;

  // The message a send or receive carries: its channel, the producer and the direction.
  struct Carry {
    std::string channel;
    Work producer;
    int from, to;
  };
  auto carry = [&](const Op& op, int r) -> Carry {
    const bool send = op.kind == OpKind::SendActivation || op.kind == OpKind::SendGrad ||
                      op.kind == OpKind::SendFeedback || op.kind == OpKind::SendFeedbackGrad;
    const int from = send ? r : op.peer, to = send ? op.peer : r;
    switch (op.kind) {
      case OpKind::SendActivation: case OpKind::RecvActivation:
        EXPECT_EQ(to, from + 1) << what << " activation " << from << "->" << to;
        return {"act", {false, op.micro, op.pass, from}, from, to};
      case OpKind::SendGrad: case OpKind::RecvGrad:
        EXPECT_EQ(to, from - 1) << what << " grad " << from << "->" << to;
        return {"grad", {true, op.micro, op.pass, from}, from, to};
      case OpKind::SendFeedback: case OpKind::RecvFeedback:
        EXPECT_TRUE(from == S - 1 && to == 0 && op.pass + 1 < plans[op.micro].passes()) << what << " feedback";
        return {"fb", {false, op.micro, op.pass, from}, from, to};
      default:
        EXPECT_TRUE(from == 0 && to == S - 1 && op.pass > 0) << what << " feedback grad";
        return {"fbgrad", {true, op.micro, op.pass, from}, from, to};
    }
  };

  for (;;) {
    bool progress = false, finished = true;
    for (int r = 0; r < S; ++r) {
      while (next[r] < schedule[r].size()) {
        const Op& op = schedule[r][next[r]];
        if (op.micro < 0 || op.micro >= M || op.pass < 0 || op.pass >= plans[op.micro].passes()) {
          ADD_FAILURE() << what << ": op out of range on rank " << r;
          return result;
        }
        if (op.kind == OpKind::Forward || op.kind == OpKind::Backward) {
          const Work w{op.kind == OpKind::Backward, op.micro, op.pass, op.stage};
          EXPECT_EQ(op.stage, r) << what << ": compute on the wrong rank";
          EXPECT_TRUE(done.insert(w).second) << what << ": " << cp::to_string(op) << " runs twice";
          for (const Work& need : needs(w, S, plans)) {
            const bool here = std::get<3>(need) == r ? done.count(need) > 0 : available[r].count(need) > 0;
            EXPECT_TRUE(here) << what << ": " << cp::to_string(op) << " runs before its input (backward "
                              << std::get<0>(need) << ", m " << std::get<1>(need) << ", p " << std::get<2>(need)
                              << ", s " << std::get<3>(need) << ") is on rank " << r;
          }
          if (op.pass == 0) in_flight[r] += op.kind == OpKind::Forward ? 1 : -1;
          result.peak_in_flight = std::max(result.peak_in_flight, in_flight[r]);
          EXPECT_LE(in_flight[r], cap) << what << ": rank " << r << " exceeds the in-flight cap";
        } else {
          const Carry c = carry(op, r);
          const auto key = std::tuple(c.channel, op.micro, op.pass, c.from, c.to);
          if (c.from == r) {  // send: the data must exist here
            EXPECT_TRUE(done.count(c.producer)) << what << ": " << cp::to_string(op) << " before its producer ran";
            EXPECT_EQ(++posted[key], 1) << what << ": " << cp::to_string(op) << " sent twice";
            ++sends;
          } else {  // receive: blocks until the matching send was issued
            auto it = posted.find(key);
            if (it == posted.end() || it->second == 0) break;
            --it->second;
            EXPECT_TRUE(available[r].insert(c.producer).second) << what << ": " << cp::to_string(op) << " twice";
          }
        }
        ++next[r];
        progress = true;
      }
      if (next[r] < schedule[r].size()) finished = false;
    }
    if (finished) break;
    if (!progress) {
      ADD_FAILURE() << what << ": deadlock";
      return result;
    }
  }
  for (const auto& [key, count] : posted) EXPECT_EQ(count, 0) << what << ": a send is never received";

  // Every F and B exactly once (done.insert caught repeats; count the total), and
  // exactly the messages the dependencies need.
  long expected_work = 0, expected_messages = 0;
  for (const cp::MicroBatchPlan& plan : plans) {
    expected_work += 2L * plan.passes() * S;
    if (S > 1) expected_messages += 2L * plan.passes() * (S - 1) + 2L * (plan.passes() - 1);
  }
  EXPECT_EQ(static_cast<long>(done.size()), expected_work) << what;
  EXPECT_EQ(sends, expected_messages) << what;
  result.messages = sends;
  return result;
}

std::vector<cp::MicroBatchPlan> random_plans(std::mt19937& rng, int M, int max_passes) {
  std::uniform_int_distribution<int> passes(1, max_passes);
  std::uniform_real_distribution<double> cost(0.1, 10.0);
  std::vector<cp::MicroBatchPlan> plans(M);
  for (cp::MicroBatchPlan& plan : plans) {
    const int P = passes(rng);
    for (int p = 0; p < P; ++p) {
      plan.pass_cost.push_back(cost(rng));
      plan.pass_activation_bytes.push_back(std::round(cost(rng) * 100));
    }
  }
  return plans;
}

// The Coconut shape: pass 0 carries the question, latent passes one column, the final pass the answer.
std::vector<cp::MicroBatchPlan> coconut_plans(int M, int passes = 6) {
  cp::MicroBatchPlan plan;
  for (int p = 0; p < passes; ++p) {
    const double cost = p == 0 ? 30 : p == passes - 1 ? 10 : 1;
    plan.pass_cost.push_back(cost);
    plan.pass_activation_bytes.push_back(cost);
  }
  return std::vector<cp::MicroBatchPlan>(M, plan);
}

cp::MicroBatchPlan uniform_plan(int passes, double cost, double bytes) {
  return {std::vector<double>(passes, cost), std::vector<double>(passes, bytes)};
}

}  // namespace

TEST(Schedule, RandomSchedulesAreCompleteOrderedPairedAndDeadlockFree) {
  std::mt19937 rng(20240611);
  std::uniform_int_distribution<int> stages(1, 8), micros(1, 16);
  for (int trial = 0; trial < 120; ++trial) {
    const int S = stages(rng), M = micros(rng);
    const auto plans = random_plans(rng, M, 8);
    const int cap = std::uniform_int_distribution<int>(1, M + 1)(rng);
    cp::CostModel cost;
    cost.message_latency = std::uniform_real_distribution<double>(0, 2)(rng);
    if (trial % 2) {  // unequal stages and size-dependent message times
      for (int s = 0; s < S; ++s) cost.stage_scale.push_back(std::uniform_real_distribution<double>(0.5, 2)(rng));
      cost.message_bytes_per_cost = 100;
      cost.bandwidth = 1000;
    }
    const std::string tag = "S=" + std::to_string(S) + " M=" + std::to_string(M) + " cap=" + std::to_string(cap);

    struct Case {
      std::string name;
      cp::Schedule schedule;
      int cap;
    };
    const std::vector<Case> cases = {
        {"gpipe " + tag, cp::gpipe(S, plans), M},
        {"gpipe-pass " + tag, cp::gpipe(S, plans, cp::GpipeOrder::PassMajor), M},
        {"1f1b " + tag, cp::one_f_one_b(S, plans, cap, cost), cap},
        {"ring " + tag, cp::ring(S, plans, cap, cost), cap},
    };
    const double bound = cp::step_time_lower_bound(S, plans, cost);
    for (const Case& c : cases) {
      const CheckResult checked = check_schedule(c.schedule, S, plans, c.cap, c.name);
      if (S == 1) {
        EXPECT_EQ(checked.messages, 0) << c.name;
      }
      // The simulator runs the same lists: it must agree and never beat the bound.
      const cp::SimulationResult sim = cp::simulate(c.schedule, plans, cost);
      EXPECT_EQ(sim.messages, checked.messages) << c.name;
      EXPECT_EQ(*std::max_element(sim.peak_in_flight.begin(), sim.peak_in_flight.end()), checked.peak_in_flight)
          << c.name;
      EXPECT_GE(sim.step_time, bound * (1 - 1e-12)) << c.name;
      if (HasFailure()) return;  // one broken schedule is enough to read
    }
  }
}

TEST(Schedule, SingleStageHasNoMessagesAndNoIdleTime) {
  const auto plans = coconut_plans(3);
  for (const cp::Schedule& s : {cp::gpipe(1, plans), cp::one_f_one_b(1, plans, 2), cp::ring(1, plans, 2)}) {
    ASSERT_EQ(s.size(), 1u);
    EXPECT_EQ(s[0].size(), 3u * 6 * 2);
    const cp::SimulationResult sim = cp::simulate(s, plans, {});
    EXPECT_EQ(sim.messages, 0);
    EXPECT_DOUBLE_EQ(sim.step_time, 3 * 44 * 3.0);  // 3 micro-batches x (30 + 4 x 1 + 10) x (1 fwd + 2 bwd)
    EXPECT_NEAR(sim.bubble_fraction_overall, 0.0, 1e-12);
  }
}

TEST(Schedule, MessagesNameProducerAndPeer) {
  const std::vector<cp::MicroBatchPlan> plans = {uniform_plan(2, 1, 1)};
  const cp::Schedule s = cp::gpipe(3, plans);
  // Stage 0 first runs F(0,0,0) and sends it to stage 1; its second forward waits for the feedback of pass 0.
  ASSERT_GE(s[0].size(), 4u);
  EXPECT_EQ(s[0][0], (Op{OpKind::Forward, 0, 0, 0, -1}));
  EXPECT_EQ(s[0][1], (Op{OpKind::SendActivation, 0, 0, 0, 1}));
  EXPECT_EQ(s[0][2], (Op{OpKind::RecvFeedback, 0, 0, 0, 2}));
  EXPECT_EQ(s[0][3], (Op{OpKind::Forward, 0, 1, 0, -1}));
  EXPECT_EQ(cp::matching_message(s[0][2]), (Op{OpKind::SendFeedback, 0, 0, 2, 0}));
  EXPECT_EQ(cp::to_string(s[0][2]), "RecvFeedback(m=0,p=0) 2->0");
  EXPECT_EQ(cp::to_string(s[0][3]), "F(m=0,p=1,s=0)");
}

// Hand-computed timelines (forward 1 per unit cost, backward 2x).
TEST(Simulator, TwoStagesOnePass) {
  const std::vector<cp::MicroBatchPlan> plans = {uniform_plan(1, 1, 5)};
  const cp::Schedule s = cp::gpipe(2, plans);
  // F0 [0,1] F1 [1,2] B1 [2,4] B0 [4,6]
  cp::SimulationResult sim = cp::simulate(s, plans, {});
  EXPECT_DOUBLE_EQ(sim.step_time, 6);
  EXPECT_DOUBLE_EQ(sim.busy_time[0], 3);
  EXPECT_DOUBLE_EQ(sim.busy_time[1], 3);
  EXPECT_DOUBLE_EQ(sim.finish_time[1], 4);
  EXPECT_DOUBLE_EQ(sim.bubble_fraction[0], 0.5);
  EXPECT_DOUBLE_EQ(sim.bubble_fraction_overall, 0.5);
  EXPECT_DOUBLE_EQ(sim.peak_activation_bytes[0], 5);
  EXPECT_EQ(sim.messages, 2);
  // Latency 0.5 and 8 bytes per cost unit over 16 bytes/unit time: each message takes 1.
  cp::CostModel cost;
  cost.message_latency = 0.5;
  cost.message_bytes_per_cost = 8;
  cost.bandwidth = 16;
  sim = cp::simulate(s, plans, cost);
  EXPECT_DOUBLE_EQ(sim.step_time, 8);  // F0 [0,1] F1 [2,3] B1 [3,5] B0 [6,8]
}

TEST(Simulator, FeedbackAroundTheRing) {
  const std::vector<cp::MicroBatchPlan> plans = {{{2, 1}, {10, 1}}};
  // F(0,0,0) [0,2] F(0,0,1) [2,4] F(0,1,0) [4,5] F(0,1,1) [5,6]
  // B(0,1,1) [6,8] B(0,1,0) [8,10] B(0,0,1) [10,14] B(0,0,0) [14,18]
  for (const cp::Schedule& s : {cp::gpipe(2, plans), cp::one_f_one_b(2, plans, 1), cp::ring(2, plans, 1)}) {
    const cp::SimulationResult sim = cp::simulate(s, plans, {});
    EXPECT_DOUBLE_EQ(sim.step_time, 18);
    EXPECT_DOUBLE_EQ(sim.busy_time[0], 9);
    EXPECT_DOUBLE_EQ(sim.busy_time[1], 9);
    EXPECT_DOUBLE_EQ(sim.peak_activation_bytes[0], 11);
    EXPECT_DOUBLE_EQ(sim.peak_activation_bytes[1], 11);
    EXPECT_EQ(sim.peak_in_flight[0], 1);
    EXPECT_EQ(sim.messages, 6);  // 2 activations, 2 gradients, 1 feedback, 1 feedback gradient
  }
}

// With one pass of equal cost, GPipe and 1F1B have the known bubble (S-1)/(M+S-1)
// (Huang et al. 2019; Narayanan et al. 2021), and 1F1B holds at most S micro-batches.
TEST(Simulator, ClassicBubbleWithOnePass) {
  for (int S : {2, 4, 8}) {
    for (int M : {1, 4, 16}) {
      const std::vector<cp::MicroBatchPlan> plans(M, uniform_plan(1, 1, 1));
      const double expected = double(S - 1) / (M + S - 1);
      const cp::SimulationResult g = cp::simulate(cp::gpipe(S, plans), plans, {});
      EXPECT_NEAR(g.bubble_fraction_overall, expected, 1e-12) << "gpipe S=" << S << " M=" << M;
      EXPECT_EQ(g.peak_in_flight[0], M);
      const cp::SimulationResult f = cp::simulate(cp::one_f_one_b(S, plans, S), plans, {});
      EXPECT_NEAR(f.bubble_fraction_overall, expected, 1e-12) << "1f1b S=" << S << " M=" << M;
      EXPECT_LE(f.peak_in_flight[0], std::min(S, M));
    }
  }
}

// The Coconut shape: ring fills the ring trips of the latent passes with other
// micro-batches' passes, so at M = 2S it beats both micro-batch-unit schedules under
// the same cap, and with cap 2S its bubble is at most half of GPipe's.
TEST(Simulator, RingBeatsGpipeOnLatentPasses) {
  for (int S : {4, 8}) {
    const auto plans = coconut_plans(2 * S);
    auto bubble = [&](const cp::Schedule& s) { return cp::simulate(s, plans, {}).bubble_fraction_overall; };
    const double gpipe = bubble(cp::gpipe(S, plans));
    EXPECT_LT(bubble(cp::ring(S, plans, S)), bubble(cp::one_f_one_b(S, plans, S))) << "S=" << S;
    EXPECT_LT(bubble(cp::ring(S, plans, S)), gpipe) << "S=" << S;
    EXPECT_LE(bubble(cp::ring(S, plans, 2 * S)), 0.5 * gpipe) << "S=" << S;
    const cp::SimulationResult ring = cp::simulate(cp::ring(S, plans, S), plans, {});
    EXPECT_EQ(*std::max_element(ring.peak_in_flight.begin(), ring.peak_in_flight.end()), S);
  }
}

TEST(Simulator, DetectsDeadlockAndUnpairedMessages) {
  const std::vector<cp::MicroBatchPlan> plans = {uniform_plan(1, 1, 1)};
  // Each rank first waits for the other.
  const cp::Schedule deadlock = {
      {{OpKind::RecvGrad, 0, 0, 0, 1}, {OpKind::Forward, 0, 0, 0, -1}, {OpKind::SendActivation, 0, 0, 0, 1},
       {OpKind::Backward, 0, 0, 0, -1}},
      {{OpKind::RecvActivation, 0, 0, 1, 0}, {OpKind::Forward, 0, 0, 1, -1}, {OpKind::Backward, 0, 0, 1, -1},
       {OpKind::SendGrad, 0, 0, 1, 0}}};
  try {
    cp::simulate(deadlock, plans, {});
    FAIL() << "no deadlock reported";
  } catch (const coconut::Error& e) {
    EXPECT_NE(std::string(e.what()).find("deadlock"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rank 1 op #0 RecvActivation"), std::string::npos) << e.what();
  }
  cp::Schedule unpaired = cp::gpipe(2, plans);
  std::erase_if(unpaired[1], [](const Op& op) { return op.kind == OpKind::RecvActivation; });
  EXPECT_THROW(cp::simulate(unpaired, plans, {}), coconut::Error);
  cp::Schedule wrong_way = cp::gpipe(2, plans);
  wrong_way[0][1].peer = 0;  // a send to itself
  EXPECT_THROW(cp::simulate(wrong_way, plans, {}), coconut::Error);
}

TEST(Schedule, RejectsBadPlans) {
  auto message = [](auto&& call) {
    try {
      call();
    } catch (const coconut::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const cp::MicroBatchPlan good = uniform_plan(2, 1, 1);
  EXPECT_NE(message([&] { cp::gpipe(2, {good, {}}); }).find("micro-batch 1 has no pass"), std::string::npos);
  EXPECT_NE(message([&] { cp::ring(2, {{{1, 2}, {1}}}, 1); }).find("pass_activation_bytes"), std::string::npos);
  EXPECT_NE(message([&] { cp::ring(2, {{{1, -2}, {1, 1}}}, 1); }).find("micro-batch 0 pass 1"), std::string::npos);
  EXPECT_NE(message([&] { cp::ring(2, {good}, 0); }).find("max_in_flight"), std::string::npos);
  EXPECT_NE(message([&] { cp::one_f_one_b(0, {good}, 1); }).find("stages"), std::string::npos);
  EXPECT_NE(message([&] { cp::gpipe(2, {}); }).find("no micro-batches"), std::string::npos);
}
