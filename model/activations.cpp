// Activation storage of the GPT-2 decoder (model/gpt2.h): the layout of Activations
// under each ActivationPolicy, the recompute workspace binding, and the backward
// scratch. Every buffer is a MeteredVector, so runtime/memory_meter.h counts its bytes.
#include <cstring>

#include "model/gpt2.h"
#include "runtime/check.h"

namespace coconut::model {

// ---------------------------------------------------------------- activations

namespace {

// Floats per row of one layer's per-pass buffers: ln1 (+ mean, rstd), the attention
// probabilities (training only), att_out, res_mid, ln2 (+ mean, rstd), fc, gelu, and
// (except in the recompute workspace, where the layer output stays with the batch) res_out.
int64_t pass_floats_per_row(int64_t C, int64_t H, int64_t T, bool with_probs, bool with_res_out) {
  return 12 * C + 4 + (with_probs ? H * T : 0) + (with_res_out ? C : 0);
}

// Carves one layer's per-pass buffers for R rows from cursor (advancing it).
void carve_pass_buffers(LayerActivations& A, float*& cursor, int64_t R, int64_t C, int64_t H, int64_t T,
                        bool with_probs, bool with_res_out) {
  auto take = [&](int64_t n) {
    float* p = cursor;
    cursor += n;
    return p;
  };
  A.ln1 = take(R * C); A.ln1_mean = take(R); A.ln1_rstd = take(R);
  A.probs = with_probs ? take(R * H * T) : nullptr;
  A.att_out = take(R * C); A.res_mid = take(R * C);
  A.ln2 = take(R * C); A.ln2_mean = take(R); A.ln2_rstd = take(R);
  A.fc = take(R * 4 * C); A.gelu = take(R * 4 * C);
  if (with_res_out) A.res_out = take(R * C);
}

}  // namespace

ActivationPolicy parse_activation_policy(const std::string& name) {
  if (name == "keep") return ActivationPolicy::Keep;
  if (name == "recompute") return ActivationPolicy::Recompute;
  COCONUT_FAIL("activation policy '{}' is not one of keep, recompute", name);
}

const char* activation_policy_name(ActivationPolicy policy) {
  return policy == ActivationPolicy::Recompute ? "recompute" : "keep";
}

int64_t Activations::floats(const GPT2Config& config, int batch, int columns, bool for_training, int l0, int l1,
                            ActivationPolicy policy) {
  if (l1 < 0) l1 = config.n_layer;
  const int64_t C = config.d_model, H = config.n_head, L = l1 - l0, R = static_cast<int64_t>(batch) * columns;
  // Training: every layer keeps its cache (q|k|v and its gradient) and its output, and
  // under Keep all its other per-pass buffers. Inference: q|k|v per layer, one shared
  // set of the rest (output included).
  int64_t per_layer = 3 * C;
  int64_t shared = 0;
  if (for_training) {
    per_layer = 7 * C + (policy == ActivationPolicy::Keep ? pass_floats_per_row(C, H, columns, true, false) : 0);
  } else {
    shared = pass_floats_per_row(C, H, columns, false, true);
  }
  const int64_t final_norm = l1 == config.n_layer ? C + 2 : 0;
  return R * (C + L * per_layer + shared + final_norm);  // x0 first
}

int64_t Activations::workspace_floats_per_row(const GPT2Config& config, int columns) {
  return pass_floats_per_row(config.d_model, config.n_head, columns, true, false);
}

void Activations::resize(const GPT2Config& config, int batch, int columns, bool for_training, int l0, int l1,
                         ActivationPolicy pol) {
  COCONUT_CHECK(batch > 0 && columns > 0, "activations need B > 0 and T > 0 (got B={} T={})", batch, columns);
  COCONUT_CHECK(columns <= config.max_positions, "sequence of {} columns exceeds model.max_positions {}", columns,
                config.max_positions);
  if (l1 < 0) l1 = config.n_layer;
  COCONUT_CHECK(0 <= l0 && l0 < l1 && l1 <= config.n_layer, "activation layers [{}, {}) outside the model's [0, {})",
                l0, l1, config.n_layer);
  B = batch;
  T = columns;
  C = config.d_model;
  training = for_training;
  policy = pol;
  first_layer = l0;
  end_layer = l1;
  const int64_t H = config.n_head, R = static_cast<int64_t>(B) * T;
  const bool recompute = training && policy == ActivationPolicy::Recompute;
  const int64_t total = floats(config, B, T, training, l0, l1, policy);
  // A training batch's length changes every step: reuse a large-enough buffer as it is
  // (every buffer is written before it is read: the passes cover every column, and the
  // gradients are zeroed by zero_grads) rather than hand it back and zero a new one, since
  // fresh pages cost a page fault each and zeroing the probabilities a memset of B H T^2
  // per layer (together a quarter of a small model's step). Otherwise release first, so
  // that a resize never holds the old and the new buffers at once.
  if (storage_.capacity() < static_cast<size_t>(total)) {
    storage_.clear();
    storage_.shrink_to_fit();
    storage_.assign(static_cast<size_t>(total), 0.f);
  } else {
    storage_.resize(static_cast<size_t>(total));
  }
  pos_ids.assign(R, 0);
  key_mask.assign(R, 1);
  sample_ids.resize(B);
  for (int s = 0; s < B; ++s) sample_ids[s] = s;

  float* cursor = storage_.data();
  auto take = [&](int64_t n) {
    float* p = cursor;
    cursor += n;
    return p;
  };
  x0 = take(R * C);
  layers.assign(config.n_layer, {});
  // The per-pass buffers: every layer's own over all rows (Keep), one shared set at
  // inference (aliasing is safe: a layer reads its input, the previous res_out, before
  // it writes its own), or the workspace, bound pass by pass (Recompute).
  LayerActivations shared{};
  if (!training) carve_pass_buffers(shared, cursor, R, C, H, T, /*with_probs=*/false, /*with_res_out=*/true);
  for (int l = l0; l < l1; ++l) {
    LayerActivations& A = layers[l];
    if (!training) {
      A = shared;
    } else {
      if (!recompute) carve_pass_buffers(A, cursor, R, C, H, T, /*with_probs=*/true, /*with_res_out=*/false);
      A.res_out = take(R * C);
      A.dqkv = take(R * 3 * C);
    }
    A.qkv = take(R * 3 * C);
  }
  pass_row0 = 0;
  pass_rows = recompute ? 0 : R;
  lnf = lnf_mean = lnf_rstd = nullptr;
  if (l1 == config.n_layer) {
    lnf = take(R * C);
    lnf_mean = take(R);
    lnf_rstd = take(R);
  }
  COCONUT_CHECK(cursor == storage_.data() + total, "activation storage miscounted");
}

void Activations::bind_pass(const GPT2Config& config, int a, int b) {
  COCONUT_CHECK(training && policy == ActivationPolicy::Recompute,
                "bind_pass is for training activations under the recompute policy");
  COCONUT_CHECK(workspace, "activations under the recompute policy need a workspace (Activations::workspace)");
  COCONUT_CHECK(0 <= a && a < b && b <= T, "pass columns [{}, {}) outside the batch's [0, {})", a, b, T);
  const int64_t rows = static_cast<int64_t>(b - a) * B;
  MeteredVector<float>& storage = workspace->storage_;
  const size_t need = static_cast<size_t>(rows * workspace_floats_per_row(config, T));
  if (storage.size() < need) {
    storage.clear();  // released first: never the old and the new at once
    storage.shrink_to_fit();
    storage.resize(need);
  }
  // One set of buffers for all layers: a layer is rebuilt right before its backward.
  LayerActivations shared{};
  float* cursor = storage.data();
  carve_pass_buffers(shared, cursor, rows, C, config.n_head, T, /*with_probs=*/true, /*with_res_out=*/false);
  for (int l = first_layer; l < end_layer; ++l) {
    LayerActivations& A = layers[l];
    float* const kept[3] = {A.qkv, A.dqkv, A.res_out};
    A = shared;
    A.qkv = kept[0], A.dqkv = kept[1], A.res_out = kept[2];
  }
  pass_row0 = static_cast<int64_t>(a) * B;
  pass_rows = rows;
}

void Activations::zero_grads() {
  COCONUT_CHECK(training, "zero_grads on inference activations (resize with training = true)");
  for (int l = first_layer; l < end_layer; ++l)
    std::memset(layers[l].dqkv, 0, sizeof(float) * static_cast<size_t>(B) * T * 3 * C);
}

void BackwardScratch::resize(const GPT2Config& config, int rows) {
  const size_t C = config.d_model, R = rows;
  // Released first, so that growing never holds the old and new buffers at once.
  for (MeteredVector<float>* v : {&dres, &dln, &datt, &dfc, &dgelu, &ddrop}) {
    v->clear();
    v->shrink_to_fit();
  }
  dres.assign(R * C, 0.f);
  dln.assign(R * C, 0.f);
  datt.assign(R * C, 0.f);
  dfc.assign(R * 4 * C, 0.f);
  dgelu.assign(R * 4 * C, 0.f);
  ddrop.assign(config.dropout > 0 ? R * C : 0, 0.f);
}

}  // namespace coconut::model
