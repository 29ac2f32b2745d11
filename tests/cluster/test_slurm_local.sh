#!/usr/bin/env bash
# A real one-node Slurm on this machine, from Debian's slurm-wlm package: munged,
# slurmctld and slurmd with their own config, sockets, ports, state and logs in a temp
# folder; then cluster/slurm/train.sbatch trains the tiny config with 2 tasks as two
# pipeline stages, once through `srun --mpi=pmix` and once through `mpirun` inside the
# allocation; each job must complete with both ranks (exit state, coconut's launcher
# line, the 2-rank layout, the final table, the run folder). A third job is stopped by
# `scancel --signal=USR1`, requeued by train.sbatch and resumed to its end. A job array
# runs a sweep in two shards (cluster/slurm/sweep_array.sbatch). Everything started here is
# stopped at the end, by its pid file.
#
#   usage: tests/cluster/test_slurm_local.sh COCONUT_BINARY REPO_ROOT WORK_DIR
#   exit 77 (CTest: skipped) when Slurm or munge is not installed or we are not root;
#   `bash cluster/bootstrap.sh --slurm` installs them. COCONUT_KEEP_SLURM_TMP=1 keeps the
#   temp folder (configs, daemon logs, job outputs) after a successful run too.
set -euo pipefail
shopt -s extglob
bin=$(realpath "$1") repo=$(realpath "$2") work=$3

for tool in slurmctld slurmd munged sbatch scontrol sinfo; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool not installed (bash cluster/bootstrap.sh --slurm)"; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (the daemons run as root here)"; exit 77; }

mkdir -p "$work"
tmp=$(mktemp -d "$(realpath "$work")/slurm.XXXXXX")
chmod 755 "$tmp"  # munged wants every folder above its socket searchable
start=$(date +%s)
node=$(hostname -s)
# Ports of our own, so that neither a system Slurm nor a second run of this test clash.
port=$((20000 + RANDOM % 20000))
export SLURM_CONF=$tmp/slurm.conf

cleanup() {
  local rc=$?
  set +e
  if [ -f "$tmp/slurmctld.pid" ]; then scontrol shutdown >/dev/null 2>&1; fi
  for pidfile in "$tmp/slurmd.pid" "$tmp/slurmctld.pid" "$tmp/munge/munged.pid"; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; kill "$pid" 2>/dev/null; sleep 0.2; done
  done
  if [ $rc != 0 ]; then
    echo "--- logs (kept in $tmp) ---"
    tail -n 15 "$tmp"/log/*.log "$tmp"/*.out 2>/dev/null
  elif [ "${COCONUT_KEEP_SLURM_TMP:-0}" = 1 ]; then
    echo "kept $tmp"
  else
    rm -rf "$tmp"
  fi
  echo "test_slurm_local: $(( $(date +%s) - start )) s in all"
  exit $rc
}
trap cleanup EXIT

source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect

# ---- munge: a fresh key and its own socket ----
mkdir -p "$tmp/munge" "$tmp/state" "$tmp/spool" "$tmp/log"
chmod 755 "$tmp/munge"
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$tmp/munge/munge.key"
munged --key-file="$tmp/munge/munge.key" --socket="$tmp/munge/munge.sock" --pid-file="$tmp/munge/munged.pid" \
  --log-file="$tmp/log/munged.log" --seed-file="$tmp/munge/munge.seed"

# ---- Slurm: one node with this machine's cores, no accounting, no cgroup confinement ----
# cred_expire=10: a requeued job may start again 10 s after its requeue (the default is
# 120 s; starting it earlier by hand fails with "Job credential revoked").
# At least 2 CPUs, so that the 2-task jobs also fit a 1-core machine (config_overrides:
# slurmd takes the configured count instead of draining the node for having fewer).
cpus=$(nproc); [ "$cpus" -ge 2 ] || cpus=2
cat > "$SLURM_CONF" <<EOF
ClusterName=coconuttest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$tmp/munge/munge.sock,cred_expire=10
CredType=cred/munge
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
# slurmd loads a cgroup plugin even with proctrack/linuxproc, and its autodetection
# refuses hybrid v1/v2 hosts (containers): name the hierarchy that is mounted.
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then cgroup=cgroup/v2; else cgroup=cgroup/v1; fi
printf 'CgroupPlugin=%s\nCgroupAutomount=no\nConstrainCores=no\nConstrainRAMSpace=no\n' "$cgroup" > "$tmp/cgroup.conf"

slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
  state=$(sinfo -h -n "$node" -o %T 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 0.5
done
[ "$state" = idle ] || fail "node $node did not become idle (state '$state')"
echo "slurm up in $(( $(date +%s) - start )) s: node $node idle, ports $port/$((port + 1)), mpi plugins: $(srun --mpi=list 2>&1 | sed -n 's/^\t//p' | tr '\n' ' ')"

# ---- the jobs ----
# job_end_state JOB: waits (our own polling: `sbatch --wait` checks ever more rarely, up to
# 32 s apart; at most 5 minutes) until no task of JOB is pending, running or requeued,
# and prints the JobState, ExitCode and Restarts fields of all its tasks.
job_end_state() {
  local state
  for _ in $(seq 600); do
    state=$(scontrol show job "$1" | tr ' ' '\n' | grep -E '^(JobState|ExitCode|Restarts)=' | tr '\n' ' ')
    [[ $state == *JobState=@(PENDING|CONFIGURING|RUNNING|COMPLETING|REQUEUED)* ]] || break
    sleep 0.5
  done
  echo "$state"
}
run_job() {  # run_job NAME LAUNCH
  local name=$1 launch=$2 t0 job state
  t0=$(date +%s)
  sbatch --parsable --ntasks=2 --job-name="coconut-$name" --chdir="$repo" \
    --output="$tmp/$name.out" \
    --export=ALL,COCONUT_BIN="$bin",COCONUT_LAUNCH="$launch",OMPI_ALLOW_RUN_AS_ROOT=1,OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    "$repo/cluster/slurm/train.sbatch" configs/prosqa_tiny.yaml \
    --set train.epochs=1 --set data.generate_train=64 --set data.generate_valid=16 --set eval.max_items=16 \
    --set parallel.pp=2 --set run.dir="$tmp/run_$name" > "$tmp/$name.sbatch" || fail "$name: sbatch failed"
  job=$(head -n 1 "$tmp/$name.sbatch" | cut -d';' -f1)
  state=$(job_end_state "$job")
  echo "$name: job $job ($state) in $(( $(date +%s) - t0 )) s"
  [[ $state == *"JobState=COMPLETED"*"ExitCode=0:0"* ]] || fail "$name: job $job ended as $state"
  local out="$tmp/$name.out"
  grep -q "launcher: $launch (Slurm job $job): rank 0 of 2" "$out" || fail "$name: no '$launch' launcher line in $out"
  grep -q "parallel: 2 ranks = 2 pipeline stages x 1 replicas" "$out" || fail "$name: the job did not run 2 ranks"
  grep -q "^| $tmp/run_$name | coconut | 1 |" "$out" || fail "$name: no final table in $out"
  [ -s "$tmp/run_$name/metrics.jsonl" ] || fail "$name: no metrics.jsonl in the run folder"
  ! grep -q "fatal error" "$out" || fail "$name: a rank failed"
  grep "launcher:" "$out" | sed 's/^/  /'
}

# A job stopped by `scancel --signal=USR1` (what `sbatch --signal=USR1@T` sends T seconds
# before a time limit): the ranks save a checkpoint and exit 75, train.sbatch requeues the
# job, and the restarted job resumes (--resume auto) and completes every step.
preempt_job() {
  local name=preempt t0 job state steps
  t0=$(date +%s)
  sbatch --parsable --ntasks=2 --requeue --job-name="coconut-$name" --chdir="$repo" \
    --output="$tmp/$name.out" --open-mode=append \
    --export=ALL,COCONUT_BIN="$bin",OMPI_ALLOW_RUN_AS_ROOT=1,OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    "$repo/cluster/slurm/train.sbatch" configs/prosqa_tiny.yaml \
    --set train.epochs=2 --set data.generate_train=240 --set data.generate_valid=4 --set train.batch_size=4 \
    --set eval.every_epochs=0 --set run.threads=1 --set parallel.pp=2 --set train.micro_batch_size=2 \
    --set run.dir="$tmp/run_$name" --resume auto > "$tmp/$name.sbatch" || fail "$name: sbatch failed"
  job=$(head -n 1 "$tmp/$name.sbatch" | cut -d';' -f1)
  wait_lines "$tmp/run_$name/steps.jsonl" 10 "$name: job $job"
  scancel --signal=USR1 "$job" || fail "$name: scancel --signal=USR1 $job failed"
  state=$(job_end_state "$job")
  echo "$name: job $job ($state) in $(( $(date +%s) - t0 )) s"
  [[ $state == *"JobState=COMPLETED"*"ExitCode=0:0"* ]] || fail "$name: job $job ended as $state"
  [[ $state == *"Restarts=1"* ]] || fail "$name: job $job was not requeued once ($state)"
  local out="$tmp/$name.out"
  steps=$(grep -o "SIGUSR1 received: stopped after step [0-9]*" "$out" | grep -o "[0-9]*$" | sort -u)
  [ "$(grep -c "SIGUSR1 received: stopped after step" "$out")" = 2 ] && [ "$(echo "$steps" | wc -l)" = 1 ] ||
    fail "$name: both ranks must report one stop step: $(grep received "$out")"
  grep -q "requeueing it" "$out" || fail "$name: train.sbatch did not requeue the job"
  grep -q "resumed from .*step-$(printf %08d "$steps")" "$out" || fail "$name: the restart did not resume from step $steps"
  [ "$(wc -l < "$tmp/run_$name/steps.jsonl")" = 120 ] || fail "$name: the run did not end with all 120 steps"
  grep -q "^| $tmp/run_$name | coconut | 1 |" "$out" || fail "$name: no final table in $out"
  echo "  stopped after step $steps by SIGUSR1, requeued, resumed and completed 120 steps"
}

# A job array of 2 tasks running `coconut sweep --shard` (cluster/slurm/sweep_array.sbatch)
# over the 2-run tiny sweep: each task trains its run, the tasks side by side on the
# node's 2 CPUs; `--report` then tables both.
sweep_array_job() {
  local t0 job states
  t0=$(date +%s)
  sbatch --parsable --array=0-1 --job-name=coconut-sweep --chdir="$repo" --output="$tmp/sweep-%a.out" \
    --export=ALL,COCONUT_BIN="$bin",OMPI_ALLOW_RUN_AS_ROOT=1,OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    "$repo/cluster/slurm/sweep_array.sbatch" configs/sweeps/tiny.yaml --out "$tmp/sweep" > "$tmp/sweep.sbatch" ||
    fail "sweep array: sbatch failed"
  job=$(head -n 1 "$tmp/sweep.sbatch" | cut -d';' -f1)
  states=$(job_end_state "$job")
  echo "sweep array: job $job ($states) in $(( $(date +%s) - t0 )) s"
  [[ $(grep -Eo "JobState=COMPLETED Restarts=0 ExitCode=0:0" <<<"$states" | wc -l) == 2 ]] ||
    fail "sweep array: both tasks must complete with exit 0: $states"
  for k in 0 1; do
    grep -q "shard $k/2" "$tmp/sweep-$k.out" || fail "sweep array task $k: no shard line in $(cat "$tmp/sweep-$k.out")"
    grep -q "task $k of 2: runs $k modulo 2" "$tmp/sweep-$k.out" || fail "sweep array task $k: not sharded"
    [ -f "$tmp/sweep/c_thought-$k/sweep_done.json" ] || fail "sweep array: c_thought-$k did not finish"
  done
  "$bin" sweep "$repo/configs/sweeps/tiny.yaml" --out "$tmp/sweep" --report > "$tmp/sweep_report.txt" ||
    fail "sweep --report: $(cat "$tmp/sweep_report.txt")"
  grep -q "2 runs: 2 finished or diverged" "$tmp/sweep_report.txt" || fail "sweep --report: $(cat "$tmp/sweep_report.txt")"
  echo "  2 array tasks trained c_thought-0 and c_thought-1; --report tabled both"
}

# The same script's requeue: SIGUSR1 to the task's shell (`scancel --batch`, what sbatch
# --signal=B:USR1@T sends) goes on to the sweep and its run, which saves a checkpoint;
# the task exits 75, is requeued, skips nothing finished and resumes the stopped run.
sweep_array_preempt() {
  local t0 job state
  t0=$(date +%s)
  sbatch --parsable --array=0 --requeue --job-name=coconut-sweep-pre --chdir="$repo" --output="$tmp/sweep_pre.out" \
    --open-mode=append --export=ALL,COCONUT_BIN="$bin",OMPI_ALLOW_RUN_AS_ROOT=1,OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    "$repo/cluster/slurm/sweep_array.sbatch" configs/sweeps/tiny.yaml --out "$tmp/sweep_pre" \
    --set data.generate_train=240 --set train.batch_size=4 > "$tmp/sweep_pre.sbatch" || fail "sweep preempt: sbatch failed"
  job=$(head -n 1 "$tmp/sweep_pre.sbatch" | cut -d';' -f1)
  wait_lines "$tmp/sweep_pre/c_thought-0/steps.jsonl" 10 "sweep preempt: job $job"
  scancel --batch --signal=USR1 "${job}_0" || fail "sweep preempt: scancel --batch --signal=USR1 ${job}_0 failed"
  state=$(job_end_state "$job")
  echo "sweep preempt: job $job ($state) in $(( $(date +%s) - t0 )) s"
  [[ $state == *"JobState=COMPLETED"*"ExitCode=0:0"* && $state == *"Restarts=1"* ]] ||
    fail "sweep preempt: the task must be requeued once and complete: $state; $(tail -n 20 "$tmp/sweep_pre.out")"
  grep -q "SIGUSR1 received: stopped after step" "$tmp/sweep_pre/c_thought-0/train.log" ||
    fail "sweep preempt: the run did not get the signal: $(tail -n 5 "$tmp/sweep_pre/c_thought-0/train.log")"
  grep -q "requeueing it" "$tmp/sweep_pre.out" || fail "sweep preempt: the task was not requeued"
  grep -q "c_thought-0: interrupted earlier, resuming with --resume auto" "$tmp/sweep_pre.out" ||
    fail "sweep preempt: the requeued task did not resume the run: $(cat "$tmp/sweep_pre.out")"
  for k in 0 1; do
    [ -f "$tmp/sweep_pre/c_thought-$k/sweep_done.json" ] || fail "sweep preempt: c_thought-$k did not finish"
  done
  echo "  the array task passed SIGUSR1 to its sweep, was requeued and resumed c_thought-0"
}

run_job srun srun
run_job mpirun mpirun
preempt_job
sweep_array_job
sweep_array_preempt
echo "PASS"
