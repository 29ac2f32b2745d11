// The CUDA GPT-2 (cuda_gpt2.h): model/gpt2.cpp's forward_stage / backward_stage, op for
// op, on device buffers, for fp32 and bf16 activations (the runner that executes a
// batch's passes on it is cuda_multipass.cpp). Reads top-down like one pass:
// embeddings, then per layer
//   ln1 -> qkv -> attention (over the KV cache) -> projection + residual
//   ln2 -> fc -> GELU -> projection + residual
// then the final layer norm; the backward walks the same list in reverse. The bf16
// path differs only around attention (fp32: converted copies in and out).
#include "model/cuda_gpt2.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "model/cuda_buffers.h"
#include "runtime/check.h"
#include "runtime/rng.h"

namespace coconut::model {
namespace {

using gpu::bf16;

using cuda_buffers::copy;
using cuda_buffers::ensure;
using cuda_buffers::zero;

// Row-major C = op(A) op(B) + beta C: cuBLAS SGEMM in fp32, GemmEx (fp32 accumulation) in bf16.
void mm(CublasContext& c, bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* b, int ldb,
        float beta, float* out, int ldc) {
  c.sgemm(ta, tb, m, n, k, 1.f, a, lda, b, ldb, beta, out, ldc);
}
template <typename Out>
void mm(CublasContext& c, bool ta, bool tb, int m, int n, int k, const bf16* a, int lda, const bf16* b, int ldb,
        float beta, Out* out, int ldc) {
  gpu::gemm_bf16(c, ta, tb, m, n, k, 1.f, a, lda, b, ldb, beta, out, ldc);
}

// Dropout sites, numbered as model/gpt2.cpp numbers them (dropout_site_first).
enum Site { kEmbedding = 0, kAttnProbs = 1, kAttnResid = 2, kMlpResid = 3 };

// The device keys of one site for the rows [r0, r0 + n) of a pass.
template <typename Act>
gpu::DropoutKeys site_keys(const GPT2Config& config, const CudaActivationsOf<Act>& acts, int64_t r0, int layer,
                           Site site) {
  gpu::DropoutKeys d;
  d.p = config.dropout;
  d.rows = acts.row_streams.data() + r0;
  d.first = dropout_site_first(layer, site);
  d.key_pos = acts.pos_ids.data();
  d.head_stride = config.max_positions;
  return d;
}

template <typename Act>
void check_stage(const GPT2Config& config, const CudaActivationsOf<Act>& acts, int a, int b, int l0, int l1,
                 bool embed, bool final_norm) {
  COCONUT_CHECK(0 <= a && a < b && b <= acts.T, "pass columns [{}, {}) outside the batch's [0, {})", a, b, acts.T);
  COCONUT_CHECK(0 <= l0 && l0 < l1 && l1 <= config.n_layer, "stage layers [{}, {}) outside the model's [0, {})", l0,
                l1, config.n_layer);
  COCONUT_CHECK(!embed || l0 == 0, "only the stage starting at layer 0 can embed (this one starts at {})", l0);
  COCONUT_CHECK(!final_norm || l1 == config.n_layer, "only the last stage can apply the final norm");
}

// The batched bf16 attention keeps its probabilities in bf16, in the activations' fp32
// words (two per word: CudaGPT2Of::attention_storage).
bf16* bf16_probs(float* probs_words) { return reinterpret_cast<bf16*>(probs_words); }

}  // namespace

// ---------------------------------------------------------------- activations

template <typename Act>
void CudaActivationsOf<Act>::resize(const GPT2Config& config, int batch, int columns,
                                     const AttentionStorage& attention, cudaStream_t stream, bool training,
                                     int l0, int l1) {
  COCONUT_CHECK(batch > 0 && columns > 0 && columns <= config.max_positions,
                "CUDA activations need 0 < B and 0 < T <= max_positions {} (got B={} T={})", config.max_positions,
                batch, columns);
  constexpr bool kBf16 = std::is_same_v<Act, bf16>;
  B = batch;
  T = columns;
  C = config.d_model;
  const int64_t L = config.n_layer, R = int64_t(B) * T;
  if (l1 < 0) l1 = int(L);
  COCONUT_CHECK(0 <= l0 && l0 < l1 && l1 <= L && (training || (l0 == 0 && l1 == L)),
                "CUDA activations: layers [{}, {}) of {} (a layer range only in training)", l0, l1, L);
  const int64_t nl = l1 - l0;  // layers with buffers
  // Layers with buffers of their own besides q|k|v (training: all; decoding: one set).
  const int64_t sets = training ? nl : 1;
  const int64_t per_row = attention.floats_per_row;
  const bool qkv_copy = kBf16 && attention.fp32_qkv_copy;
  const int64_t act_total = R * C + nl * R * 3 * C + sets * R * 13 * C + R * C;  // see the takes below
  const int64_t f32_total = nl * R * (qkv_copy ? 3 * C : 0) + sets * R * (4 + per_row) + 2 * R;
  // The passes of a step cover all T columns and write every row of these buffers
  // before anything reads it (the softmax writes all T columns of a probability row),
  // so buffers reused from an earlier step are not cleared: that was a memset of every
  // activation, about 11 GB per step at 32 x 512 (estimated from the sizes). A new
  // allocation is cleared once, so that uninitialised bits are never read.
  const bool grown = storage_.size() < size_t(act_total) || storage32_.size() < size_t(f32_total);
  ensure(storage_, size_t(act_total));
  ensure(storage32_, size_t(f32_total));
  if (training) ensure(dqkv_, size_t(nl * R * 3 * C));
  dqkv_layers_ = training ? int(nl) : 0;
  ensure(pos_ids, size_t(R));
  ensure(key_mask, size_t(R));
  if (grown) {
    zero(storage_.data(), storage_.size(), stream);
    zero(storage32_.data(), storage32_.size(), stream);
  }

  Act* cursor = storage_.data();
  float* cursor32 = storage32_.data();
  auto take = [&](int64_t n) { return std::exchange(cursor, cursor + n); };
  auto take32 = [&](int64_t n) { return std::exchange(cursor32, cursor32 + n); };
  x0 = take(R * C);
  layers.assign(L, {});
  for (int l = l0; l < l1; ++l) {
    Layer& A = layers[l];
    A.qkv = take(R * 3 * C);
    if constexpr (kBf16) A.qkv32 = qkv_copy ? take32(R * 3 * C) : nullptr;
    else A.qkv32 = A.qkv;
    A.dqkv = training ? dqkv_.data() + (l - l0) * R * 3 * C : nullptr;
    if (l > 0 && !training) {  // decoding: the shared set of layer 0
      const Layer& S = layers[0];
      A.ln1 = S.ln1, A.att_out = S.att_out, A.res_mid = S.res_mid, A.ln2 = S.ln2, A.fc = S.fc, A.gelu = S.gelu,
      A.res_out = S.res_out;
      A.ln1_mean = S.ln1_mean, A.ln1_rstd = S.ln1_rstd, A.ln2_mean = S.ln2_mean, A.ln2_rstd = S.ln2_rstd;
      A.probs = S.probs;
      continue;
    }
    A.ln1 = take(R * C); A.att_out = take(R * C); A.res_mid = take(R * C);
    A.ln2 = take(R * C); A.fc = take(R * 4 * C); A.gelu = take(R * 4 * C); A.res_out = take(R * C);
    A.ln1_mean = take32(R); A.ln1_rstd = take32(R); A.ln2_mean = take32(R); A.ln2_rstd = take32(R);
    A.probs = take32(R * per_row);
  }
  lnf = take(R * C);
  lnf_mean = take32(R);
  lnf_rstd = take32(R);
  COCONUT_CHECK(cursor == storage_.data() + act_total && cursor32 == storage32_.data() + f32_total,
                "CudaActivations::resize: the layout does not add up to its sizes");
}

template <typename Act>
void CudaActivationsOf<Act>::set_dropout(uint64_t seed, uint64_t step, const std::vector<int>& pos,
                                         const std::vector<int64_t>& sample_ids) {
  const size_t R = size_t(B) * T;
  COCONUT_CHECK(pos.size() == R && sample_ids.size() == size_t(B),
                "dropout keys need {} position ids and {} sample ids (got {} and {})", R, B, pos.size(),
                sample_ids.size());
  std::vector<gpu::RowStream> streams(R);
  for (size_t r = 0; r < R; ++r)
    streams[r] = gpu::row_stream(dropout_row_stream(seed, step, sample_ids[r % B], pos[r]));
  ensure(row_streams, R);
  row_streams.copy_from_host(streams);
  dropout_enabled = true;
}

template <typename Act>
std::vector<const void*> CudaActivationsOf<Act>::buffer_addresses() const {
  return {storage_.data(), storage32_.data(), dqkv_.data(), pos_ids.data(), key_mask.data(), row_streams.data()};
}

template <typename Act>
void CudaActivationsOf<Act>::zero_grads(cudaStream_t stream) {
  zero(dqkv_.data(), size_t(dqkv_layers_) * B * T * 3 * C, stream);
}

// ---------------------------------------------------------------- parameters

template <typename Act>
CudaGPT2Of<Act>::CudaGPT2Of(const GPT2Config& config)
    : config_(config), layout_(config), params_(layout_.total()), grads_(layout_.total()) {
  config_.validate();
  if constexpr (std::is_same_v<Act, bf16>) params_bf16_ = DeviceBuffer<bf16>(layout_.total());
  // bind_params only does pointer arithmetic, so it lays out device buffers too; the
  // compute copy has the same offsets as the master weights.
  const ParamView f = bind_params(config_, params_.data());
  auto typed = [&](float* p) -> Act* {
    if constexpr (std::is_same_v<Act, bf16>) return params_bf16_.data() + (p - params_.data());
    else return p;
  };
  w_.wte = typed(f.wte);
  w_.wpe = typed(f.wpe);
  for (const LayerView& v : f.layers)
    w_.layers.push_back({typed(v.ln1_w), typed(v.ln1_b), typed(v.qkv_w), typed(v.qkv_b), typed(v.attn_proj_w),
                         typed(v.attn_proj_b), typed(v.ln2_w), typed(v.ln2_b), typed(v.fc_w), typed(v.fc_b),
                         typed(v.fc_proj_w), typed(v.fc_proj_b)});
  w_.lnf_w = typed(f.lnf_w);
  w_.lnf_b = typed(f.lnf_b);
  g_ = bind_params(config_, grads_.data());
  cublas_.set_stream(stream());
  zero(params_.data(), params_.size(), stream());
  if constexpr (std::is_same_v<Act, bf16>) zero(params_bf16_.data(), params_bf16_.size(), stream());
  zero_grads();
}

const char* attention_name(CudaAttention kind) {
  switch (kind) {
    case CudaAttention::kFp32: return "fp32";
    case CudaAttention::kBf16Batched: return "bf16 batched";
    case CudaAttention::kBf16Flash: return "bf16 fused";
  }
  return "?";
}

template <typename Act>
void CudaGPT2Of<Act>::set_attention(CudaAttention kind) {
  constexpr bool kBf16 = std::is_same_v<Act, bf16>;
  COCONUT_CHECK(kind == CudaAttention::kFp32 || kBf16, "{} attention needs the bf16 model (CudaGPT2Bf16)",
                attention_name(kind));
  attention_ = kind;
}

template <typename Act>
CudaAttention CudaGPT2Of<Act>::pass_attention(bool attention_dropout) const {
  const int C = config_.d_model, H = config_.n_head;
  if (attention_ == CudaAttention::kBf16Flash && !attention_dropout && gpu::flash_attention_supported(C, H))
    return CudaAttention::kBf16Flash;
  // The batched bf16 products take each head's columns of q|k|v and of the output as
  // operands, and cuBLAS assumes the alignment their row stride allows (16 bytes), not
  // that of the pointers (a misaligned-address fault showed this for the probabilities:
  // ops_attention.cu): head sizes that are multiples of 8 keep every head 16-byte aligned.
  if (attention_ != CudaAttention::kFp32 && (C / H) % 8 == 0) return CudaAttention::kBf16Batched;
  return CudaAttention::kFp32;
}

namespace {

// What one kernel keeps per activation row (fp32 words) and needs as workspace (bytes).
int64_t floats_per_row(CudaAttention kind, int64_t H, int64_t T) {
  switch (kind) {
    case CudaAttention::kBf16Flash: return H;                    // the log-sum-exp
    case CudaAttention::kBf16Batched: return (H * T + 1) / 2;    // bf16 probabilities, two per word
    case CudaAttention::kFp32: return H * T;                     // fp32 probabilities
  }
  return H * T;
}
size_t workspace_bytes(CudaAttention kind, int B, int H, int T) {
  if (kind == CudaAttention::kBf16Flash) return gpu::flash_attention_workspace_bytes(B, H, T);
  return gpu::attention_workspace_bytes(B, H, T, T, kind == CudaAttention::kBf16Batched);
}

}  // namespace

// The kernels a step may run: without and with attention dropout (a model with dropout
// runs both: training steps and evaluation).
template <typename Act>
std::vector<CudaAttention> CudaGPT2Of<Act>::step_attentions() const {
  std::vector<CudaAttention> kinds = {pass_attention(false)};
  if (config_.dropout > 0.f) kinds.push_back(pass_attention(true));
  return kinds;
}

template <typename Act>
bool CudaGPT2Of<Act>::saves_attention_probabilities() const {
  for (CudaAttention kind : step_attentions())
    if (kind != CudaAttention::kBf16Flash) return true;
  return false;
}

template <typename Act>
AttentionStorage CudaGPT2Of<Act>::attention_storage(int T) const {
  AttentionStorage s;
  for (CudaAttention kind : step_attentions()) {
    s.floats_per_row = std::max(s.floats_per_row, floats_per_row(kind, config_.n_head, T));
    s.fp32_qkv_copy = s.fp32_qkv_copy || kind == CudaAttention::kFp32;
  }
  return s;
}

template <typename Act>
Act* CudaGPT2Of<Act>::params_for_compute() {
  if constexpr (std::is_same_v<Act, bf16>) return params_bf16_.data();
  else return params_.data();
}

template <typename Act>
void CudaGPT2Of<Act>::set_params(const float* host) {
  params_.copy_from_host(host, params_.size());
  if constexpr (std::is_same_v<Act, bf16>) gpu::convert(params_bf16_.data(), params_.data(), params_.size(), stream());
}
template <typename Act>
void CudaGPT2Of<Act>::set_params(const float* host, size_t begin, size_t end) {
  COCONUT_CHECK(begin <= end && end <= params_.size(), "set_params: range [{}, {}) outside the {} parameters", begin,
                end, params_.size());
  if (begin == end) return;
  // On the model's stream (blocking with respect to the host copy): later work sees it.
  CUDA_CHECK(cudaMemcpyAsync(params_.data() + begin, host + begin, (end - begin) * sizeof(float),
                             cudaMemcpyHostToDevice, stream()));
  if constexpr (std::is_same_v<Act, bf16>)
    gpu::convert(params_bf16_.data() + begin, params_.data() + begin, int64_t(end - begin), stream());
}
template <typename Act>
void CudaGPT2Of<Act>::get_grads(float* host, size_t begin, size_t end) const {
  COCONUT_CHECK(begin <= end && end <= grads_.size(), "get_grads: range [{}, {}) outside the {} parameters", begin,
                end, grads_.size());
  if (begin == end) return;
  CUDA_CHECK(cudaMemcpyAsync(host + begin, grads_.data() + begin, (end - begin) * sizeof(float),
                             cudaMemcpyDeviceToHost, stream()));
  CUDA_CHECK(cudaStreamSynchronize(stream()));
}
template <typename Act>
void CudaGPT2Of<Act>::get_params(float* host) const { params_.copy_to_host(host, params_.size()); }
template <typename Act>
void CudaGPT2Of<Act>::get_grads(float* host) const { grads_.copy_to_host(host, grads_.size()); }
template <typename Act>
void CudaGPT2Of<Act>::zero_grads() { zero(grads_.data(), grads_.size(), stream()); }

template <typename Act>
void CudaGPT2Of<Act>::ensure_scratch(int rows, int B, int T) {
  const size_t R = size_t(rows), C = size_t(config_.d_model);
  for (DeviceBuffer<Act>* b : {&dres_, &dln_, &datt_}) ensure(*b, R * C);
  ensure(dfc_, R * 4 * C);
  ensure(dgelu_, R * 4 * C);
  if (config_.dropout > 0.f) ensure(ddrop_, R * C);
  if constexpr (std::is_same_v<Act, bf16>) {
    ensure(att32_, R * C);
    ensure(datt32_, R * C);
    ensure(dqkv_act_, R * 3 * C);
  }
  size_t ws = 0;
  for (CudaAttention kind : step_attentions()) ws = std::max(ws, workspace_bytes(kind, B, config_.n_head, T));
  ensure(attention_ws_, ws);
  ensure(embedding_ws_, gpu::embedding_backward_workspace_bytes(rows));
  ensure(colsum_ws_, gpu::column_sums_scratch_floats(4 * int(C)));  // the widest bias: fc's 4C
}

// ---------------------------------------------------------------- forward

template <typename Act>
void CudaGPT2Of<Act>::forward_stage(CudaActivationsOf<Act>& acts, int a, int b, int l0, int l1, const Act* in,
                                    bool embed, bool final_norm) {
  check_stage(config_, acts, a, b, l0, l1, embed, final_norm);
  const int C = config_.d_model, H = config_.n_head, B = acts.B, T = acts.T;
  const int n = (b - a) * B;
  const int64_t r0 = int64_t(a) * B;
  const float eps = config_.layer_norm_eps;
  const bool drop = acts.dropout_enabled && config_.dropout > 0.f;
  const CudaAttention attention = pass_attention(drop);
  ensure_scratch(B * T, B, T);

  // Embedding: input embedding (token or thought) plus the position embedding.
  Act* x = acts.x0 + r0 * C;
  if (embed) {
    gpu::add_position_embedding(x, in, w_.wpe, acts.pos_ids.data() + r0, n, C, stream());
    if (drop) gpu::dropout_apply(x, x, n, C, site_keys(config_, acts, r0, -1, kEmbedding), stream());
  } else if (in != x) {
    copy(x, in, size_t(n) * C, stream());
  }

  const Act* inp = x;
  for (int l = l0; l < l1; ++l) {
    const Layer& W = w_.layers[l];
    const auto& A = acts.layers[l];
    gpu::layernorm_forward(A.ln1 + r0 * C, A.ln1_mean + r0, A.ln1_rstd + r0, inp, W.ln1_w, W.ln1_b, n, C, eps,
                           stream());
    gpu::linear_forward(cublas_, A.qkv + r0 * 3 * C, A.ln1 + r0 * C, W.qkv_w, W.qkv_b, n, C, 3 * C);
    // Attention (attention_): fused, bf16 batched, or fp32. The fp32 op in the bf16 model
    // runs on an fp32 copy of this pass's q|k|v (the cache of earlier columns was copied
    // by their passes), its output converted back.
    const gpu::DropoutKeys probs_drop = site_keys(config_, acts, r0, l, kAttnProbs);
    const gpu::DropoutKeys* attn_drop = drop ? &probs_drop : nullptr;
    if constexpr (std::is_same_v<Act, bf16>) {  // the fp32 model only runs fp32 attention (pass_attention)
      if (attention == CudaAttention::kBf16Flash) {
        gpu::flash_attention_forward(A.att_out + r0 * C, A.probs, A.qkv, acts.key_mask.data(), a, b, B, T, C, H,
                                     stream());
      } else if (attention == CudaAttention::kBf16Batched) {
        gpu::attention_forward(cublas_, A.att_out + r0 * C, bf16_probs(A.probs), A.qkv, acts.key_mask.data(), a, b,
                               B, T, C, H, attn_drop, attention_ws_.data());
      } else {
        gpu::convert(A.qkv32 + r0 * 3 * C, A.qkv + r0 * 3 * C, int64_t(n) * 3 * C, stream());
        gpu::attention_forward(cublas_, att32_.data(), A.probs, A.qkv32, acts.key_mask.data(), a, b, B, T, C, H,
                               attn_drop, attention_ws_.data());
        gpu::convert(A.att_out + r0 * C, att32_.data(), int64_t(n) * C, stream());
      }
    } else {
      gpu::attention_forward(cublas_, A.att_out + r0 * C, A.probs, A.qkv32, acts.key_mask.data(), a, b, B, T, C, H,
                             attn_drop, attention_ws_.data());
    }
    gpu::linear_forward(cublas_, A.res_mid + r0 * C, A.att_out + r0 * C, W.attn_proj_w, W.attn_proj_b, n, C, C);
    if (drop)
      gpu::dropout_apply(A.res_mid + r0 * C, A.res_mid + r0 * C, n, C, site_keys(config_, acts, r0, l, kAttnResid),
                         stream());
    gpu::add_forward(A.res_mid + r0 * C, A.res_mid + r0 * C, inp, int64_t(n) * C, stream());
    gpu::layernorm_forward(A.ln2 + r0 * C, A.ln2_mean + r0, A.ln2_rstd + r0, A.res_mid + r0 * C, W.ln2_w, W.ln2_b,
                           n, C, eps, stream());
    gpu::linear_gelu_forward(cublas_, A.gelu + r0 * 4 * C, A.fc + r0 * 4 * C, A.ln2 + r0 * C, W.fc_w, W.fc_b, n, C,
                             4 * C);
    gpu::linear_forward(cublas_, A.res_out + r0 * C, A.gelu + r0 * 4 * C, W.fc_proj_w, W.fc_proj_b, n, 4 * C, C);
    if (drop)
      gpu::dropout_apply(A.res_out + r0 * C, A.res_out + r0 * C, n, C, site_keys(config_, acts, r0, l, kMlpResid),
                         stream());
    gpu::add_forward(A.res_out + r0 * C, A.res_out + r0 * C, A.res_mid + r0 * C, int64_t(n) * C, stream());
    inp = A.res_out + r0 * C;
  }
  if (final_norm)
    gpu::layernorm_forward(acts.lnf + r0 * C, acts.lnf_mean + r0, acts.lnf_rstd + r0, inp, w_.lnf_w, w_.lnf_b, n, C,
                           eps, stream());
}

// ---------------------------------------------------------------- backward

template <typename Act>
void CudaGPT2Of<Act>::backward_stage(CudaActivationsOf<Act>& acts, int a, int b, int l0, int l1, const Act* d_out,
                                     Act* d_in, bool embed, bool final_norm, const LayerDone& layer_done) {
  check_stage(config_, acts, a, b, l0, l1, embed, final_norm);
  const int C = config_.d_model, H = config_.n_head, B = acts.B, T = acts.T;
  const int n = (b - a) * B;
  const int64_t r0 = int64_t(a) * B;
  const size_t nC = size_t(n) * C;
  const bool drop = acts.dropout_enabled && config_.dropout > 0.f;
  const CudaAttention attention = pass_attention(drop);
  ensure_scratch(B * T, B, T);
  // The gradient reaching a residual branch's output projection: dres, or dres through
  // the branch's dropout mask.
  auto branch_grad = [&](int layer, Site site) -> const Act* {
    if (!drop) return dres_.data();
    gpu::dropout_apply(ddrop_.data(), dres_.data(), n, C, site_keys(config_, acts, r0, layer, site), stream());
    return ddrop_.data();
  };

  // dres carries the gradient of the residual stream down through the layers.
  Act* dres = dres_.data();
  const Act* last = acts.layers[l1 - 1].res_out + r0 * C;
  if (final_norm) {
    zero(dres, nC, stream());
    gpu::layernorm_backward(dres, g_.lnf_w, g_.lnf_b, d_out, last, w_.lnf_w, acts.lnf_mean + r0, acts.lnf_rstd + r0,
                            n, C, colsum_ws_.data(), stream());
  } else {
    copy(dres, d_out, nC, stream());
  }

  for (int l = l1 - 1; l >= l0; --l) {
    const Layer& W = w_.layers[l];
    const LayerView& G = g_.layers[l];
    const auto& A = acts.layers[l];
    const Act* inp = (l == l0 ? acts.x0 : acts.layers[l - 1].res_out) + r0 * C;

    // MLP block: res_out = res_mid + fc_proj(gelu(fc(ln2(res_mid))))
    gpu::linear_backward_gelu(cublas_, dfc_.data(), G.fc_proj_w, G.fc_proj_b, branch_grad(l, kMlpResid),
                              A.gelu + r0 * 4 * C, W.fc_proj_w, A.fc + r0 * 4 * C, n, 4 * C, C, colsum_ws_.data(),
                              dgelu_.data());
    gpu::linear_backward(cublas_, dln_.data(), G.fc_w, G.fc_b, dfc_.data(), A.ln2 + r0 * C, W.fc_w, n, C, 4 * C,
                         colsum_ws_.data());
    gpu::layernorm_backward(dres, G.ln2_w, G.ln2_b, dln_.data(), A.res_mid + r0 * C, W.ln2_w, A.ln2_mean + r0,
                            A.ln2_rstd + r0, n, C, colsum_ws_.data(), stream());

    // Attention block: res_mid = inp + attn_proj(attention(qkv(ln1(inp))))
    gpu::linear_backward(cublas_, datt_.data(), G.attn_proj_w, G.attn_proj_b, branch_grad(l, kAttnResid),
                         A.att_out + r0 * C, W.attn_proj_w, n, C, C, colsum_ws_.data());
    // dqkv is fp32 (later passes accumulate dK/dV into it). In the bf16 model the fp32
    // attention's input gradient is converted in; the finished q|k|v gradient rows of
    // this pass are converted out for the qkv projection's backward.
    const gpu::DropoutKeys probs_drop = site_keys(config_, acts, r0, l, kAttnProbs);
    const gpu::DropoutKeys* attn_drop = drop ? &probs_drop : nullptr;
    const Act* dqkv_rows = nullptr;
    if constexpr (std::is_same_v<Act, bf16>) {
      if (attention == CudaAttention::kBf16Flash) {
        gpu::flash_attention_backward(A.dqkv, datt_.data(), A.att_out + r0 * C, A.probs, A.qkv, acts.key_mask.data(),
                                      a, b, B, T, C, H, attention_ws_.data(), stream());
      } else if (attention == CudaAttention::kBf16Batched) {
        gpu::attention_backward(cublas_, A.dqkv, datt_.data(), bf16_probs(A.probs), A.qkv, a, b, B, T, C, H,
                                attn_drop, attention_ws_.data());
      } else {
        gpu::convert(datt32_.data(), datt_.data(), int64_t(nC), stream());
        gpu::attention_backward(cublas_, A.dqkv, datt32_.data(), A.probs, A.qkv32, a, b, B, T, C, H, attn_drop,
                                attention_ws_.data());
      }
    } else {
      gpu::attention_backward(cublas_, A.dqkv, datt_.data(), A.probs, A.qkv32, a, b, B, T, C, H, attn_drop,
                              attention_ws_.data());
    }
    if constexpr (std::is_same_v<Act, bf16>) dqkv_rows = dqkv_act_.data();
    else dqkv_rows = A.dqkv + r0 * 3 * C;
    // dqkv rows [a, b) are now complete: later passes added their dK/dV before us.
    if constexpr (std::is_same_v<Act, bf16>)
      gpu::convert(dqkv_act_.data(), A.dqkv + r0 * 3 * C, int64_t(nC) * 3, stream());
    gpu::linear_backward(cublas_, dln_.data(), G.qkv_w, G.qkv_b, dqkv_rows, A.ln1 + r0 * C, W.qkv_w, n, C, 3 * C,
                         colsum_ws_.data());
    gpu::layernorm_backward(dres, G.ln1_w, G.ln1_b, dln_.data(), inp, W.ln1_w, A.ln1_mean + r0, A.ln1_rstd + r0, n,
                            C, colsum_ws_.data(), stream());
    if (layer_done) layer_done(l);
  }

  // The input gets dres (through the embedding dropout on the embedding stage); the
  // position embedding sums it.
  if (embed && drop) gpu::dropout_apply(dres, dres, n, C, site_keys(config_, acts, r0, -1, kEmbedding), stream());
  copy(d_in, static_cast<const Act*>(dres), nC, stream());
  if (embed)
    gpu::position_embedding_backward(g_.wpe, dres, acts.pos_ids.data() + r0, n, C, config_.max_positions,
                                     embedding_ws_.data(), stream());
}

// ---------------------------------------------------------------- LM head

template <typename Act>
double CudaGPT2Of<Act>::lm_head_loss(const Act* hidden, const int* targets, int n, float scale, Act* d_hidden) {
  set_loss_scale(scale);
  queue_lm_head_loss(hidden, targets, n, d_hidden);
  return read_lm_head_loss(n);
}

template <typename Act>
void CudaGPT2Of<Act>::refresh_lm_head() {
  const int C = config_.d_model, V = config_.vocab_size;
  // The vocabulary padded to a multiple of 64 (GPT-2's 50257 to 50304): with an odd V as
  // a product's extent or stride, cuBLAS runs unaligned sm75 kernels (measured on an
  // H100: the forward and d_hidden products took 17 of a 97 ms step). The padded copy of
  // wte has zero rows past V, so the padded logits are 0, and the loss sets their
  // gradient to 0: the padding adds nothing to d_hidden. dwte keeps V rows.
  ensure_padded_wte();
  copy(wte_padded_.data(), static_cast<const Act*>(w_.wte), size_t(V) * C, stream());  // this step's weights
}

template <typename Act>
void CudaGPT2Of<Act>::lm_head_logits(const Act* hidden, int n, float* logits) {
  const int C = config_.d_model, Vp = padded_vocab();
  COCONUT_CHECK(wte_padded_.size() >= size_t(Vp) * C, "lm_head_logits before refresh_lm_head");
  if (n > 0) mm(cublas_, false, true, n, Vp, C, hidden, C, wte_padded_.data(), C, 0.f, logits, Vp);  // h wte^T
}

template <typename Act>
void CudaGPT2Of<Act>::ensure_lm_head(int n, bool with_grad) {
  const int Vp = padded_vocab();
  if (n == 0) return;
  ensure(logits_, size_t(n) * Vp);
  ensure(row_loss_, size_t(n));
  if (std::is_same_v<Act, bf16> && with_grad) ensure(dlogits_bf16_, size_t(n) * Vp);
  ensure_padded_wte();
}

template <typename Act>
void CudaGPT2Of<Act>::ensure_padded_wte() {
  const size_t n = size_t(padded_vocab()) * config_.d_model;
  if (wte_padded_.size() >= n) return;
  wte_padded_ = DeviceBuffer<Act>(n);
  zero(wte_padded_.data(), wte_padded_.size(), stream());  // the rows past the vocabulary stay 0
}

template <typename Act>
std::vector<const void*> CudaGPT2Of<Act>::buffer_addresses() const {
  return {dres_.data(),        dln_.data(),       datt_.data(),          dfc_.data(),     dgelu_.data(),
          ddrop_.data(),       att32_.data(),     datt32_.data(),        dqkv_act_.data(), attention_ws_.data(),
          embedding_ws_.data(), colsum_ws_.data(), wte_padded_.data(),    logits_.data(),   row_loss_.data(),
          dlogits_bf16_.data(), loss_scale_.data(), params_.data(),       grads_.data(),    params_bf16_.data(),
          cublas_.workspace()};
}

template <typename Act>
void CudaGPT2Of<Act>::set_loss_scale(float scale) {
  loss_scale_.copy_from_host(&scale, 1);  // a blocking copy, ordered with the model's stream
}

template <typename Act>
void CudaGPT2Of<Act>::queue_lm_head_loss(const Act* hidden, const int* targets, int n, Act* d_hidden) {
  const int C = config_.d_model, V = config_.vocab_size, Vp = padded_vocab();
  if (n == 0) return;
  ensure_lm_head(n, d_hidden != nullptr);
  refresh_lm_head();
  lm_head_logits(hidden, n, logits_.data());
  const Act* wte = wte_padded_.data();
  const Act* dlogits = nullptr;  // the logits' gradient in the compute type
  if constexpr (std::is_same_v<Act, bf16>) {
    bf16* out = d_hidden ? dlogits_bf16_.data() : nullptr;
    if (out)
      gpu::cross_entropy_forward_backward(logits_.data(), Vp, out, row_loss_.data(), targets, n, V, loss_scale_.data(),
                                          stream());
    else  // the loss alone: the gradient lands in the logits, unread
      gpu::cross_entropy_forward_backward(logits_.data(), Vp, logits_.data(), row_loss_.data(), targets, n, V,
                                          loss_scale_.data(), stream());
    dlogits = out;
  } else {
    gpu::cross_entropy_forward_backward(logits_.data(), Vp, logits_.data(), row_loss_.data(), targets, n, V,
                                        loss_scale_.data(), stream());  // logits := dlogits
    dlogits = logits_.data();
  }
  if (d_hidden) {
    mm(cublas_, false, false, n, C, Vp, dlogits, Vp, wte, C, 0.f, d_hidden, C);     // d_hidden = dlogits wte
    mm(cublas_, true, false, V, C, n, dlogits, Vp, hidden, C, 1.f, g_.wte, C);      // dwte += dlogits^T h
  }
}

template <typename Act>
double CudaGPT2Of<Act>::read_lm_head_loss(int n) {
  if (n == 0) return 0.0;
  CUDA_CHECK(cudaStreamSynchronize(stream()));
  std::vector<float> losses(n);
  row_loss_.copy_to_host(losses.data(), n);
  double total = 0.0;
  for (float x : losses) total += x;  // fixed order: reproducible
  return total;
}

template class CudaActivationsOf<float>;
template class CudaActivationsOf<bf16>;
template class CudaGPT2Of<float>;
template class CudaGPT2Of<bf16>;

}  // namespace coconut::model
