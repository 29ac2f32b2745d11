// The training configuration: every key of a train YAML file, read strictly (unknown
// keys, wrong types and out-of-range values stop with the file, line and key).
// docs/config.md lists the keys; configs/ has examples.
#pragma once

#include <string>

#include "curriculum/samples.h"
#include "launcher/lr_schedule.h"
#include "model/adamw.h"
#include "model/gpt2.h"
#include "runtime/config.h"

namespace coconut::launcher {

struct DataConfig {
  std::string kind = "prosqa";  // prosqa | prontoqa | running_sum (generated) | file
  int digits = 5;               // running_sum: digits per question (digits - 1 steps)
  int hops = 5;                 // prontoqa: rules on the chain (hops + 1 steps)
  std::string train_file, valid_file, test_file;  // JSON in the official format
  int generate_train = 2000, generate_valid = 200, generate_test = 0;
  uint64_t generate_seed = 2024;
  std::string tokenizer = "word";  // word (built from the data) | bpe (GPT-2 files)
  std::string bpe_dir;             // vocab.json + merges.txt
};

// Checkpoints and resume (launcher/train_checkpoint.h, docs/config.md).
struct CheckpointConfig {
  std::string dir;               // "" = RUN_DIR/checkpoints
  int64_t every_steps = 0;       // 0 = off
  bool at_epoch_end = false;     // also: stage ends (milestones) are saved whenever saving is on
  int keep_last = 3;             // non-milestone checkpoints kept (0 = all)
  bool async = false;            // write in the background while training goes on
  std::string resume = "never";  // never | auto | PATH (`coconut train --resume`)
  int64_t stop_after_steps = 0;  // for tests: save a checkpoint and stop after this step; 0 = off
};

struct TrainConfig {
  std::string source;      // the YAML file
  std::string digest;      // of the effective configuration
  std::string effective;   // the file with its --set overrides applied (JSON, which is YAML)
  std::string run_dir = "runs/run";
  uint64_t seed = 1;
  int threads = 0;
  model::GPT2Config model;
  std::string init_from;   // Hugging Face GPT-2 directory (model.safetensors + config.json)
  DataConfig data;
  curriculum::CurriculumConfig curriculum;
  // The learned <eot> strategy (curriculum/eot_classifier.h): trained alongside the
  // model and used by the run's evaluations instead of the fixed count of thoughts.
  bool eot_classifier = false;
  double eot_loss_weight = 1.0;  // weight of its mean BCE in the model's loss
  int epochs = 1;
  // Wall-clock limit of this process's training (0 = none): checked at each epoch end,
  // the run ends there, evaluated and exported, when one more epoch like it would pass it.
  double max_minutes = 0;
  int batch_size = 32;
  // Gradient accumulation when smaller than batch_size; 0 (the default) = chosen by
  // run_training for the topology (default_micro_batch_size).
  int micro_batch_size = 0;
  model::AdamWConfig adamw;   // adamw.lr: the peak rate of lr_schedule
  LrSchedule lr_schedule;
  double grad_clip = 0;       // global-norm clipping; 0 = off
  // Steps in a row whose gradient is not finite that are skipped (the update is not
  // applied; an overflow in bf16, a bad batch) before the run stops as diverged.
  int skip_nonfinite_steps = 0;
  // Where one process trains: cpu, or cuda (the model, its gradients and AdamW's moments
  // on the GPU; launcher/device_step.h) in fp32 or bf16 mixed precision.
  std::string device = "cpu";       // cpu | cuda
  std::string precision = "fp32";   // fp32 | bf16 (cuda only)
  // The GPU's attention kernels (model::CudaAttention): auto = bf16 (batched tensor-core
  // products) in bf16, fp32 in fp32; fused = the flash-style kernel (bf16 only).
  std::string attention = "auto";   // auto | fp32 | bf16 | fused
  // CUDA graphs for the training steps (train.device: cuda, one process): each pass plan
  // is captured on its second step and replayed after (model/cuda_multipass.h). Plans
  // repeat only when batches share a shape: train.pad_columns.
  bool cuda_graphs = false;
  // > 0: each training batch's latent column and length are rounded up to multiples of
  // this many columns, and (on the GPU) its targeted rows to a multiple of 64, so that
  // batches of similar lengths share one pass plan; the padding is masked out (the loss
  // is the same up to summation order). 0: batches as long as their longest sample.
  int pad_columns = 0;
  std::string reset_optimizer = "stage";  // stage | epoch | never
  int log_every = 10;
  // Parallelism (under mpirun/srun): pp pipeline stages x dp data-parallel replicas.
  int pp = 1;
  int dp = 0;                          // 0: world size / pp
  std::string schedule = "ring";       // gpipe | gpipe-pass | 1f1b | ring
  int max_in_flight = 0;               // 1f1b / ring cap per stage; 0 = pp
  std::string activations = "keep";    // keep | recompute (each pass's forward again in its backward)
  // How data-parallel GPU ranks (train.device: cuda under mpirun) exchange gradients and
  // weights: nccl (one GPU per rank, overlapping the backward) or mpi (host memory;
  // ranks may share a GPU). parallel/device_exchange.h.
  std::string gpu_comm = "nccl";       // nccl | mpi
  int eval_every = 1;         // epochs; 0 = only at the end
  int eval_batch_size = 32;
  int eval_max_items = 0;     // 0 = all
  int max_new_tokens = 64;
  int eval_thought_tokens = 0;  // > 0: each evaluated thought's most probable tokens in the report
  // Keep the model of the best validation accuracy among the evaluations at the run's
  // final curriculum stage in RUN_DIR/best_model/, and evaluate the test split on it too
  // (the paper's protocol: the checkpoint with the best validation accuracy).
  bool eval_keep_best = false;
  CheckpointConfig checkpoint;
};

// Reads every key (then Config::finish(), so unknown keys are errors).
TrainConfig read_train_config(Config& cfg);

// train.micro_batch_size when the config leaves it out: enough micro-batches that every
// data-parallel replica gets one (pp 1), or 2 x pp each (pipeline stages: the schedules'
// bubble shrinks with the micro-batches per replica, docs/pipeline.md). It is the largest
// divisor of batch_size giving at least dp (x 2 pp) micro-batches, 1 when none does; in
// one process (pp = dp = 1) the whole batch, no accumulation.
int default_micro_batch_size(int batch_size, int pp, int dp);

// A job of `ranks` ranks (mpirun -np; 1: one process, 0: not known yet, as in a dry run
// without --np): its data-parallel replicas (1 in one process; parallel.dp, or the ranks
// over parallel.pp), and the micro-batch size the run takes (train.micro_batch_size, or
// default_micro_batch_size for that layout). 0 where that depends on an unknown job size
// or pp does not divide the ranks (which the preflight refuses).
int job_replicas(const TrainConfig& c, int ranks);
int job_micro_batch_size(const TrainConfig& c, int ranks);

}  // namespace coconut::launcher
