// Launcher detection, its cross-check against MPI, and the GPU-per-rank rules
// (launch_env.h).
#include "parallel/launch_env.h"

#include <fmt/format.h>

#include <charconv>
#include <cstdlib>
#include <map>

#include "runtime/check.h"

namespace coconut::parallel {

namespace {

// A variable that must be a non-negative integer when set; nullopt when unset or empty.
std::optional<int> env_int(const EnvLookup& getenv, const char* name) {
  const char* text = getenv(name);
  if (text == nullptr || *text == '\0') return std::nullopt;
  int value = 0;
  const char* end = text + std::char_traits<char>::length(text);
  auto [ptr, ec] = std::from_chars(text, end, value);
  COCONUT_CHECK(ec == std::errc() && ptr == end && value >= 0,
                "environment variable {}='{}' is not a non-negative integer", name, text);
  return value;
}

std::string env_string(const EnvLookup& getenv, const char* name) {
  const char* text = getenv(name);
  return text ? std::string(text) : std::string();
}

// A non-negative integer at the start of `text`; advances `text` past it.
int take_int(std::string_view& text, std::string_view whole) {
  int value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  COCONUT_CHECK(ec == std::errc() && value >= 0, "Slurm tasks-per-node list '{}': expected a number at '{}'", whole,
                text);
  text.remove_prefix(static_cast<size_t>(ptr - text.data()));
  return value;
}

}  // namespace

const char* launcher_name(Launcher launcher) {
  switch (launcher) {
    case Launcher::mpirun: return "mpirun";
    case Launcher::srun: return "srun";
    case Launcher::none: break;
  }
  return "no launcher";
}

std::string LaunchEnv::describe() const {
  std::string text = launcher_name(launcher);
  if (!job_id.empty()) text += fmt::format(" (Slurm job {})", job_id);
  if (launcher == Launcher::none) return text + ": a single process";
  text += fmt::format(": rank {} of {}", rank, size);
  if (local_rank >= 0) text += fmt::format(", local rank {}", local_rank);
  if (local_size >= 0) text += fmt::format(" of {} on this node", local_size);
  return text;
}

int slurm_tasks_on_node(std::string_view spec, int node_index) {
  COCONUT_CHECK(node_index >= 0, "Slurm node index {} is negative", node_index);
  // The whole list is parsed before the look-up, so a malformed tail is never ignored.
  const std::string_view whole = spec;
  std::vector<std::pair<int, int>> entries;  // (tasks, number of nodes)
  while (true) {
    const int tasks = take_int(spec, whole);
    int repeat = 1;
    if (spec.starts_with("(x")) {
      spec.remove_prefix(2);
      repeat = take_int(spec, whole);
      COCONUT_CHECK(spec.starts_with(")") && repeat >= 1, "Slurm tasks-per-node list '{}': malformed '(xN)'", whole);
      spec.remove_prefix(1);
    }
    entries.emplace_back(tasks, repeat);
    if (spec.empty()) break;
    COCONUT_CHECK(spec.starts_with(","), "Slurm tasks-per-node list '{}': expected ',' at '{}'", whole, spec);
    spec.remove_prefix(1);
  }
  int first_node = 0;  // index of the first node the current entry covers
  for (auto [tasks, repeat] : entries) {
    if (node_index < first_node + repeat) return tasks;
    first_node += repeat;
  }
  COCONUT_FAIL("Slurm tasks-per-node list '{}' covers {} nodes, not node {}", whole, first_node, node_index);
}

LaunchEnv detect_launch_env(const EnvLookup& lookup) {
  const EnvLookup getenv = lookup ? lookup : EnvLookup([](const char* name) { return std::getenv(name); });
  LaunchEnv env;
  env.job_id = env_string(getenv, "SLURM_JOB_ID");

  // mpirun first: inside a Slurm allocation its processes also inherit the batch
  // shell's SLURM_PROCID=0 and SLURM_NTASKS, which describe the shell, not them.
  if (auto rank = env_int(getenv, "OMPI_COMM_WORLD_RANK")) {
    env.launcher = Launcher::mpirun;
    env.rank = *rank;
    auto size = env_int(getenv, "OMPI_COMM_WORLD_SIZE");
    COCONUT_CHECK(size.has_value(), "OMPI_COMM_WORLD_RANK is set but OMPI_COMM_WORLD_SIZE is not");
    env.size = *size;
    env.local_rank = env_int(getenv, "OMPI_COMM_WORLD_LOCAL_RANK").value_or(-1);
    env.local_size = env_int(getenv, "OMPI_COMM_WORLD_LOCAL_SIZE").value_or(-1);
  } else if (getenv("SLURM_STEP_ID") != nullptr && env_int(getenv, "SLURM_PROCID")) {
    // A task of a job step, i.e. started by srun (the batch script itself is no step).
    env.launcher = Launcher::srun;
    env.rank = *env_int(getenv, "SLURM_PROCID");
    auto size = env_int(getenv, "SLURM_STEP_NUM_TASKS");
    if (!size) size = env_int(getenv, "SLURM_NTASKS");
    COCONUT_CHECK(size.has_value(), "started by srun (SLURM_PROCID is set) but neither SLURM_STEP_NUM_TASKS nor "
                                    "SLURM_NTASKS says how many tasks there are");
    env.size = *size;
    env.local_rank = env_int(getenv, "SLURM_LOCALID").value_or(-1);
    // Tasks on this node: the step's own list, else the job's, else --ntasks-per-node.
    const int node = env_int(getenv, "SLURM_NODEID").value_or(0);
    std::string list = env_string(getenv, "SLURM_STEP_TASKS_PER_NODE");
    if (list.empty()) list = env_string(getenv, "SLURM_TASKS_PER_NODE");
    if (!list.empty())
      env.local_size = slurm_tasks_on_node(list, node);
    else
      env.local_size = env_int(getenv, "SLURM_NTASKS_PER_NODE").value_or(-1);
  } else if (!env.job_id.empty()) {
    const int tasks = env_int(getenv, "SLURM_NTASKS").value_or(1);
    if (tasks > 1)
      env.warning = fmt::format(
          "running inside Slurm job {} of {} tasks, but not started by srun or mpirun: only this one process "
          "runs (start it with `srun` or `mpirun`, see cluster/slurm/train.sbatch)",
          env.job_id, tasks);
  }
  COCONUT_CHECK(env.rank < env.size, "{} says rank {} of {} ranks", launcher_name(env.launcher), env.rank, env.size);
  COCONUT_CHECK(env.local_rank < 0 || env.local_size < 0 || env.local_rank < env.local_size,
                "{} says local rank {} of {} ranks on this node", launcher_name(env.launcher), env.local_rank,
                env.local_size);
  return env;
}

void check_launch_env(const LaunchEnv& env, int mpi_rank, int mpi_size, int mpi_local_size) {
  if (env.launcher == Launcher::none) return;
  const char* name = launcher_name(env.launcher);
  if (mpi_size == 1 && env.size > 1) {
    COCONUT_FAIL(
        "{} started this process as rank {} of {}, but MPI sees a single process (rank 0 of 1): the MPI library "
        "did not get the job's layout from the launcher, so every task would train alone. Under Slurm, launch "
        "with `srun --mpi=pmix` (see `srun --mpi=list`) or run `mpirun` inside the allocation; "
        "cluster/slurm/train.sbatch shows both",
        name, env.rank, env.size);
  }
  COCONUT_CHECK(env.size == mpi_size && env.rank == mpi_rank,
                "{} started this process as rank {} of {}, but MPI_COMM_WORLD says rank {} of {}: the launcher and "
                "the MPI library disagree (was this binary built against another MPI than the one launching it?)",
                name, env.rank, env.size, mpi_rank, mpi_size);
  COCONUT_CHECK(env.local_size < 0 || env.local_size == mpi_local_size,
                "{} puts {} ranks on this node, but MPI finds {} ranks sharing this node's memory "
                "(MPI_COMM_TYPE_SHARED): GPUs would be assigned wrongly",
                name, env.local_size, mpi_local_size);
}

// ---- GPUs ----

int choose_device(int local_rank, int local_size, int device_count) {
  COCONUT_CHECK(device_count > 0, "no CUDA device is visible to local rank {} (CUDA_VISIBLE_DEVICES='{}')",
                local_rank, std::getenv("CUDA_VISIBLE_DEVICES") ? std::getenv("CUDA_VISIBLE_DEVICES") : "");
  COCONUT_CHECK(local_rank >= 0 && local_rank < local_size, "local rank {} outside [0, {})", local_rank, local_size);
  // One visible device per task is how Slurm binds GPUs (--gpus-per-task=1); whether
  // two tasks got the same one is decided by check_distinct_gpus.
  if (device_count == 1) return 0;
  COCONUT_CHECK(local_rank < device_count,
                "local rank {} of {} on this node, but only {} GPUs are visible (CUDA_VISIBLE_DEVICES='{}'): start at "
                "most {} ranks per node (one rank per GPU)",
                local_rank, local_size, device_count,
                std::getenv("CUDA_VISIBLE_DEVICES") ? std::getenv("CUDA_VISIBLE_DEVICES") : "", device_count);
  return local_rank;
}

void check_distinct_gpus(const std::vector<RankGpu>& gpus) {
  std::map<std::pair<std::string, std::string>, const RankGpu*> owner;  // (host, uuid) -> first rank
  for (const RankGpu& g : gpus) {
    auto [it, inserted] = owner.emplace(std::make_pair(g.host, g.uuid), &g);
    if (inserted) continue;
    const RankGpu& first = *it->second;
    COCONUT_FAIL(
        "ranks {} and {} would share one GPU on host {} (device {}, PCI {}, UUID {}): each rank needs its own GPU. "
        "Start at most as many ranks per node as the node has GPUs, and check CUDA_VISIBLE_DEVICES and the "
        "launcher's GPU binding (e.g. srun --gpus-per-task=1)",
        first.rank, g.rank, g.host, g.device, g.pci_bus, g.uuid);
  }
}

}  // namespace coconut::parallel
