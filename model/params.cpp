// Parameter layout of the GPT-2 decoder: names, shapes and offsets in the flat buffer.
#include "model/gpt2.h"
#include "runtime/check.h"

namespace coconut::model {

void GPT2Config::validate() const {
  COCONUT_CHECK(vocab_size > 0, "model.vocab_size must be > 0 (got {})", vocab_size);
  COCONUT_CHECK(max_positions > 0, "model.max_positions must be > 0 (got {})", max_positions);
  COCONUT_CHECK(n_layer > 0, "model.n_layer must be > 0 (got {})", n_layer);
  COCONUT_CHECK(n_head > 0, "model.n_head must be > 0 (got {})", n_head);
  COCONUT_CHECK(d_model > 0 && d_model % n_head == 0,
                "model.d_model must be a positive multiple of n_head (got d_model {} and n_head {})", d_model,
                n_head);
  COCONUT_CHECK(layer_norm_eps > 0, "model.layer_norm_eps must be > 0 (got {})", layer_norm_eps);
  COCONUT_CHECK(dropout >= 0 && dropout < 1, "model.dropout must be in [0, 1) (got {})", dropout);
  COCONUT_CHECK(thought_scale > 0 && thought_scale <= 1000, "model.thought_scale must be in (0, 1000] (got {})",
                thought_scale);
}

ParamLayout::ParamLayout(const GPT2Config& config) {
  config.validate();
  const int64_t C = config.d_model;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    TensorSpec spec;
    spec.numel = 1;
    for (int64_t d : shape) spec.numel *= static_cast<size_t>(d);
    spec.is_matrix = shape.size() == 2;
    spec.name = std::move(name);
    spec.shape = std::move(shape);
    spec.offset = total_;
    total_ += spec.numel;
    tensors_.push_back(std::move(spec));
  };
  add("wte.weight", {config.vocab_size, C});
  add("wpe.weight", {config.max_positions, C});
  for (int l = 0; l < config.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    add(p + "ln_1.weight", {C});
    add(p + "ln_1.bias", {C});
    add(p + "attn.c_attn.weight", {C, 3 * C});
    add(p + "attn.c_attn.bias", {3 * C});
    add(p + "attn.c_proj.weight", {C, C});
    add(p + "attn.c_proj.bias", {C});
    add(p + "ln_2.weight", {C});
    add(p + "ln_2.bias", {C});
    add(p + "mlp.c_fc.weight", {C, 4 * C});
    add(p + "mlp.c_fc.bias", {4 * C});
    add(p + "mlp.c_proj.weight", {4 * C, C});
    add(p + "mlp.c_proj.bias", {C});
  }
  add("ln_f.weight", {C});
  add("ln_f.bias", {C});
}

const TensorSpec& ParamLayout::find(const std::string& name) const {
  for (const TensorSpec& t : tensors_)
    if (t.name == name) return t;
  COCONUT_FAIL("no parameter named '{}' in the GPT-2 layout", name);
}

ParamView bind_params(const GPT2Config& config, float* base) {
  // Walks the same order as ParamLayout; the layout is the single source of offsets.
  ParamLayout layout(config);
  auto at = [&](const std::string& name) { return base + layout.find(name).offset; };
  ParamView v;
  v.wte = at("wte.weight");
  v.wpe = at("wpe.weight");
  for (int l = 0; l < config.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    LayerView L;
    L.ln1_w = at(p + "ln_1.weight");
    L.ln1_b = at(p + "ln_1.bias");
    L.qkv_w = at(p + "attn.c_attn.weight");
    L.qkv_b = at(p + "attn.c_attn.bias");
    L.attn_proj_w = at(p + "attn.c_proj.weight");
    L.attn_proj_b = at(p + "attn.c_proj.bias");
    L.ln2_w = at(p + "ln_2.weight");
    L.ln2_b = at(p + "ln_2.bias");
    L.fc_w = at(p + "mlp.c_fc.weight");
    L.fc_b = at(p + "mlp.c_fc.bias");
    L.fc_proj_w = at(p + "mlp.c_proj.weight");
    L.fc_proj_b = at(p + "mlp.c_proj.bias");
    v.layers.push_back(L);
  }
  v.lnf_w = at("ln_f.weight");
  v.lnf_b = at("ln_f.bias");
  return v;
}

}  // namespace coconut::model
