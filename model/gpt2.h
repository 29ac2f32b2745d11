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
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace coconut::model {

struct GPT2Config {
  int vocab_size = 0;
  int max_positions = 0;  // n_positions: rows of the position embedding
  int n_layer = 0;
  int n_head = 0;
  int d_model = 0;        // n_embd
  float layer_norm_eps = 1e-5f;

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
