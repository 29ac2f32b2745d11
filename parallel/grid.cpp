// Process grid: rank <-> (stage, dp_index) and the pipeline / DP sub-communicators.
#include "parallel/grid.h"

namespace coconut::parallel {

int data_parallel_size(int world_size, int pp) {
  COCONUT_CHECK(pp >= 1, "the number of pipeline stages must be >= 1 (got {})", pp);
  COCONUT_CHECK(world_size % pp == 0,
                "{} ranks cannot form a grid of {} pipeline stages: the number of ranks (mpirun -np / srun -n) "
                "must be a multiple of the pipeline stages",
                world_size, pp);
  return world_size / pp;
}

ProcessGrid::ProcessGrid(Communicator& world, int pp, int dp) : pp_(pp), dp_(dp) {
  COCONUT_CHECK(pp >= 1 && dp >= 1, "process grid needs pp >= 1 and dp >= 1 (got pp={}, dp={})", pp, dp);
  COCONUT_CHECK(world.size() == pp * dp,
                "process grid of pp={} pipeline stages x dp={} data-parallel replicas needs {} ranks, but the job "
                "has {} (mpirun -np / srun -n must equal pp * dp)",
                pp, dp, pp * dp, world.size());
  world_rank_ = world.rank();
  stage_ = world_rank_ % pp;
  dp_index_ = world_rank_ / pp;
  // Both splits are collective: every rank makes them in the same order.
  pipeline_ = world.split(/*color=*/dp_index_, /*key=*/stage_);
  data_parallel_ = world.split(/*color=*/stage_, /*key=*/dp_index_);
  COCONUT_CHECK(pipeline_->size() == pp && pipeline_->rank() == stage_,
                "pipeline communicator of rank {} is rank {} of {}, expected {} of {}", world_rank_,
                pipeline_->rank(), pipeline_->size(), stage_, pp);
  COCONUT_CHECK(data_parallel_->size() == dp && data_parallel_->rank() == dp_index_,
                "data-parallel communicator of rank {} is rank {} of {}, expected {} of {}", world_rank_,
                data_parallel_->rank(), data_parallel_->size(), dp_index_, dp);
}

int ProcessGrid::rank_of(int stage, int dp_index) const {
  COCONUT_CHECK(stage >= 0 && stage < pp_ && dp_index >= 0 && dp_index < dp_,
                "grid position (stage {}, dp {}) outside the {} x {} grid", stage, dp_index, pp_, dp_);
  return dp_index * pp_ + stage;
}

}  // namespace coconut::parallel
