// Tests of launcher detection and its cross-check against MPI (parallel/launch_env.h),
// with the launchers' environment variables given as maps (the variable sets mpirun
// and srun export, per their documentation), and of the GPU-per-rank rules.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "parallel/launch_env.h"
#include "runtime/check.h"

namespace coconut::parallel {
namespace {

using Vars = std::map<std::string, std::string>;

LaunchEnv detect(const Vars& vars) {
  return detect_launch_env([&vars](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

// The message of the coconut::Error that fn throws ("" when it throws none).
template <typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// What a task started by `srun -N 2 -n 8` (4 per node) sees on the second node.
Vars srun_task() {
  return {{"SLURM_JOB_ID", "4242"},          {"SLURM_STEP_ID", "0"},    {"SLURM_PROCID", "5"},
          {"SLURM_NTASKS", "8"},             {"SLURM_STEP_NUM_TASKS", "8"}, {"SLURM_LOCALID", "1"},
          {"SLURM_NODEID", "1"},             {"SLURM_STEP_TASKS_PER_NODE", "4(x2)"},
          {"SLURM_TASKS_PER_NODE", "4(x2)"}};
}

TEST(LaunchEnv, NothingSetIsASingleProcess) {
  const LaunchEnv env = detect({});
  EXPECT_EQ(env.launcher, Launcher::none);
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.size, 1);
  EXPECT_EQ(env.local_rank, -1);
  EXPECT_TRUE(env.warning.empty());
  EXPECT_NO_THROW(check_launch_env(env, 0, 1, 1));
}

TEST(LaunchEnv, DetectsMpirun) {
  const LaunchEnv env = detect({{"OMPI_COMM_WORLD_RANK", "3"},
                                {"OMPI_COMM_WORLD_SIZE", "4"},
                                {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  EXPECT_EQ(env.launcher, Launcher::mpirun);
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.size, 4);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_size, 2);
  EXPECT_EQ(env.describe(), "mpirun: rank 3 of 4, local rank 1 of 2 on this node");
  EXPECT_NO_THROW(check_launch_env(env, 3, 4, 2));
}

// mpirun inside an sbatch script: the ranks inherit the batch shell's SLURM_PROCID=0,
// which must not be taken for their rank.
TEST(LaunchEnv, MpirunInsideSlurmAllocationWins) {
  Vars vars = srun_task();
  vars["SLURM_PROCID"] = "0";
  vars["OMPI_COMM_WORLD_RANK"] = "6";
  vars["OMPI_COMM_WORLD_SIZE"] = "8";
  const LaunchEnv env = detect(vars);
  EXPECT_EQ(env.launcher, Launcher::mpirun);
  EXPECT_EQ(env.rank, 6);
  EXPECT_EQ(env.job_id, "4242");
  EXPECT_EQ(env.local_rank, -1);  // mpirun did not say: MPI's split decides
  EXPECT_EQ(env.describe(), "mpirun (Slurm job 4242): rank 6 of 8");
}

TEST(LaunchEnv, DetectsSrunWithTasksPerNodeOfThisNode) {
  const LaunchEnv env = detect(srun_task());
  EXPECT_EQ(env.launcher, Launcher::srun);
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_size, 4);
  EXPECT_EQ(env.job_id, "4242");
  EXPECT_EQ(env.describe(), "srun (Slurm job 4242): rank 5 of 8, local rank 1 of 4 on this node");
  EXPECT_NO_THROW(check_launch_env(env, 5, 8, 4));

  // Without the step's list: the job's list, then --ntasks-per-node.
  Vars vars = srun_task();
  vars.erase("SLURM_STEP_TASKS_PER_NODE");
  vars["SLURM_TASKS_PER_NODE"] = "3,5";
  EXPECT_EQ(detect(vars).local_size, 5);
  vars.erase("SLURM_TASKS_PER_NODE");
  vars["SLURM_NTASKS_PER_NODE"] = "6";
  EXPECT_EQ(detect(vars).local_size, 6);
  vars.erase("SLURM_NTASKS_PER_NODE");
  EXPECT_EQ(detect(vars).local_size, -1);
  // The step's task count wins over the job's (srun -n 2 inside an 8-task job).
  vars["SLURM_STEP_NUM_TASKS"] = "6";
  EXPECT_EQ(detect(vars).size, 6);
}

// The classic silent failure: srun starts 8 tasks, MPI cannot see Slurm, every task
// is rank 0 of 1.
TEST(LaunchEnv, SrunWithoutPmiIsAClearError) {
  const LaunchEnv env = detect(srun_task());
  const std::string message = error_of([&] { check_launch_env(env, 0, 1, 1); });
  EXPECT_NE(message.find("rank 5 of 8"), std::string::npos) << message;
  EXPECT_NE(message.find("MPI sees a single process"), std::string::npos) << message;
  EXPECT_NE(message.find("srun --mpi=pmix"), std::string::npos) << message;
}

TEST(LaunchEnv, OtherDisagreementsAreErrors) {
  const LaunchEnv env = detect(srun_task());
  std::string message = error_of([&] { check_launch_env(env, 4, 8, 4); });
  EXPECT_NE(message.find("MPI_COMM_WORLD says rank 4 of 8"), std::string::npos) << message;
  message = error_of([&] { check_launch_env(env, 5, 16, 4); });
  EXPECT_NE(message.find("rank 5 of 16"), std::string::npos) << message;
  message = error_of([&] { check_launch_env(env, 5, 8, 8); });
  EXPECT_NE(message.find("puts 4 ranks on this node, but MPI finds 8"), std::string::npos) << message;
}

// The batch script itself (no step): not srun, but worth a warning when the job asked
// for several tasks, because only this one process will run.
TEST(LaunchEnv, BatchShellWithoutSrunWarns) {
  const LaunchEnv env = detect({{"SLURM_JOB_ID", "7"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}});
  EXPECT_EQ(env.launcher, Launcher::none);
  EXPECT_NE(env.warning.find("not started by srun or mpirun"), std::string::npos) << env.warning;
  EXPECT_NO_THROW(check_launch_env(env, 0, 1, 1));
  EXPECT_TRUE(detect({{"SLURM_JOB_ID", "7"}, {"SLURM_NTASKS", "1"}}).warning.empty());
}

TEST(LaunchEnv, MalformedVariablesNameTheVariable) {
  std::string message = error_of([] { detect({{"OMPI_COMM_WORLD_RANK", "x1"}, {"OMPI_COMM_WORLD_SIZE", "2"}}); });
  EXPECT_NE(message.find("OMPI_COMM_WORLD_RANK='x1'"), std::string::npos) << message;
  message = error_of([] { detect({{"OMPI_COMM_WORLD_RANK", "1"}}); });
  EXPECT_NE(message.find("OMPI_COMM_WORLD_SIZE is not"), std::string::npos) << message;
  message = error_of([] { detect({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "2"}}); });
  EXPECT_NE(message.find("rank 2 of 2"), std::string::npos) << message;
  Vars vars = srun_task();
  vars["SLURM_STEP_TASKS_PER_NODE"] = "4(x2";
  message = error_of([&] { detect(vars); });
  EXPECT_NE(message.find("'4(x2'"), std::string::npos) << message;
}

TEST(LaunchEnv, SlurmTasksPerNodeList) {
  EXPECT_EQ(slurm_tasks_on_node("8", 0), 8);
  EXPECT_EQ(slurm_tasks_on_node("2(x3),1", 0), 2);
  EXPECT_EQ(slurm_tasks_on_node("2(x3),1", 2), 2);
  EXPECT_EQ(slurm_tasks_on_node("2(x3),1", 3), 1);
  EXPECT_EQ(slurm_tasks_on_node("1,2(x2),3", 2), 2);
  EXPECT_EQ(slurm_tasks_on_node("1,2(x2),3", 3), 3);
  EXPECT_THROW(slurm_tasks_on_node("2(x3),1", 4), Error);
  EXPECT_THROW(slurm_tasks_on_node("", 0), Error);
  EXPECT_THROW(slurm_tasks_on_node("2(3)", 0), Error);
  EXPECT_THROW(slurm_tasks_on_node("2;1", 1), Error);
}

TEST(GpuAssignment, ChooseDevice) {
  EXPECT_EQ(choose_device(0, 8, 8), 0);
  EXPECT_EQ(choose_device(5, 8, 8), 5);
  EXPECT_EQ(choose_device(3, 4, 1), 0);  // one GPU bound per task by the launcher
  const std::string message = error_of([] { choose_device(2, 4, 2); });
  EXPECT_NE(message.find("local rank 2 of 4 on this node, but only 2 GPUs are visible"), std::string::npos)
      << message;
  EXPECT_NE(error_of([] { choose_device(0, 1, 0); }).find("no CUDA device"), std::string::npos);
}

TEST(GpuAssignment, TwoRanksOnOneGpuOfOneHostIsAClearError) {
  std::vector<RankGpu> gpus = {{0, "node1", "GPU-aaa", "0000:01:00.0", 0},
                               {1, "node1", "GPU-bbb", "0000:02:00.0", 1},
                               {2, "node2", "GPU-aaa", "0000:01:00.0", 0}};  // same UUID text, other host
  EXPECT_NO_THROW(check_distinct_gpus(gpus));
  gpus.push_back({3, "node2", "GPU-aaa", "0000:01:00.0", 0});
  const std::string message = error_of([&] { check_distinct_gpus(gpus); });
  EXPECT_NE(message.find("ranks 2 and 3 would share one GPU on host node2"), std::string::npos) << message;
  EXPECT_NE(message.find("GPU-aaa"), std::string::npos) << message;
}

}  // namespace
}  // namespace coconut::parallel
