// Checks of a training run's inputs that need more than the YAML text: the job size
// against the process grid, the data / tokenizer / pretrained files it names, and
// that run.dir can be written. `coconut train` runs them on every rank BEFORE anything
// is written, so bad input never leaves a half-made run directory behind; `coconut
// train --dry-run` and `coconut sweep` run them too (files optional in a dry run).
#pragma once

#include <string>
#include <vector>

#include "launcher/train_config.h"

namespace coconut::launcher {

struct PreflightOptions {
  int world_size = 0;          // ranks of the job; 0 = unknown (dry run): grid not checked
  bool require_files = true;   // false: missing input files are not problems (dry run)
};

// Every problem found, each one line naming the config file, the key and the path or
// value, and what was expected. Empty: the run can start.
std::vector<std::string> preflight_problems(const TrainConfig& c, const PreflightOptions& options);

// The input files the config names (key -> path), whether or not they exist; the dry
// run lists them.
std::vector<std::pair<std::string, std::string>> input_files(const TrainConfig& c);

// `coconut train --dry-run`: prints the effective configuration, the model size, the
// curriculum and parallel layout, the input files (missing ones marked) and every
// problem the full preflight would report except missing files. With job_ranks (> 0:
// `--np N`, the job's mpirun -np / srun -n) the process grid is checked against that
// job and the micro-batches are those the run would choose for it, measured exactly.
// Returns the exit code: 0 when the config could start (given its files and, without
// job_ranks, a matching job), else 2.
int print_dry_run(const TrainConfig& c, int job_ranks = 0);

// The dry runs' measure of the data's sequences against the model's positions
// (launcher/sequence_lengths.h), as `coconut train` makes it at its start for a job of
// job_ranks ranks (0: unknown), when every input file is there: prints the lengths line
// (after `prefix`) and returns what would stop the run ("" when nothing would). Without
// train.micro_batch_size and a known data-parallel size (parallel.dp, or job_ranks) the
// micro-batches are measured as whole batches, which no smaller micro-batch of theirs
// outgrows: then only a sequence too long on its own, or a prompt, is a problem.
std::string dry_run_sequence_lengths(const TrainConfig& c, int job_ranks, const std::string& prefix = "");

// The deepest existing ancestor of path (path itself when it exists): what must be a
// writable directory for path to be created.
std::string existing_ancestor(const std::string& path);

}  // namespace coconut::launcher
