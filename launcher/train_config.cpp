// Reading the training configuration (see train_config.h).
#include "launcher/train_config.h"

#include <algorithm>

#include "curriculum/prontoqa_generator.h"
#include "curriculum/running_sum_generator.h"
#include "runtime/check.h"

namespace coconut::launcher {

TrainConfig read_train_config(Config& c) {
  TrainConfig t;
  t.source = c.source();
  t.run_dir = c.get_string("run.dir", t.run_dir);
  t.seed = static_cast<uint64_t>(c.get_int64("run.seed", 1, 0, INT64_MAX));
  t.threads = c.get_int("run.threads", 0, 0, 1024);

  t.model.n_layer = c.get_int("model.n_layer", 4, 1, 1024);
  t.model.n_head = c.get_int("model.n_head", 4, 1, 1024);
  t.model.d_model = c.get_int("model.d_model", 128, 1, 65536);
  t.model.max_positions = c.get_int("model.max_positions", 512, 1, 1 << 20);
  t.model.dropout = static_cast<float>(c.get_double("model.dropout", 0.0, 0.0, 0.99));
  t.model.thought_scale = static_cast<float>(c.get_double("model.thought_scale", 1.0, 1e-6, 1000.0));
  t.model.vocab_size = 0;  // from the tokenizer (or the pretrained model)
  t.init_from = c.get_string("model.init_from", "");

  DataConfig& d = t.data;
  d.kind = c.get_string("data.kind", d.kind, {"prosqa", "prontoqa", "running_sum", "file"});
  // Each generator's own shape key: set for another kind it would be silently ignored.
  COCONUT_CHECK(!c.has("data.digits") || d.kind == "running_sum",
                "{}: data.digits sets the running-sum generator: it needs data.kind: running_sum (got {})", t.source,
                d.kind);
  COCONUT_CHECK(!c.has("data.hops") || d.kind == "prontoqa",
                "{}: data.hops sets the ProntoQA generator: it needs data.kind: prontoqa (got {})", t.source, d.kind);
  d.digits = c.get_int("data.digits", d.digits, 2, curriculum::kMaxRunningSumDigits);
  d.hops = c.get_int("data.hops", d.hops, 1, curriculum::kMaxProntoQAHops);
  d.train_file = c.get_string("data.train_file", "");
  d.valid_file = c.get_string("data.valid_file", "");
  d.test_file = c.get_string("data.test_file", "");
  d.generate_train = c.get_int("data.generate_train", d.generate_train, 1, 10000000);
  d.generate_valid = c.get_int("data.generate_valid", d.generate_valid, 0, 10000000);
  d.generate_test = c.get_int("data.generate_test", d.generate_test, 0, 10000000);
  d.generate_seed = static_cast<uint64_t>(c.get_int64("data.generate_seed", 2024, 0, INT64_MAX));
  d.tokenizer = c.get_string("data.tokenizer", d.tokenizer, {"word", "bpe"});
  d.bpe_dir = c.get_string("data.bpe_dir", "");

  curriculum::CurriculumConfig& cc = t.curriculum;
  cc.method = curriculum::parse_method(
      c.get_string("curriculum.method", "coconut",
                   {"coconut", "cot", "no_cot", "pause", "pause_as_thought", "no_curriculum", "no_thought", "icot"}));
  cc.c_thought = c.get_int("curriculum.c_thought", 1, 0, 64);
  cc.max_latent_stage = c.get_int("curriculum.max_latent_stage", 6, 0, 1000);
  cc.epochs_per_stage = c.get_int("curriculum.epochs_per_stage", 3, 1, 100000);
  cc.pad_latent_to_max = c.get_bool("curriculum.pad_latent_to_max", false);
  cc.uniform_prob = c.get_double("curriculum.uniform_prob", 0.0, 0.0, 1.0);
  cc.question_loss = c.get_bool("curriculum.question_loss", false);
  cc.icot_tokens_per_epoch = c.get_int("curriculum.icot_tokens_per_epoch", 8, 1, 100000);
  t.eot_classifier = c.get_bool("curriculum.eot_classifier", false);
  t.eot_loss_weight = c.get_double("curriculum.eot_loss_weight", 1.0, 0.0, 1e6);

  t.epochs = c.get_int("train.epochs", 1, 1, 1000000);
  t.max_minutes = c.get_double("train.max_minutes", 0.0, 0.0, 1e7);
  t.device = c.get_string("train.device", "cpu", {"cpu", "cuda"});
  t.precision = c.get_string("train.precision", "fp32", {"fp32", "bf16"});
  t.attention = c.get_string("train.attention", "auto", {"auto", "fp32", "bf16", "fused"});
  t.cuda_graphs = c.get_bool("train.cuda_graphs", false);
  t.pad_columns = c.get_int("train.pad_columns", 0, 0, 4096);
  t.batch_size = c.get_int("train.batch_size", 32, 1, 1 << 20);
  t.micro_batch_size = c.get_int("train.micro_batch_size", 0, 0, 1 << 20);  // 0: default_micro_batch_size
  t.adamw.lr = static_cast<float>(c.get_double("train.lr", 1e-4, 0.0, 10.0));
  t.adamw.weight_decay = static_cast<float>(c.get_double("train.weight_decay", 0.01, 0.0, 10.0));
  t.lr_schedule.kind = c.get_string("train.lr_schedule", "constant", {"constant", "cosine"});
  t.lr_schedule.warmup_steps = c.get_int64("train.warmup_steps", 0, 0, INT64_MAX);
  t.lr_schedule.min_lr = c.get_double("train.min_lr", 0.0, 0.0, 10.0);
  COCONUT_CHECK(t.lr_schedule.min_lr <= t.adamw.lr, "{}: train.min_lr {} is above train.lr {}", c.source(),
                t.lr_schedule.min_lr, t.adamw.lr);
  t.adamw.beta1 = static_cast<float>(c.get_double("train.beta1", 0.9, 0.0, 0.999999));
  t.adamw.beta2 = static_cast<float>(c.get_double("train.beta2", 0.999, 0.0, 0.999999999));
  t.adamw.eps = static_cast<float>(c.get_double("train.eps", 1e-8, 0.0, 1.0));
  t.adamw.decay_matrices_only = c.get_bool("train.decay_matrices_only", false);
  t.grad_clip = c.get_double("train.grad_clip", 0.0, 0.0, 1e6);
  t.skip_nonfinite_steps = c.get_int("train.skip_nonfinite_steps", 0, 0, 1000000);
  t.reset_optimizer = c.get_string("train.reset_optimizer", "stage", {"stage", "epoch", "never"});
  t.log_every = c.get_int("train.log_every", 10, 1, 1 << 30);

  t.pp = c.get_int("parallel.pp", 1, 1, 4096);
  t.dp = c.get_int("parallel.dp", 0, 0, 1 << 20);
  t.schedule = c.get_string("parallel.schedule", "ring", {"gpipe", "gpipe-pass", "1f1b", "ring"});
  t.max_in_flight = c.get_int("parallel.max_in_flight", 0, 0, 1 << 20);
  t.activations = c.get_string("parallel.activations", "keep", {"keep", "recompute"});
  t.gpu_comm = c.get_string("parallel.gpu_comm", "nccl", {"nccl", "mpi"});

  t.eval_every = c.get_int("eval.every_epochs", 1, 0, 1000000);
  t.eval_batch_size = c.get_int("eval.batch_size", 32, 1, 1 << 20);
  t.eval_max_items = c.get_int("eval.max_items", 0, 0, 1 << 30);
  t.max_new_tokens = c.get_int("eval.max_new_tokens", 64, 1, 1 << 20);
  t.eval_thought_tokens = c.get_int("eval.thought_tokens", 0, 0, 1000);
  t.eval_keep_best = c.get_bool("eval.keep_best", false);

  CheckpointConfig& k = t.checkpoint;
  k.dir = c.get_string("checkpoint.dir", "");
  k.every_steps = c.get_int64("checkpoint.every_steps", 0, 0, INT64_MAX);
  k.at_epoch_end = c.get_bool("checkpoint.at_epoch_end", false);
  k.keep_last = c.get_int("checkpoint.keep_last", 3, 0, 1 << 20);
  k.async = c.get_bool("checkpoint.async", false);
  k.resume = c.get_string("checkpoint.resume", "never");  // never | auto | a path
  k.stop_after_steps = c.get_int64("checkpoint.stop_after_steps", 0, 0, INT64_MAX);
  c.finish();

  COCONUT_CHECK(t.model.d_model % t.model.n_head == 0,
                "{}: model.d_model ({}) must be a multiple of model.n_head ({})", t.source, t.model.d_model,
                t.model.n_head);
  // On the CPU every op is fp32: a bf16 or attention setting there would be silently ignored.
  COCONUT_CHECK(t.device == "cuda" || (t.precision == "fp32" && t.attention == "auto"),
                "{}: train.precision and train.attention choose the GPU's kernels: they need train.device: cuda "
                "(got precision {}, attention {} on the CPU)", t.source, t.precision, t.attention);
  COCONUT_CHECK(!t.cuda_graphs || t.device == "cuda",
                "{}: train.cuda_graphs captures the GPU's training steps: it needs train.device: cuda", t.source);
  COCONUT_CHECK(!t.cuda_graphs || t.pp == 1,
                "{}: train.cuda_graphs: pipeline stages on GPUs run without CUDA graphs (got parallel.pp {})",
                t.source, t.pp);
  COCONUT_CHECK(t.attention == "auto" || t.attention == "fp32" || t.precision == "bf16",
                "{}: train.attention: {} needs train.precision: bf16 (bf16 q|k|v)", t.source, t.attention);
  COCONUT_CHECK(t.micro_batch_size == 0 || t.batch_size % t.micro_batch_size == 0,
                "{}: train.batch_size ({}) must be a multiple of train.micro_batch_size ({})", t.source, t.batch_size,
                t.micro_batch_size);
  COCONUT_CHECK(!t.eot_classifier || cc.feeds_back(),
                "{}: curriculum.eot_classifier needs continuous thoughts (method coconut or no_curriculum), not '{}'",
                t.source, curriculum::method_name(cc.method));
  COCONUT_CHECK(t.pp <= t.model.n_layer || !t.init_from.empty(),
                "{}: parallel.pp ({}) is larger than model.n_layer ({}): every pipeline stage needs a layer", t.source,
                t.pp, t.model.n_layer);
  COCONUT_CHECK(!t.checkpoint.resume.empty(), "{}: checkpoint.resume must be never, auto or a checkpoint path",
                t.source);
  COCONUT_CHECK(d.kind != "file" || !d.train_file.empty(), "{}: data.kind 'file' needs data.train_file", t.source);
  COCONUT_CHECK(d.tokenizer != "bpe" || !d.bpe_dir.empty(), "{}: data.tokenizer 'bpe' needs data.bpe_dir", t.source);
  COCONUT_CHECK(!t.eval_keep_best || (d.kind == "file" ? !d.valid_file.empty() : d.generate_valid > 0),
                "{}: eval.keep_best chooses by validation accuracy: it needs a validation split (data.valid_file, or "
                "data.generate_valid > 0)", t.source);
  t.digest = c.digest();
  t.effective = c.canonical_json();
  return t;
}

int default_micro_batch_size(int batch_size, int pp, int dp) {
  const int wanted = std::max(1, dp) * (pp > 1 ? 2 * pp : 1);
  for (int m = batch_size; m > 1; --m)
    if (batch_size % m == 0 && batch_size / m >= wanted) return m;
  return 1;
}

int job_replicas(const TrainConfig& c, int ranks) {
  if (ranks == 1) return 1;
  if (c.dp > 0) return c.dp;
  return ranks > 1 && ranks % c.pp == 0 ? ranks / c.pp : 0;
}

int job_micro_batch_size(const TrainConfig& c, int ranks) {
  if (c.micro_batch_size > 0) return c.micro_batch_size;
  const int dp = job_replicas(c, ranks);
  return dp > 0 ? default_micro_batch_size(c.batch_size, ranks == 1 ? 1 : c.pp, dp) : 0;
}

}  // namespace coconut::launcher
