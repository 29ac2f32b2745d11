// The GPT-2 decoder's range forward/backward and the tied LM head (activation storage:
// activations.cpp).
// Reads top-down like one pass: embeddings, then per layer
//   ln1 -> qkv -> attention (over the KV cache) -> projection + residual
//   ln2 -> fc -> GELU -> projection + residual
// then the final layer norm. The backward walks the same list in reverse. A pipeline
// stage runs the same code over its layers only: the embedding on the first stage, the
// final norm on the last (forward_stage / backward_stage; forward_range is all of it).
// With dropout (training), the embedding output, the attention probabilities and both
// residual branches are dropped as in Hugging Face GPT-2's training mode. Under the
// recompute activation policy the layer's forward (layer_forward) runs a second time in
// the backward, right before that layer's backward, into a one-layer workspace.
#include "model/gpt2.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "model/ops.h"
#include "runtime/blas.h"
#include "runtime/check.h"
#include "runtime/rng.h"

namespace coconut::model {

// ---------------------------------------------------------------- dropout

namespace {

constexpr uint64_t kDropoutStream = 0xD809u;

// One counter stream per row (a token of a sample) serves every dropout site of that
// row: a site's elements start at stream index (site id << 40), so sites never overlap
// (the largest site, attention, has n_head * max_positions elements, far below 2^40).
enum class Site : uint64_t { kEmbedding = 0, kAttnProbs = 1, kAttnResid = 2, kMlpResid = 3 };
uint64_t site_first(int layer, Site site) {
  return ((static_cast<uint64_t>(layer + 1) << 2) + static_cast<uint64_t>(site)) << 40;  // embedding: layer -1
}

bool dropout_active(const GPT2Config& config, const Activations& acts) {
  if (!acts.dropout_enabled || config.dropout == 0.f) return false;
  COCONUT_CHECK(acts.training, "dropout is enabled on inference activations (resize with training = true, or "
                               "disable dropout at evaluation)");
  COCONUT_CHECK(acts.sample_ids.size() == static_cast<size_t>(acts.B), "dropout needs {} sample ids, got {}",
                acts.B, acts.sample_ids.size());
  return true;
}

// The masks of a pass: one stream per row keyed by (seed, step, sample id, position id).
// Keying by the position id rather than the column makes the masks independent of the
// padding too, so a sample gets the same masks in any micro-batch, pass split, pipeline
// stage or data-parallel rank. Masks are recomputed in the backward from these streams
// instead of being stored: activation memory does not grow with dropout, and the cost
// is one Philox block per 4 elements, a few percent of a training step.
struct PassDropout {
  std::vector<CounterRng> streams;
  Dropout base;
  PassDropout(const GPT2Config& config, const Activations& acts, int64_t r0, int n) {
    streams.reserve(n);
    for (int r = 0; r < n; ++r) {
      const int64_t row = r0 + r;
      streams.emplace_back(acts.dropout_seed, std::initializer_list<uint64_t>{
                                                  kDropoutStream, acts.dropout_step,
                                                  static_cast<uint64_t>(acts.sample_ids[row % acts.B]),
                                                  static_cast<uint64_t>(acts.pos_ids[row])});
    }
    base.p = config.dropout;
    base.rows = streams.data();
    base.key_pos = acts.pos_ids.data();
    base.head_stride = config.max_positions;
  }
  Dropout at(int layer, Site site) const {
    Dropout d = base;
    d.first = site_first(layer, site);
    return d;
  }
};

}  // namespace

CounterRng dropout_row_stream(uint64_t seed, uint64_t step, int64_t sample_id, int pos_id) {
  return CounterRng(seed, {kDropoutStream, step, static_cast<uint64_t>(sample_id), static_cast<uint64_t>(pos_id)});
}
uint64_t dropout_site_first(int layer, int site) { return site_first(layer, static_cast<Site>(site)); }

// ---------------------------------------------------------------- parameters

GPT2::GPT2(const GPT2Config& config)
    : config_(config),
      layout_(config),
      params_(layout_.total()),
      grads_(layout_.total()) {
  w_ = bind_params(config_, params_.data());
  g_ = bind_params(config_, grads_.data());
}

void GPT2::init_weights(uint64_t seed, size_t begin, size_t end) {
  COCONUT_CHECK(begin <= end && end <= num_params(), "init_weights: elements [{}, {}) outside the {} parameters",
                begin, end, num_params());
  const float residual_std = 0.02f / std::sqrt(2.f * config_.n_layer);
  const auto& tensors = layout_.tensors();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorSpec& t = tensors[i];
    // The tensor's elements [k0, k1) that lie in [begin, end).
    const size_t k0 = std::max(begin, t.offset) - t.offset;
    const size_t k1 = std::min(end, t.offset + t.numel);
    if (t.offset + k0 >= k1) continue;
    const size_t count = k1 - t.offset;
    float* p = params_.data() + t.offset;
    const bool is_bias = t.name.ends_with(".bias");
    const bool is_norm = t.name.find("ln_") != std::string::npos;
    if (is_norm) {
      std::fill(p + k0, p + count, is_bias ? 0.f : 1.f);
    } else if (is_bias) {
      std::fill(p + k0, p + count, 0.f);
    } else {
      const bool residual_out = t.name.ends_with("c_proj.weight");
      const float std = residual_out ? residual_std : 0.02f;
      CounterRng rng(seed, {0x1417u, i});  // one stream per tensor: independent of layout
      for (size_t k = 0; k < count; ++k) {  // drawn from the tensor's start, kept from k0
        const float v = std * rng.normal();
        if (k >= k0) p[k] = v;
      }
    }
  }
}

void GPT2::zero_grads() { zero_grads(0, num_params()); }

void GPT2::zero_grads(size_t begin, size_t end) {
  COCONUT_CHECK(begin <= end && end <= num_params(), "zero_grads: elements [{}, {}) outside the {} parameters", begin,
                end, num_params());
  std::fill(grads_.data() + begin, grads_.data() + end, 0.f);
}

void GPT2::embed_tokens(const int* tokens, int n, float* out) const {
  const int C = config_.d_model;
  for (int r = 0; r < n; ++r) {
    COCONUT_CHECK(tokens[r] >= 0 && tokens[r] < config_.vocab_size, "token id {} outside the vocabulary [0, {})",
                  tokens[r], config_.vocab_size);
    std::memcpy(out + static_cast<int64_t>(r) * C, w_.wte + static_cast<int64_t>(tokens[r]) * C, sizeof(float) * C);
  }
}

void GPT2::embed_tokens_backward(const int* tokens, int n, const float* d_embeds) {
  // Sequential over rows: repeated tokens add into the same wte row in a fixed order.
  const int C = config_.d_model;
  for (int r = 0; r < n; ++r) {
    float* dw = g_.wte + static_cast<int64_t>(tokens[r]) * C;
    const float* d = d_embeds + static_cast<int64_t>(r) * C;
    for (int c = 0; c < C; ++c) dw[c] += d[c];
  }
}

void GPT2::feed_thought(const float* hidden, float* input) const {
  for (int c = 0; c < config_.d_model; ++c) input[c] = config_.thought_scale * hidden[c];
}

void GPT2::feed_thought_backward(const float* d_input, float* d_hidden) const {
  for (int c = 0; c < config_.d_model; ++c) d_hidden[c] += config_.thought_scale * d_input[c];
}

// ---------------------------------------------------------------- forward

namespace {

// The checks shared by a stage's forward and backward.
void check_stage(const GPT2Config& config, const Activations& acts, int a, int b, int l0, int l1, bool embed,
                 bool final_norm) {
  COCONUT_CHECK(0 <= a && a < b && b <= acts.T, "pass columns [{}, {}) outside the batch's [0, {})", a, b, acts.T);
  COCONUT_CHECK(0 <= l0 && l0 < l1 && l1 <= config.n_layer, "stage layers [{}, {}) outside the model's [0, {})", l0,
                l1, config.n_layer);
  COCONUT_CHECK(acts.first_layer <= l0 && l1 <= acts.end_layer,
                "stage layers [{}, {}) need activations of those layers; these hold [{}, {})", l0, l1,
                acts.first_layer, acts.end_layer);
  COCONUT_CHECK(!embed || l0 == 0, "only the stage starting at layer 0 can embed (this one starts at {})", l0);
  COCONUT_CHECK(!final_norm || l1 == config.n_layer,
                "only the stage ending at the last layer ({}) can apply the final norm (this one ends at {})",
                config.n_layer, l1);
}

// The rows of one pass [a, b) of one batch: r0 indexes the buffers that span every row
// (x0, qkv, dqkv, res_out, lnf), w0 the per-pass buffers of the pass window.
struct PassRows {
  int n;           // rows of the pass
  int64_t r0, w0;  // first row, in all rows and in the pass window
};

// Points the per-pass buffers at the pass's rows (binding the workspace under
// Recompute) and checks that they hold them.
PassRows bind_pass_rows(const GPT2Config& config, Activations& acts, int a, int b) {
  if (acts.training && acts.policy == ActivationPolicy::Recompute) acts.bind_pass(config, a, b);
  const PassRows rows{(b - a) * acts.B, static_cast<int64_t>(a) * acts.B,
                      static_cast<int64_t>(a) * acts.B - acts.pass_row0};
  COCONUT_CHECK(rows.w0 >= 0 && rows.w0 + rows.n <= acts.pass_rows,
                "pass columns [{}, {}) are outside the activations' pass window", a, b);
  return rows;
}

// One layer's forward over the rows of a pass: `inp` is its input rows (x0 or the
// previous layer's res_out). Writes the per-pass buffers, q|k|v rows and res_out rows.
// The backward under Recompute calls it again with the same arguments: same bits.
void layer_forward(const GPT2Config& config, const LayerView& W, const LayerActivations& A, const Activations& acts,
                   int l, int a, int b, const PassRows& rows, const float* inp, const PassDropout* dropout) {
  const int C = config.d_model, H = config.n_head, B = acts.B, T = acts.T, n = rows.n;
  const int64_t r0 = rows.r0, w0 = rows.w0, nC = static_cast<int64_t>(n) * C;
  const float eps = config.layer_norm_eps;
  float* out = A.res_out + r0 * C;
  layernorm_forward(A.ln1 + w0 * C, A.ln1_mean + w0, A.ln1_rstd + w0, inp, W.ln1_w, W.ln1_b, n, C, eps);
  linear_forward(A.qkv + r0 * 3 * C, A.ln1 + w0 * C, W.qkv_w, W.qkv_b, n, C, 3 * C);
  const Dropout probs_drop = dropout ? dropout->at(l, Site::kAttnProbs) : Dropout{};
  attention_forward(A.att_out + w0 * C, A.probs, A.qkv, acts.key_mask.data(), a, b, B, T, C, H,
                    dropout ? &probs_drop : nullptr, acts.pass_row0);
  linear_forward(A.res_mid + w0 * C, A.att_out + w0 * C, W.attn_proj_w, W.attn_proj_b, n, C, C);
  if (dropout) dropout_apply(A.res_mid + w0 * C, A.res_mid + w0 * C, n, C, dropout->at(l, Site::kAttnResid));
  add_forward(A.res_mid + w0 * C, A.res_mid + w0 * C, inp, nC);
  layernorm_forward(A.ln2 + w0 * C, A.ln2_mean + w0, A.ln2_rstd + w0, A.res_mid + w0 * C, W.ln2_w, W.ln2_b, n, C,
                    eps);
  linear_forward(A.fc + w0 * 4 * C, A.ln2 + w0 * C, W.fc_w, W.fc_b, n, C, 4 * C);
  gelu_forward(A.gelu + w0 * 4 * C, A.fc + w0 * 4 * C, 4 * nC);
  linear_forward(out, A.gelu + w0 * 4 * C, W.fc_proj_w, W.fc_proj_b, n, 4 * C, C);
  if (dropout) dropout_apply(out, out, n, C, dropout->at(l, Site::kMlpResid));
  add_forward(out, out, A.res_mid + w0 * C, nC);
}

}  // namespace

void GPT2::forward_range(Activations& acts, int a, int b, const float* in_embeds) const {
  forward_stage(acts, a, b, 0, config_.n_layer, in_embeds, /*embed=*/true, /*final_norm=*/true);
}

void GPT2::forward_stage(Activations& acts, int a, int b, int l0, int l1, const float* in, bool embed,
                         bool final_norm) const {
  check_stage(config_, acts, a, b, l0, l1, embed, final_norm);
  const int C = config_.d_model;
  const PassRows rows = bind_pass_rows(config_, acts, a, b);
  const int n = rows.n;
  const int64_t r0 = rows.r0;
  const bool drop = dropout_active(config_, acts);
  std::unique_ptr<PassDropout> dropout;
  if (drop) dropout = std::make_unique<PassDropout>(config_, acts, r0, n);

  float* x = acts.x0 + r0 * C;
  if (embed) {
    // Embedding: input embedding (token or thought) plus the position embedding.
    for (int r = 0; r < n; ++r) {
      const int pos = acts.pos_ids[r0 + r];
      COCONUT_CHECK(pos >= 0 && pos < config_.max_positions, "position id {} outside [0, {})", pos,
                    config_.max_positions);
      const float* e = in + static_cast<int64_t>(r) * C;
      const float* pe = w_.wpe + static_cast<int64_t>(pos) * C;
      for (int c = 0; c < C; ++c) x[static_cast<int64_t>(r) * C + c] = e[c] + pe[c];
    }
    if (drop) dropout_apply(x, x, n, C, dropout->at(-1, Site::kEmbedding));
  } else if (in != x) {
    // The previous stage's residual stream; kept in x0 for this stage's backward.
    std::memcpy(x, in, sizeof(float) * static_cast<size_t>(n) * C);
  }

  const float* inp = x;
  for (int l = l0; l < l1; ++l) {
    layer_forward(config_, w_.layers[l], acts.layers[l], acts, l, a, b, rows, inp, dropout.get());
    inp = acts.layers[l].res_out + r0 * C;
  }
  if (final_norm)
    layernorm_forward(acts.lnf + r0 * C, acts.lnf_mean + r0, acts.lnf_rstd + r0, inp, w_.lnf_w, w_.lnf_b, n, C,
                      config_.layer_norm_eps);
}

// ---------------------------------------------------------------- backward

void GPT2::backward_range(Activations& acts, int a, int b, const float* d_hidden, float* d_in_embeds,
                          BackwardScratch& scratch) {
  backward_stage(acts, a, b, 0, config_.n_layer, d_hidden, d_in_embeds, scratch, /*embed=*/true,
                 /*final_norm=*/true);
}

void GPT2::backward_stage(Activations& acts, int a, int b, int l0, int l1, const float* d_out, float* d_in,
                          BackwardScratch& S, bool embed, bool final_norm) {
  COCONUT_CHECK(acts.training, "backward needs activations resized with training = true");
  check_stage(config_, acts, a, b, l0, l1, embed, final_norm);
  const int C = config_.d_model, H = config_.n_head, B = acts.B, T = acts.T;
  const PassRows rows = bind_pass_rows(config_, acts, a, b);
  const int n = rows.n;
  const int64_t r0 = rows.r0, w0 = rows.w0;
  const int64_t nC = static_cast<int64_t>(n) * C;
  const bool recompute = acts.policy == ActivationPolicy::Recompute;
  COCONUT_CHECK(S.dres.size() >= static_cast<size_t>(nC), "backward scratch too small for {} rows", n);
  auto zero = [](MeteredVector<float>& v, int64_t count) { std::fill(v.begin(), v.begin() + count, 0.f); };
  const bool drop = dropout_active(config_, acts);
  std::unique_ptr<PassDropout> dropout;
  if (drop) {
    COCONUT_CHECK(S.ddrop.size() >= static_cast<size_t>(nC), "backward scratch was sized for a model without dropout");
    dropout = std::make_unique<PassDropout>(config_, acts, r0, n);
  }
  // The gradient reaching a residual branch's output projection: dres, or dres through
  // the branch's dropout mask.
  auto branch_grad = [&](int layer, Site site) -> const float* {
    if (!drop) return S.dres.data();
    dropout_apply(S.ddrop.data(), S.dres.data(), n, C, dropout->at(layer, site));
    return S.ddrop.data();
  };

  // dres carries the gradient of the residual stream down through the layers: it
  // starts as the stage output's gradient, through the final norm on the last stage.
  float* dres = S.dres.data();
  const float* last = acts.layers[l1 - 1].res_out + r0 * C;
  if (final_norm) {
    zero(S.dres, nC);
    layernorm_backward(dres, g_.lnf_w, g_.lnf_b, d_out, last, w_.lnf_w, acts.lnf_mean + r0, acts.lnf_rstd + r0, n,
                       C);
  } else {
    std::memcpy(dres, d_out, sizeof(float) * nC);
  }

  for (int l = l1 - 1; l >= l0; --l) {
    const LayerView& W = w_.layers[l];
    const LayerView& G = g_.layers[l];
    const LayerActivations& A = acts.layers[l];
    const float* inp = (l == l0 ? acts.x0 : acts.layers[l - 1].res_out) + r0 * C;
    // Recompute: rebuild this layer's per-pass buffers from its kept input (rewriting
    // q|k|v and res_out rows with the values they already hold).
    if (recompute) layer_forward(config_, W, A, acts, l, a, b, rows, inp, dropout.get());

    // MLP block: res_out = res_mid + fc_proj(gelu(fc(ln2(res_mid))))
    linear_backward(S.dgelu.data(), G.fc_proj_w, G.fc_proj_b, branch_grad(l, Site::kMlpResid), A.gelu + w0 * 4 * C,
                    W.fc_proj_w, n, 4 * C, C);
    gelu_backward(S.dfc.data(), A.fc + w0 * 4 * C, S.dgelu.data(), 4 * nC);
    linear_backward(S.dln.data(), G.fc_w, G.fc_b, S.dfc.data(), A.ln2 + w0 * C, W.fc_w, n, C, 4 * C);
    layernorm_backward(dres, G.ln2_w, G.ln2_b, S.dln.data(), A.res_mid + w0 * C, W.ln2_w, A.ln2_mean + w0,
                       A.ln2_rstd + w0, n, C);

    // Attention block: res_mid = inp + attn_proj(attention(qkv(ln1(inp))))
    linear_backward(S.datt.data(), G.attn_proj_w, G.attn_proj_b, branch_grad(l, Site::kAttnResid),
                    A.att_out + w0 * C, W.attn_proj_w, n, C, C);
    const Dropout probs_drop = drop ? dropout->at(l, Site::kAttnProbs) : Dropout{};
    attention_backward(A.dqkv, S.datt.data(), A.probs, A.qkv, a, b, B, T, C, H, drop ? &probs_drop : nullptr,
                       acts.pass_row0);
    // dqkv rows [a, b) are now complete: later passes added their dK/dV before us.
    linear_backward(S.dln.data(), G.qkv_w, G.qkv_b, A.dqkv + r0 * 3 * C, A.ln1 + w0 * C, W.qkv_w, n, C, 3 * C);
    layernorm_backward(dres, G.ln1_w, G.ln1_b, S.dln.data(), inp, W.ln1_w, A.ln1_mean + w0, A.ln1_rstd + w0, n, C);
  }

  if (!embed) {
    // The gradient w.r.t. the residual stream received from the previous stage.
    std::memcpy(d_in, dres, sizeof(float) * nC);
    return;
  }
  // Embedding: the input embedding gets dres (through the embedding dropout) as is;
  // the position embedding sums it.
  if (drop) dropout_apply(dres, dres, n, C, dropout->at(-1, Site::kEmbedding));
  std::memcpy(d_in, dres, sizeof(float) * nC);
  for (int r = 0; r < n; ++r) {
    float* dpe = g_.wpe + static_cast<int64_t>(acts.pos_ids[r0 + r]) * C;
    const float* d = dres + static_cast<int64_t>(r) * C;
    for (int c = 0; c < C; ++c) dpe[c] += d[c];
  }
}

// ---------------------------------------------------------------- LM head

float GPT2::lm_head_loss(const float* hidden, const int* targets, int n, float scale, float* d_hidden,
                         float* logits) {
  const int C = config_.d_model, V = config_.vocab_size;
  if (n == 0) return 0.f;
  for (int r = 0; r < n; ++r)
    COCONUT_CHECK(targets[r] >= 0 && targets[r] < V, "target id {} outside the vocabulary [0, {})", targets[r], V);
  lm_head_logits(hidden, n, logits);
  const float loss = cross_entropy_forward_backward(logits, targets, n, V, scale);  // logits := dlogits
  if (!d_hidden) return loss;
  sgemm(false, false, n, C, V, 1.f, logits, V, w_.wte, C, 0.f, d_hidden, C);      // d_hidden = dlogits wte
  sgemm(true, false, V, C, n, 1.f, logits, V, hidden, C, 1.f, g_.wte, C);         // dwte += dlogits^T hidden
  return loss;
}

void GPT2::lm_head_logits(const float* hidden, int n, float* logits) const {
  const int C = config_.d_model, V = config_.vocab_size;
  sgemm(false, true, n, V, C, 1.f, hidden, C, w_.wte, C, 0.f, logits, V);
}

}  // namespace coconut::model
