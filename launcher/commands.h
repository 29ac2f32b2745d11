// Subcommands of the `coconut` command and the small argument helpers they share.
#pragma once

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "curriculum/dataset.h"

namespace coconut::parallel {
class Communicator;
}

namespace coconut::launcher {

// A usage or configuration error: the command prints it and exits with code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

int cmd_bench(const std::vector<std::string>& args);
int cmd_train(const std::vector<std::string>& args);
int cmd_data(const std::vector<std::string>& args);
int cmd_eval(const std::vector<std::string>& args);
int cmd_probe(const std::vector<std::string>& args);
int cmd_ckpt(const std::vector<std::string>& args);
int cmd_report(const std::vector<std::string>& args);
int cmd_sweep(const std::vector<std::string>& args);

// Shared by eval and probe (defined in cmd_eval.cpp). The stage a finished run ended
// at: the last row of its metrics.jsonl (which records what was trained, whatever
// --set overrides were given), else the stage its config.yaml schedules last; for a
// best model or a checkpoint, the stage of its epoch.
struct LoadedRun;
int run_final_stage(const LoadedRun& run);
// Which weights were read (--best, --checkpoint), for report names ("_best",
// "_step-NNNNNNNN", "" for the final model) and printouts (" (its checkpoint DIR, step N)").
std::string weights_suffix(const LoadedRun& run);
std::string weights_label(const LoadedRun& run);
// The items to evaluate: --data FILE.json when given, else the run's validation set
// (its file, or regenerated from the run's data section); name: for report file names.
struct EvalData {
  std::vector<curriculum::Sample> samples;
  std::string name;
};
EvalData run_eval_data(const LoadedRun& run, const std::string& data_file);

// The frame of a command whose ranks share its work (eval, probe): one process, or the
// ranks of an MPI job (mpirun / srun). MPI for the call, per-rank logging at "warn", then
// body(world, local_rank)'s exit code; an Error on one rank stops every rank (abort_all).
int run_on_ranks(const std::function<int(parallel::Communicator& world, int local_rank)>& body);

// "--name value" options: takes the value after args[i] (advancing i) or throws UsageError.
std::string option_value(const std::vector<std::string>& args, size_t& i);
int option_int(const std::vector<std::string>& args, size_t& i, int min, int max);

}  // namespace coconut::launcher
