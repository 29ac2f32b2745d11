# Sourced by the sbatch scripts of this folder (from the submit folder, the repository
# root): run_requeueable CMD... runs the job's step and, when it exits with 75 (`coconut
# train` stopped by SIGTERM / SIGUSR1 after saving a checkpoint), requeues the job, which
# then continues from that checkpoint if its arguments hold --resume auto. Returns the
# step's exit code, or 0 once the job is requeued.
run_requeueable() {
  local rc=0
  "$@" || rc=$?
  if [ "$rc" = 75 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    echo "sbatch: job $SLURM_JOB_ID stopped by a signal after a checkpoint; requeueing it (restart ${SLURM_RESTART_COUNT:-0})"
    scontrol requeue "$SLURM_JOB_ID" && return 0
    echo "sbatch: the job could not be requeued (submit with --requeue); resubmit it with --resume auto" >&2
  fi
  return "$rc"
}
