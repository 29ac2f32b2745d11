#!/usr/bin/env bash
# Bad input to `coconut train`, one case each: malformed YAML, an unknown key, a wrong
# type, impossible combinations (more pipeline stages than layers, c < 0, a batch that
# does not split into micro-batches, a process grid that does not match the job), a
# missing data file, an unwritable output directory. Each must exit with code 2, print
# one message naming the file / key, and write nothing (no run directory).
#   test_bad_input_cli.sh COCONUT_BINARY CONFIG_DIR TEMP_DIR
set -euo pipefail

bin=$1 configs=$2
mkdir -p "$3"
work=$(mktemp -d "$3/bad_input.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1

source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # fail, pass, expect

# bad NAME PATTERN CMD...: CMD exits 2, its stderr matches PATTERN (grep -E), and run
# directory $work/NAME (every case points run.dir there) was not created.
bad() {
  local name=$1 pattern=$2 rc=0
  shift 2
  "$@" >"$work/out.txt" 2>"$work/err.txt" || rc=$?
  [[ $rc == 2 ]] || fail "$name: exited $rc, expected 2; stderr: $(cat "$work/err.txt")"
  grep -Eq -- "$pattern" "$work/err.txt" || fail "$name: stderr lacks '$pattern': $(cat "$work/err.txt")"
  [[ ! -e $work/$name ]] || fail "$name: the run directory $work/$name was written"
  pass "$name: $(head -c 300 "$work/err.txt" | tr '\n' ' ')"
}

tiny=$configs/prosqa_tiny.yaml
train() { "$bin" train "$@" --set data.generate_train=8 --set data.generate_valid=2 --set train.epochs=1; }

# ---- the YAML itself ---------------------------------------------------------------------
printf 'run:\n  dir: x\nmodel:\n  n_layer: [2\n' >"$work/malformed.yaml"
bad malformed "malformed.yaml:[0-9]+:[0-9]+: malformed YAML" train "$work/malformed.yaml" --set run.dir="$work/malformed"

sed 's/^  n_layer: 2$/  n_layers: 2/' "$tiny" >"$work/unknown.yaml"
grep -q "n_layers" "$work/unknown.yaml" || fail "could not make the unknown-key config"
bad unknown "unknown.yaml:[0-9]+.*model\.n_layers" train "$work/unknown.yaml" --set run.dir="$work/unknown"

sed 's/^  d_model: 64$/  d_model: wide/' "$tiny" >"$work/type.yaml"
bad wrong_type "type.yaml:[0-9]+: key 'model.d_model' expects an integer.*got 'wide'" \
  train "$work/type.yaml" --set run.dir="$work/wrong_type"
bad wrong_type_set "key 'train.lr' expects a finite number.*got 'fast'" \
  train "$tiny" --set run.dir="$work/wrong_type_set" --set train.lr=fast

# ---- impossible combinations -------------------------------------------------------------
bad pp_gt_layers "parallel.pp \(3\) is larger than model.n_layer \(2\)" \
  train "$tiny" --set run.dir="$work/pp_gt_layers" --set parallel.pp=3
bad c_negative "key 'curriculum.c_thought' expects an integer in \[0, 64\], got '-1'" \
  train "$tiny" --set run.dir="$work/c_negative" --set curriculum.c_thought=-1
bad keep_best_no_valid "eval.keep_best chooses by validation accuracy: it needs a validation split" \
  "$bin" train "$tiny" --set run.dir="$work/keep_best_no_valid" --set eval.keep_best=true --set data.generate_valid=0
bad micro_split "train.batch_size \(10\) must be a multiple of train.micro_batch_size \(4\)" \
  train "$tiny" --set run.dir="$work/micro_split" --set train.batch_size=10 --set train.micro_batch_size=4
# Every pipeline schedule accepts fewer micro-batches than stages (docs/config.md); what
# cannot work is a grid that does not match the job: pp x dp must equal the ranks.
bad grid_one_rank "parallel.pp \(1\) x parallel.dp \(2\) = 2 ranks, but the job has 1" \
  train "$tiny" --set run.dir="$work/grid_one_rank" --set parallel.dp=2
bad grid_mpi "parallel.pp \(2\) x parallel.dp \(2\) = 4 ranks, but the job has 2" \
  mpirun --oversubscribe -np 2 "$bin" train "$tiny" --set run.dir="$work/grid_mpi" --set parallel.pp=2 \
  --set parallel.dp=2 --set data.generate_train=8
[[ $(grep -c "cannot start" "$work/err.txt") == 1 ]] || fail "grid_mpi: the message is not printed once: $(cat "$work/err.txt")"

# train.device: cuda where there is no GPU (or no CUDA backend in this build), and with
# what the device trainer does not support yet. (On a GPU machine the first case is not
# bad input: tests/gpu/test_train_cuda.sh trains there.)
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi >/dev/null 2>&1; then
  bad device_cuda "train.device: cuda: (no usable GPU|this coconut was built without the CUDA backend)" \
    train "$tiny" --set run.dir="$work/device_cuda" --set train.device=cuda
fi
bad device_cuda_recompute "train.device: cuda needs parallel.activations: keep" \
  train "$tiny" --set run.dir="$work/device_cuda_recompute" --set train.device=cuda --set parallel.activations=recompute
bad device_cuda_pipeline_eot "train.device: cuda does not train the <eot> classifier yet" \
  train "$tiny" --set run.dir="$work/device_cuda_pipeline_eot" --set train.device=cuda --set parallel.pp=2 \
  --set curriculum.eot_classifier=true
bad device_cuda_thought_scale "train.device: cuda feeds thoughts back unscaled: model.thought_scale 0.5 needs train.device: cpu" \
  train "$tiny" --set run.dir="$work/device_cuda_thought_scale" --set train.device=cuda --set model.thought_scale=0.5
bad thought_scale_zero "key 'model.thought_scale' expects a finite number in .*got '0'" \
  train "$tiny" --set run.dir="$work/thought_scale_zero" --set model.thought_scale=0
bad device_cuda_pipeline_graphs "train.cuda_graphs: pipeline stages on GPUs run without CUDA graphs .got parallel.pp 2." \
  train "$tiny" --set run.dir="$work/device_cuda_pipeline_graphs" --set train.device=cuda --set parallel.pp=2 \
  --set train.cuda_graphs=true
bad gpu_comm "key 'parallel.gpu_comm' expects one of.*got 'gloo'" \
  train "$tiny" --set run.dir="$work/gpu_comm" --set parallel.gpu_comm=gloo
bad cuda_graphs_cpu "train.cuda_graphs captures the GPU's training steps: it needs train.device: cuda" \
  train "$tiny" --set run.dir="$work/cuda_graphs_cpu" --set train.cuda_graphs=true
bad pad_columns "train.pad_columns" \
  train "$tiny" --set run.dir="$work/pad_columns" --set train.pad_columns=-4
bad device_tpu "key 'train.device' expects one of.*got 'tpu'" \
  train "$tiny" --set run.dir="$work/device_tpu" --set train.device=tpu
bad attention_fp32 "train.attention: fused needs train.precision: bf16" \
  train "$tiny" --set run.dir="$work/attention_fp32" --set train.device=cuda --set train.attention=fused
bad precision_cpu "train.precision and train.attention choose the GPU's kernels: they need train.device: cuda" \
  train "$tiny" --set run.dir="$work/precision_cpu" --set train.precision=bf16
bad attention_flash "key 'train.attention' expects one of.*got 'flash'" \
  train "$tiny" --set run.dir="$work/attention_flash" --set train.attention=flash
bad digits_prosqa "data.digits sets the running-sum generator: it needs data.kind: running_sum \\(got prosqa\\)" \
  train "$tiny" --set run.dir="$work/digits_prosqa" --set data.digits=4
bad hops_prosqa "data.hops sets the ProntoQA generator: it needs data.kind: prontoqa \\(got prosqa\\)" \
  train "$tiny" --set run.dir="$work/hops_prosqa" --set data.hops=3
bad digits_range "key 'data.digits' expects an integer in .2, 64., got '1'" \
  train "$tiny" --set run.dir="$work/digits_range" --set data.kind=running_sum --set data.digits=1

# ---- files -------------------------------------------------------------------------------
bad missing_data "data.train_file: file '.*/no_such_train.json' does not exist" \
  train "$tiny" --set run.dir="$work/missing_data" --set data.kind=file --set data.train_file="$work/no_such_train.json"
bad missing_bpe "data.bpe_dir: file '.*/no_bpe/vocab.json' does not exist" \
  train "$tiny" --set run.dir="$work/missing_bpe" --set data.tokenizer=bpe --set data.bpe_dir="$work/no_bpe"
bad missing_config "no_such.yaml: cannot open config file" train "$work/no_such.yaml" --set run.dir="$work/missing_config"

# An output directory that cannot be created: a path through a regular file (this holds
# for root too), then a read-only directory (only meaningful for a non-root user).
echo "not a directory" >"$work/plainfile"
rc=0
train "$tiny" --set run.dir="$work/plainfile/run" >"$work/out.txt" 2>"$work/err.txt" || rc=$?
[[ $rc == 2 ]] || fail "run.dir under a file: exited $rc, expected 2: $(cat "$work/err.txt")"
grep -q "run.dir '$work/plainfile/run' cannot be created: '$work/plainfile' is not a directory" "$work/err.txt" ||
  fail "run.dir under a file: message: $(cat "$work/err.txt")"
[[ $(cat "$work/plainfile") == "not a directory" ]] || fail "run.dir under a file: the file was changed"
pass "unwritable run.dir (under a regular file)"
if [[ $(id -u) != 0 ]]; then
  mkdir "$work/readonly" && chmod 555 "$work/readonly"
  bad readonly/run "directory '.*/readonly' is not writable" train "$tiny" --set run.dir="$work/readonly/run"
else
  echo "skip: read-only directory case (root may write anywhere)"
fi

# ---- a valid dry run writes nothing either ----------------------------------------------
"$bin" train "$tiny" --dry-run --set run.dir="$work/dry" >"$work/out.txt" 2>"$work/err.txt" ||
  fail "dry run of the tiny config failed: $(cat "$work/err.txt")"
grep -q "the configuration is valid" "$work/out.txt" || fail "dry run: $(cat "$work/out.txt")"
[[ ! -e $work/dry ]] || fail "the dry run created its run directory"
pass "dry run"

# ---- every command listed by `coconut --help` has its own --help ------------------------
"$bin" --help >"$work/usage.txt" || fail "coconut --help exited non-zero"
commands=$(sed -n '/^commands:/,/^$/p' "$work/usage.txt" | awk 'NR > 1 && NF { print $1 }')
[[ $(echo "$commands" | wc -w) -ge 7 ]] || fail "coconut --help lists too few commands: $commands"
for cmd in $commands; do
  "$bin" "$cmd" --help >"$work/out.txt" 2>&1 || fail "coconut $cmd --help exited non-zero: $(cat "$work/out.txt")"
  grep -q "usage: coconut $cmd" "$work/out.txt" || fail "coconut $cmd --help: $(head -n 3 "$work/out.txt")"
done
rc=0; "$bin" frobnicate >/dev/null 2>&1 || rc=$?
[[ $rc == 2 ]] || fail "an unknown command exited $rc, expected 2"
pass "--help on every command: $(echo $commands)"

echo "all bad-input checks passed"
