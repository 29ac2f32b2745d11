// Predicts the timing and memory of a pipeline Schedule under a CostModel by running
// its op lists the way the executor does: each rank in its own order, a receive
// blocks until the peer has issued the matching send and the message has arrived
// (latency + bytes / bandwidth), sends are buffered and take no rank time. It is the
// same Schedule object the executor runs, so a schedule that deadlocks or pairs
// messages wrongly is rejected here with the blocked ops named.
#pragma once

#include <vector>

#include "parallel/schedule.h"

namespace coconut::parallel {

struct SimulationResult {
  double step_time = 0;                    // when the last rank finishes its list
  std::vector<double> busy_time;           // per rank: time spent in Forward/Backward
  std::vector<double> finish_time;         // per rank: end of its last op
  std::vector<double> bubble_fraction;     // per rank: 1 - busy / step_time
  double bubble_fraction_overall = 0;      // 1 - sum(busy) / (ranks x step_time)
  std::vector<double> peak_activation_bytes;  // per rank: max bytes held from F(m,p,s) to B(m,p,s)
  std::vector<int> peak_in_flight;         // per rank: max micro-batches between F(m,0,s) and B(m,0,s)
  long messages = 0;                       // sends (= receives)
  std::vector<std::vector<double>> op_end;  // per rank, per op: when it completes (for traces)
};

// Runs the schedule. Throws coconut::Error on a deadlock (naming each blocked rank's
// op), on a receive or send without its partner, on a compute op that is not on its
// own stage's list, or on a micro-batch / pass outside the plans.
SimulationResult simulate(const Schedule& schedule, const std::vector<MicroBatchPlan>& plans, const CostModel& cost);

// A lower bound on the step time of ANY valid schedule of these plans on S stages:
// a single micro-batch's critical path, and for each stage s the earliest its first
// micro-stage can start (some F(m,0,s) after F(m,0,0..s-1)) + all its work + the
// shortest tail after its last micro-stage (some B(m,0,s) is followed by
// B(m,0,s-1..0)). Message times are included on every chain.
double step_time_lower_bound(int S, const std::vector<MicroBatchPlan>& plans, const CostModel& cost);

}  // namespace coconut::parallel
