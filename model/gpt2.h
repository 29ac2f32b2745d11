// GPT-2 style decoder on the CPU: parameters in one flat buffer with named views,
// and forward/backward over a contiguous column range [a, b) of every sequence in a
// batch, attending to the keys and values of all earlier columns (the KV cache).
//
// This range primitive is what every Coconut latent pass is built from: pass 0 runs
// [0, f), each latent pass one column, the final pass the rest. The KV cache is simply
// the stored q|k|v activations of earlier columns, so backpropagation through the
// cache is the accumulation of dK/dV into those stored columns' gradients
// (Activations::dqkv) before the earlier passes run their backward.
//
// Layout of activations is time-major: row r = t * B + b for column t of sequence b,
// so the rows of one pass [a, b) are contiguous ([a*B, b*B)) and one GEMM covers them.
//
// A pipeline stage (DESIGN.md 4) is a contiguous range of layers [l0, l1): the same
// range primitive restricted to those layers (forward_stage / backward_stage), so one
// implementation serves the whole model and every stage of parallel/executor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/memory_meter.h"
#include "runtime/zero_pages.h"

namespace coconut {
class CounterRng;
}

namespace coconut::model {

struct GPT2Config {
  int vocab_size = 0;
  int max_positions = 0;  // n_positions: rows of the position embedding
  int n_layer = 0;
  int n_head = 0;
  int d_model = 0;        // n_embd
  float layer_norm_eps = 1e-5f;
  // Drop probability of Hugging Face GPT-2's embd_pdrop, attn_pdrop and resid_pdrop
  // (one value for all three, as the Coconut reference uses), in [0, 1). Applied only
  // in forwards whose Activations enable it (training), never at evaluation.
  float dropout = 0;
  // A continuous thought enters the next pass as thought_scale times the final-norm
  // hidden state it comes from (the paper: 1). Not part of the weights' file: the run's
  // configuration (model.thought_scale) sets it, as it does the dropout.
  float thought_scale = 1;

  void validate() const;  // throws coconut::Error naming the bad field
  int head_dim() const { return d_model / n_head; }
};

// One named tensor of the flat parameter buffer. Names and shapes follow Hugging Face
// GPT2LMHeadModel's state dict without the "transformer." prefix; matrices use its
// Conv1D layout [in, out], so a linear layer computes y = x W + b.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  size_t offset = 0;  // in floats, from the start of the flat buffer
  size_t numel = 0;
  bool is_matrix = false;  // 2-D weight (the "matrices only" weight-decay option)
};

// Order: wte, wpe, then per layer ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc,
// mlp.c_proj (weight then bias each), then ln_f. A contiguous range of layers is a
// contiguous slice of the buffer, which is what pipeline stages and shards cut.
class ParamLayout {
 public:
  explicit ParamLayout(const GPT2Config& config);
  const std::vector<TensorSpec>& tensors() const { return tensors_; }
  const TensorSpec& find(const std::string& name) const;  // throws if absent
  size_t total() const { return total_; }

 private:
  std::vector<TensorSpec> tensors_;
  size_t total_ = 0;
};

// Named views into a flat buffer laid out by ParamLayout (used for weights and grads).
struct LayerView {
  float* ln1_w; float* ln1_b;
  float* qkv_w; float* qkv_b;            // [C, 3C], [3C]
  float* attn_proj_w; float* attn_proj_b;  // [C, C], [C]
  float* ln2_w; float* ln2_b;
  float* fc_w; float* fc_b;              // [C, 4C], [4C]
  float* fc_proj_w; float* fc_proj_b;    // [4C, C], [C]
};
struct ParamView {
  float* wte;  // [V, C], also the LM head (tied)
  float* wpe;  // [max_positions, C]
  std::vector<LayerView> layers;
  float* lnf_w; float* lnf_b;
};
ParamView bind_params(const GPT2Config& config, float* base);

}  // namespace coconut::model

namespace coconut::model {

// What a training forward keeps for the backward (DESIGN.md 4), per micro-stage:
//   Keep       every layer keeps all its activations of every pass until the backward.
//   Recompute  per layer only what later passes and the backward cannot cheaply
//              rebuild stays with the batch: q|k|v (the KV cache), its gradient dqkv,
//              and the layer output res_out (the next layer's input: the checkpoint
//              its recomputation starts from), plus x0 and the final-norm states. The
//              layer's other activations of a pass live in an ActivationWorkspace that
//              holds one layer of one pass and is shared by every layer and every batch
//              of a stage; backward_stage re-runs each layer's forward into it right
//              before that layer's backward. The rerun is bit-identical (same inputs,
//              same ops, dropout masks keyed by position), so gradients equal Keep's
//              bit for bit, for about 1/3 more compute.
enum class ActivationPolicy { Keep, Recompute };
// "keep" | "recompute"; anything else is an error naming the choices.
ActivationPolicy parse_activation_policy(const std::string& name);
const char* activation_policy_name(ActivationPolicy policy);

// What one layer keeps of one batch, time-major [T, B, ...]. The cache buffers (qkv,
// dqkv) and res_out always span all T*B rows; the per-pass buffers (all the others)
// span the rows of Activations' pass window: all rows under Keep, the running pass's
// rows in the workspace under Recompute.
struct LayerActivations {
  float* ln1; float* ln1_mean; float* ln1_rstd;  // [T,B,C], [T,B], [T,B]
  float* qkv;                                    // [T,B,3C]: also the KV cache
  float* probs;                                  // [T,B,H,T] attention weights (training only)
  float* att_out;                                // [T,B,C] before the output projection
  float* res_mid;                                // [T,B,C] residual after attention
  float* ln2; float* ln2_mean; float* ln2_rstd;
  float* fc;                                     // [T,B,4C] before GELU
  float* gelu;                                   // [T,B,4C]
  float* res_out;                                // [T,B,C] layer output
  float* dqkv;                                   // [T,B,3C] gradient of q|k|v (training only)
};

// The per-pass buffers of one layer for one pass at a time, shared by every layer and
// every batch (micro-batch) of a stage under ActivationPolicy::Recompute: one op runs
// at a time, and whatever a layer leaves here is rebuilt before its backward reads it.
// Sized for the widest pass it has seen (it grows, never shrinks).
class ActivationWorkspace {
 public:
  size_t bytes() const { return storage_.capacity() * sizeof(float); }

 private:
  friend class Activations;
  MeteredVector<float> storage_;
};

// Activations of a batch of B sequences of T columns, plus the per-column inputs that
// the passes share: position ids and the key mask. In training every layer keeps its
// own buffers for the backward (Keep) or only its cache (Recompute); at inference only
// q|k|v (the KV cache) is kept per layer and the other buffers are shared scratch.
class Activations {
 public:
  Activations() = default;
  // Layers [first_layer, end_layer) get buffers (end_layer -1: through the last layer);
  // a pipeline stage keeps only its own layers, the other entries of `layers` stay null.
  // The final-norm buffers (lnf) exist only when end_layer is the model's last layer.
  void resize(const GPT2Config& config, int B, int T, bool training, int first_layer = 0, int end_layer = -1,
              ActivationPolicy policy = ActivationPolicy::Keep);
  // Zeroes the gradients that the passes accumulate into (dqkv); call before a backward.
  void zero_grads();
  // Recompute: points the per-pass buffers of every layer at the workspace for the rows
  // of columns [a, b), growing it as needed (forward_stage / backward_stage call it).
  void bind_pass(const GPT2Config& config, int a, int b);
  // Floats resize() allocates for these arguments (the memory model of the policies).
  static int64_t floats(const GPT2Config& config, int B, int T, bool training, int first_layer, int end_layer,
                        ActivationPolicy policy);
  // Floats one row of a pass needs in an ActivationWorkspace (one layer's buffers).
  static int64_t workspace_floats_per_row(const GPT2Config& config, int T);
  size_t bytes() const { return storage_.capacity() * sizeof(float); }

  int B = 0, T = 0, C = 0;
  bool training = false;
  ActivationPolicy policy = ActivationPolicy::Keep;
  // Recompute: the shared workspace (set by the owner before a forward; not owned).
  ActivationWorkspace* workspace = nullptr;
  int first_layer = 0, end_layer = 0;  // the layers that have buffers
  // The rows [pass_row0, pass_row0 + pass_rows) that the per-pass buffers hold: all
  // rows under Keep and at inference, the running pass under Recompute.
  int64_t pass_row0 = 0, pass_rows = 0;
  std::vector<int> pos_ids;        // [T*B], row t*B+s
  std::vector<uint8_t> key_mask;   // [T*B], 0 for padding

  // Dropout (config.dropout > 0) is applied only when enabled, and only to training
  // activations: off by default, so evaluation and generation never drop, and a trainer
  // must name the step explicitly (masks that silently repeated every step would be a
  // quiet bug). Masks are keyed by (seed, step, sample id, position id, layer, site,
  // element) and by nothing about the batch's split into passes, stages or ranks.
  // The real tokens of one sample must have distinct position ids (0..len-1).
  bool dropout_enabled = false;
  uint64_t dropout_seed = 0;
  uint64_t dropout_step = 0;          // the training step: fresh masks every step
  std::vector<int64_t> sample_ids;    // [B] global id of each sequence; resize sets 0..B-1
  // [T,B,C] input of layer first_layer: the embedding output on the stage that embeds,
  // the residual stream received from the previous stage on the others.
  float* x0 = nullptr;
  std::vector<LayerActivations> layers;
  float* lnf = nullptr;            // [T,B,C] final-norm hidden states (fed back as thoughts)
  float* lnf_mean = nullptr;
  float* lnf_rstd = nullptr;

 private:
  MeteredVector<float> storage_;
};

// Scratch for the backward of one pass, sized for the largest pass (all T columns).
// The keys of the dropout masks above, for another backend that must draw the same
// masks (model/cuda_gpt2.cpp): the counter stream of a row (a token of a sample), and
// the first stream index of a site: 0 embedding (layer -1), 1 attention probabilities,
// 2 attention residual, 3 MLP residual.
CounterRng dropout_row_stream(uint64_t seed, uint64_t step, int64_t sample_id, int pos_id);
uint64_t dropout_site_first(int layer, int site);

struct BackwardScratch {
  MeteredVector<float> dres, dln, datt, dfc, dgelu;
  MeteredVector<float> ddrop;  // a dropped residual-branch gradient (empty when dropout is 0)
  void resize(const GPT2Config& config, int rows);
};

// The decoder: parameters and their gradients as flat buffers with named views.
// Both buffers start as untouched zero pages (runtime/zero_pages.h). Under pipeline
// parallelism a rank inits, loads, reads and updates only its stage's slices
// (parallel/partition.h), so the other stages' parameters and gradients take no
// memory there, while every rank keeps the same offsets.
class GPT2 {
 public:
  explicit GPT2(const GPT2Config& config);
  GPT2(const GPT2&) = delete;
  GPT2& operator=(const GPT2&) = delete;

  const GPT2Config& config() const { return config_; }
  const ParamLayout& layout() const { return layout_; }
  float* params() { return params_.data(); }
  const float* params() const { return params_.data(); }
  float* grads() { return grads_.data(); }
  const float* grads() const { return grads_.data(); }
  size_t num_params() const { return params_.size(); }
  const ParamView& weights() const { return w_; }
  const ParamView& grad_view() const { return g_; }

  // GPT-2 initialisation: N(0, 0.02) for matrices and embeddings, residual output
  // projections N(0, 0.02 / sqrt(2 n_layer)), biases 0, layer norms 1 and 0.
  // Values come from a counter-based generator keyed by (seed, tensor index, element).
  void init_weights(uint64_t seed) { init_weights(seed, 0, num_params()); }
  // Only elements [begin, end) (what a pipeline rank holds); each takes the value the
  // whole model's init gives it.
  void init_weights(uint64_t seed, size_t begin, size_t end);
  void zero_grads();
  // Zero the gradients of elements [begin, end) only (a pipeline stage's slice).
  void zero_grads(size_t begin, size_t end);

  // out[r] = wte[tokens[r]] for n rows; backward accumulates d_embeds into wte's grad.
  void embed_tokens(const int* tokens, int n, float* out) const;
  void embed_tokens_backward(const int* tokens, int n, const float* d_embeds);
  // A continuous thought's input row from the final-norm hidden state it comes from:
  // input = thought_scale * hidden (one row of C); backward adds thought_scale * d_input
  // into d_hidden. Every place that feeds a thought back goes through these two.
  void feed_thought(const float* hidden, float* input) const;
  void feed_thought_backward(const float* d_input, float* d_hidden) const;

  // A pipeline stage: the contiguous layers [l0, l1) over columns [a, b) of every
  // sequence in acts. `in` holds the (b-a)*B input rows in time-major order: with
  // `embed` (only for l0 == 0) the input embeddings (token embeddings or fed-back
  // thoughts), to which the position embedding (and embedding dropout) is added;
  // without it the residual stream of those rows from the previous stage (copied into
  // acts.x0). The output rows [a*B, b*B) are acts.lnf with `final_norm` (only for
  // l1 == n_layer: the hidden states fed back and given to the LM head), else the
  // residual stream acts.layers[l1-1].res_out for the next stage.
  // A stage reads and, in the backward, writes only its own parameters: wte is not
  // touched here (the LM head and the token embedding are separate calls), wpe only
  // with `embed`, ln_f only with `final_norm`.
  void forward_stage(Activations& acts, int a, int b, int l0, int l1, const float* in, bool embed,
                     bool final_norm) const;
  // Backward of forward_stage: d_out is the gradient w.r.t. the stage's output rows of
  // the pass; writes d_in (the gradient w.r.t. `in`, overwritten), accumulates the
  // stage's parameter gradients and dK/dV of columns < a into acts' dqkv. Passes must
  // run their backward in the reverse order of their forward, on every stage. Under
  // ActivationPolicy::Recompute (acts.workspace set) each layer's forward of the pass is
  // re-run into the workspace right before that layer's backward.
  void backward_stage(Activations& acts, int a, int b, int l0, int l1, const float* d_out, float* d_in,
                      BackwardScratch& scratch, bool embed, bool final_norm);

  // The whole model as one stage: forward_stage(acts, a, b, 0, n_layer, in_embeds, true, true).
  // Forward of columns [a, b) of every sequence in acts: in_embeds holds the
  // (b-a)*B input embeddings in time-major order (token embeddings or fed-back
  // thoughts); the position embedding is added here. Writes acts rows [a*B, b*B),
  // among them acts.lnf (the final-norm hidden states).
  void forward_range(Activations& acts, int a, int b, const float* in_embeds) const;
  // backward_stage over every layer. Backward of columns [a, b): d_hidden is the
  // gradient w.r.t. acts.lnf rows of the pass; writes d_in_embeds (the gradient
  // w.r.t. in_embeds, overwritten), accumulates
  // parameter gradients, and accumulates dK/dV of columns < a into acts' dqkv.
  // Passes must run their backward in the reverse order of their forward.
  void backward_range(Activations& acts, int a, int b, const float* d_hidden, float* d_in_embeds,
                      BackwardScratch& scratch);

  // Tied LM head + cross-entropy on n gathered hidden rows: returns
  // sum(-log p(target)) * scale, writes d_hidden (overwritten, [n, C]) and accumulates
  // wte's gradient. With d_hidden null only the loss is computed (no gradient is
  // touched). logits_scratch needs n * vocab_size floats.
  float lm_head_loss(const float* hidden, const int* targets, int n, float scale, float* d_hidden,
                     float* logits_scratch);
  // logits[n, V] = hidden wte^T (inference).
  void lm_head_logits(const float* hidden, int n, float* logits) const;

 private:
  GPT2Config config_;
  ParamLayout layout_;
  // Fresh zero pages, backed by memory only where written: a pipeline rank inits, loads,
  // updates and differentiates only the slices it holds, so only those take memory.
  ZeroPageFloats params_, grads_;
  ParamView w_, g_;
};

}  // namespace coconut::model
