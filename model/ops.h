// CPU (fp32) ops of the GPT-2 decoder, each a forward and a backward function.
// Shapes: N rows (time-major rows of one pass), C channels. Backward functions
// ACCUMULATE (+=) into every gradient they write, so callers zero buffers once per
// batch and several passes can add into the same parameter gradients -- except the
// input gradients of linear_backward and gelu_backward, which are OVERWRITTEN: their
// callers' scratch would otherwise be zeroed first, an extra pass over the widest
// (4C) buffers of the backward.
#pragma once

#include <cstdint>

namespace coconut {
class CounterRng;
}

namespace coconut::model {

// out[N,C] = (inp - mean) * rstd * w + b per row; saves mean/rstd for the backward.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                       int N, int C, float eps);
void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                        const float* mean, const float* rstd, int N, int C);

// out[N,OC] = inp[N,IC] W[IC,OC] + bias[OC] (Hugging Face Conv1D layout). bias may be null.
void linear_forward(float* out, const float* inp, const float* w, const float* bias, int N, int IC, int OC);
// dinp[N,IC] = dout W^T (overwritten); dw += inp^T dout, dbias += column sums of dout.
void linear_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp, const float* w,
                     int N, int IC, int OC);

// tanh-approximated GELU (GPT-2's "gelu_new").
void gelu_forward(float* out, const float* inp, int64_t n);
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n);  // dinp overwritten

// out[i] = a[i] + b[i]
void add_forward(float* out, const float* a, const float* b, int64_t n);

// Inverted dropout with masks drawn from counter-based streams (DESIGN.md 7). Element e
// of row r is dropped when u32 number first + e of the row's stream is below p * 2^32
// (32 bits per element, so p is exact to 2^-32), and kept elements are scaled by
// 1 / (1 - p). A mask is a pure function of (stream, index): the backward recomputes it
// rather than storing it, and it does not depend on which rows run together in a pass.
struct Dropout {
  float p = 0;
  const CounterRng* rows = nullptr;  // one stream per row of the pass, in pass row order
  uint64_t first = 0;                // stream index of this site's element 0
  // Attention only: the element of (head h, key column j) of sequence s is
  // h * head_stride + key_pos[j*B+s], the key's position id rather than its column, so
  // that the mask does not depend on how much padding the batch put before it.
  const int* key_pos = nullptr;
  int head_stride = 0;
};

// out[e] = u32 number first + e of the stream, for e in [0, n): one Philox block per 4.
void dropout_words(const CounterRng& stream, uint64_t first, int n, uint32_t* out);

// out[r, c] = in[r, c] * keep(r, c) / (1 - p) for a [rows, width] block; out may be in.
// The backward of dropout is the same call on the gradient.
void dropout_apply(float* out, const float* in, int rows, int width, const Dropout& d);

// Causal multi-head attention for the query columns [a, b) of B sequences of length T.
// qkv is the whole [T, B, 3C] buffer of the layer (columns < b already filled): the
// keys and values of columns < a are the KV cache. key_mask[t*B+s] = 0 hides column t
// of sequence s as a key (padding). A query sees keys at columns <= its own.
// out: rows of the pass ([(b-a)*B, C]). probs: [T, B, H, T] saved for the backward,
// or null at inference (softmax computed on the fly, nothing kept); a buffer that holds
// only the rows from probs_row0 on (a workspace of one pass: probs_row0 = a*B) says so,
// and row r is then at r - probs_row0. drop (training only, or null): dropout on the
// probabilities before they weight V; probs keeps the undropped values that the
// softmax backward needs.
void attention_forward(float* out, float* probs, const float* qkv, const uint8_t* key_mask, int a, int b, int B,
                       int T, int C, int H, const Dropout* drop = nullptr, int64_t probs_row0 = 0);
// Backward for the queries [a, b): dq lands in dqkv rows [a, b); dK and dV of every
// column < b (this pass's and the cached ones) are accumulated into dqkv, so the
// earlier passes find their cache gradients there when their backward runs.
// drop must be the forward's (or null): the mask is recomputed from its streams;
// probs and probs_row0 as in the forward.
void attention_backward(float* dqkv, const float* dout, const float* probs, const float* qkv, int a, int b, int B,
                        int T, int C, int H, const Dropout* drop = nullptr, int64_t probs_row0 = 0);

// Tied LM head and softmax cross-entropy on N gathered rows: logits[N,V] = hidden wte^T.
// Returns sum over rows of -log p(target) * scale; overwrites logits with
// dlogits = (softmax - onehot) * scale. Targets must be in [0, V).
float cross_entropy_forward_backward(float* logits, const int* targets, int N, int V, float scale);

}  // namespace coconut::model
