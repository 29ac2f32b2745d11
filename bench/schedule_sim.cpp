// Pipeline schedule simulator benchmark (see schedule_sim.h).
#include "bench/schedule_sim.h"

#include <fmt/format.h>

#include <algorithm>
#include <string>

#include "parallel/schedule.h"
#include "parallel/simulator.h"
#include "runtime/check.h"

namespace coconut::bench {

namespace {

namespace pp = coconut::parallel;

// One column of the tables: a schedule builder for (S, plans).
struct Column {
  std::string name;
  int cap_factor;  // in-flight cap = cap_factor x S; 0: a fixed cap (or none, for gpipe)
  int fixed_cap;
  enum { Gpipe, GpipePass, OneFOneB, Ring } kind;
};

struct Cell {
  double bubble, peak_bytes;
};

Cell run(const Column& c, int S, const std::vector<pp::MicroBatchPlan>& plans, const pp::CostModel& cost) {
  const int cap = c.cap_factor > 0 ? c.cap_factor * S : c.fixed_cap;
  pp::Schedule schedule;
  switch (c.kind) {
    case Column::Gpipe: schedule = pp::gpipe(S, plans); break;
    case Column::GpipePass: schedule = pp::gpipe(S, plans, pp::GpipeOrder::PassMajor); break;
    case Column::OneFOneB: schedule = pp::one_f_one_b(S, plans, cap, cost); break;
    case Column::Ring: schedule = pp::ring(S, plans, cap, cost); break;
  }
  const pp::SimulationResult r = pp::simulate(schedule, plans, cost);
  return {r.bubble_fraction_overall, *std::max_element(r.peak_activation_bytes.begin(), r.peak_activation_bytes.end())};
}

}  // namespace

int run_schedule_bench(const ScheduleBenchOptions& o) {
  COCONUT_CHECK(o.passes >= 1 && o.passes <= 1000, "bench schedule: passes must be in [1, 1000], got {}", o.passes);
  COCONUT_CHECK(o.question_cost >= 0 && o.latent_cost >= 0 && o.answer_cost >= 0 && o.message_latency >= 0,
                "bench schedule: pass costs and message latency must be >= 0");
  COCONUT_CHECK(o.max_in_flight >= 0, "bench schedule: max_in_flight must be >= 0, got {}", o.max_in_flight);
  COCONUT_CHECK(!o.stages.empty() && !o.micro_per_stage.empty(), "bench schedule: no stage or micro-batch counts");
  for (int S : o.stages) COCONUT_CHECK(S >= 1 && S <= 1024, "bench schedule: stage count {} not in [1, 1024]", S);
  for (int k : o.micro_per_stage)
    COCONUT_CHECK(k >= 1 && k <= 64, "bench schedule: micro-batches per stage {} not in [1, 64]", k);

  // Activation bytes proportional to cost: memory is reported in units of one cost unit's activations.
  pp::MicroBatchPlan plan;
  for (int p = 0; p < o.passes; ++p) {
    const double cost = p == 0 ? o.question_cost : p == o.passes - 1 ? o.answer_cost : o.latent_cost;
    plan.pass_cost.push_back(cost);
    plan.pass_activation_bytes.push_back(cost);
  }
  pp::CostModel cost;
  cost.message_latency = o.message_latency;

  std::vector<Column> columns = {{"gpipe", 0, 0, Column::Gpipe}, {"gpipe-pass", 0, 0, Column::GpipePass}};
  if (o.max_in_flight == 0) {
    columns.push_back({"1f1b cap S", 1, 0, Column::OneFOneB});
    columns.push_back({"ring cap S", 1, 0, Column::Ring});
    columns.push_back({"1f1b cap 2S", 2, 0, Column::OneFOneB});
    columns.push_back({"ring cap 2S", 2, 0, Column::Ring});
  } else {
    columns.push_back({fmt::format("1f1b cap {}", o.max_in_flight), 0, o.max_in_flight, Column::OneFOneB});
    columns.push_back({fmt::format("ring cap {}", o.max_in_flight), 0, o.max_in_flight, Column::Ring});
  }

  std::string costs;
  for (int p = 0; p < o.passes; ++p) costs += fmt::format("{}{:g}", p ? ", " : "", plan.pass_cost[p]);
  fmt::print("Pipeline schedule simulator: {} passes per micro-batch, relative costs [{}]\n", o.passes, costs);
  fmt::print("backward = {:g} x forward, message latency {:g} (1 = forward of one cost unit on one stage)\n",
             cost.backward_factor, cost.message_latency);
  fmt::print("bubble = 1 - busy / (ranks x step time); bound = bubble of the step-time lower bound of any schedule;\n");
  fmt::print("cap = micro-batches in flight per stage (gpipe holds all M); peak = activation memory of the fullest\n");
  fmt::print("rank in units of one cost unit's activations\n\n");

  std::string header = fmt::format("{:>4} {:>5} {:>7}", "S", "M", "bound");
  for (const Column& c : columns) header += fmt::format(" {:>12}", c.name);
  fmt::print("bubble fraction\n{}\n", header);
  std::vector<std::string> memory_rows, goal_rows;
  for (int S : o.stages) {
    for (int k : o.micro_per_stage) {
      const int M = k * S;
      const std::vector<pp::MicroBatchPlan> plans(M, plan);
      double work = 0;
      for (int s = 0; s < S; ++s)
        for (int p = 0; p < o.passes; ++p)
          work += M * (cost.compute_time(plan, false, p, s) + cost.compute_time(plan, true, p, s));
      const double bound = 1 - work / (S * pp::step_time_lower_bound(S, plans, cost));
      std::string row = fmt::format("{:>4} {:>5} {:>7.3f}", S, M, bound);
      std::string memory = fmt::format("{:>4} {:>5} {:>7}", S, M, "");
      double gpipe_bubble = 0;
      std::string ratios;
      for (const Column& c : columns) {
        const Cell cell = run(c, S, plans, cost);
        row += fmt::format(" {:>12.3f}", cell.bubble);
        memory += fmt::format(" {:>12.0f}", cell.peak_bytes);
        if (c.kind == Column::Gpipe) gpipe_bubble = cell.bubble;
        if (c.kind == Column::Ring && k == 2)
          ratios += fmt::format("  {}: {:.3f} = {:.2f} x gpipe ({}){}", c.name, cell.bubble, cell.bubble / gpipe_bubble,
                                cell.bubble <= 0.5 * gpipe_bubble ? "met" : "NOT met", "");
      }
      fmt::print("{}\n", row);
      memory_rows.push_back(memory);
      if (!ratios.empty()) goal_rows.push_back(fmt::format("S={:<3} M={:<4} gpipe {:.3f};{}", S, M, gpipe_bubble, ratios));
    }
  }
  fmt::print("\npeak activation memory\n{}\n", header);
  for (const std::string& r : memory_rows) fmt::print("{}\n", r);
  if (!goal_rows.empty()) {
    fmt::print("\ngoal: ring's bubble at M = 2S at most half of gpipe's\n");
    for (const std::string& r : goal_rows) fmt::print("{}\n", r);
  }
  return 0;
}

}  // namespace coconut::bench
