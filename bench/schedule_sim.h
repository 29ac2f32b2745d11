// `coconut bench schedule`: the pipeline simulator's bubble fraction and peak
// activation memory for GPipe, 1F1B and the ring schedule on Coconut-shaped
// micro-batches (a long question pass, one-column latent passes, an answer pass),
// over a grid of stage counts S and micro-batch counts M. No GPU or MPI involved:
// it runs parallel/simulator.h on the same Schedule objects the executor runs.
#pragma once

#include <vector>

namespace coconut::bench {

struct ScheduleBenchOptions {
  std::vector<int> stages = {4, 8, 16};
  std::vector<int> micro_per_stage = {1, 2, 4};  // M = k x S for each k
  int passes = 6;               // pass 0 (question) + latent passes + final pass (answer)
  double question_cost = 30;    // relative cost of pass 0 (columns x sequences)
  double latent_cost = 1;       // each latent pass: one column
  double answer_cost = 10;      // the final pass
  int max_in_flight = 0;        // cap for 1f1b and ring; 0: show both S and 2S
  double message_latency = 0;   // per message, in units of the forward of one unit of pass cost on one stage
};

// Prints the tables to stdout. Returns 0; throws coconut::Error on bad options.
int run_schedule_bench(const ScheduleBenchOptions& options);

}  // namespace coconut::bench
