// The PP x DP process grid (DESIGN.md section 5): which pipeline stage and which
// data-parallel replica each rank is, and the two families of sub-communicators.
//
// Layout: world rank = dp_index * pp + stage. A pipeline (all stages of one replica)
// is a run of pp consecutive ranks, so with the usual by-slot placement it sits on one
// node, where the frequent stage-to-stage activation traffic is cheapest; the DP
// groups (one stage across replicas) stride across ranks and carry the once-per-step
// gradient reduce-scatter and weight all-gather.
//
//   pp = 2, dp = 2:   rank 0 = (stage 0, dp 0)   rank 1 = (stage 1, dp 0)
//                     rank 2 = (stage 0, dp 1)   rank 3 = (stage 1, dp 1)
//   pipelines: {0, 1}, {2, 3}        DP groups: {0, 2}, {1, 3}
//
// Inside pipeline() the rank is the stage; inside data_parallel() the rank is dp_index.
#pragma once

#include <memory>

#include "parallel/comm.h"

namespace coconut::parallel {

// dp for a job of world_size ranks split into pp stages; a clear error when pp does
// not divide the world size.
int data_parallel_size(int world_size, int pp);

class ProcessGrid {
 public:
  // Collective over world. Throws (on every rank alike, before any communication)
  // unless pp >= 1, dp >= 1 and world.size() == pp * dp.
  ProcessGrid(Communicator& world, int pp, int dp);

  int pp() const { return pp_; }
  int dp() const { return dp_; }
  int stage() const { return stage_; }
  int dp_index() const { return dp_index_; }
  int world_rank() const { return world_rank_; }
  // The world rank holding (stage, dp_index).
  int rank_of(int stage, int dp_index) const;
  bool first_stage() const { return stage_ == 0; }
  bool last_stage() const { return stage_ == pp_ - 1; }

  // The pp ranks of this rank's replica, ordered by stage.
  Communicator& pipeline() { return *pipeline_; }
  // The dp ranks holding this rank's stage, ordered by dp_index.
  Communicator& data_parallel() { return *data_parallel_; }

 private:
  int pp_, dp_, stage_, dp_index_, world_rank_;
  std::unique_ptr<Communicator> pipeline_, data_parallel_;
};

}  // namespace coconut::parallel
