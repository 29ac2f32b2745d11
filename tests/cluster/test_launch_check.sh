#!/usr/bin/env bash
# The launcher cross-check of `coconut train` (parallel/launch_env.h) with a launcher's
# environment faked around one real process: a task that srun started as rank 1 of 2 but
# whose MPI sees a single process (the srun-without-PMI failure) must stop with exit 1
# and the clear message; a plain run inside a 2-task Slurm batch script (no srun) must
# train, warn, and log the launcher on rank 0.
#   usage: test_launch_check.sh COCONUT_BINARY CONFIG_DIR TMP_DIR
set -euo pipefail
bin=$1 configs=$2 tmp=$3/launch_check
rm -rf "$tmp" && mkdir -p "$tmp"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
args=("$configs/prosqa_tiny.yaml" --set train.epochs=1 --set data.generate_train=16 --set data.generate_valid=4
      --set eval.every_epochs=0 --set run.threads=1)
fail() { echo "FAIL: $*"; cat "$tmp"/*.log; exit 1; }

# srun's variables for task 1 of 2 on one node (see `srun env` in docs/cluster.md).
set +e
env SLURM_JOB_ID=77 SLURM_STEP_ID=0 SLURM_PROCID=1 SLURM_LOCALID=1 SLURM_NODEID=0 SLURM_NTASKS=2 \
  SLURM_STEP_NUM_TASKS=2 SLURM_STEP_TASKS_PER_NODE=2 SLURM_TASKS_PER_NODE=2 \
  "$bin" train "${args[@]}" --set run.dir="$tmp/srun" > "$tmp/srun.log" 2>&1
rc=$?
set -e
[ $rc = 1 ] || fail "srun without PMI: exit code $rc, expected 1"
grep -q "srun started this process as rank 1 of 2, but MPI sees a single process" "$tmp/srun.log" ||
  fail "srun without PMI: no clear message"
[ ! -e "$tmp/srun/metrics.jsonl" ] || fail "srun without PMI: it trained anyway"
echo "srun without PMI: exit 1 with: $(grep -o 'srun started this process.*single process' "$tmp/srun.log")"

env SLURM_JOB_ID=78 SLURM_PROCID=0 SLURM_NTASKS=2 SLURM_TASKS_PER_NODE=2 \
  "$bin" train "${args[@]}" --set run.dir="$tmp/batch" > "$tmp/batch.log" 2>&1 || fail "batch shell: the run failed"
grep -q "launcher: no launcher (Slurm job 78): a single process" "$tmp/batch.log" || fail "batch shell: no launcher line"
grep -q "not started by srun or mpirun: only this one process runs" "$tmp/batch.log" || fail "batch shell: no warning"
[ -s "$tmp/batch/metrics.jsonl" ] || fail "batch shell: no metrics"
echo "batch shell: trained, warned: $(grep -o 'running inside Slurm job 78.*runs' "$tmp/batch.log")"
echo PASS
