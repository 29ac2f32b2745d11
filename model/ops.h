// CPU (fp32) ops of the GPT-2 decoder, each a forward and a backward function.
// Shapes: N rows (time-major rows of one pass), C channels. Backward functions
// ACCUMULATE (+=) into every gradient they write, so callers zero buffers once per
// batch and several passes can add into the same parameter gradients.
#pragma once

#include <cstdint>

namespace coconut::model {

// out[N,C] = (inp - mean) * rstd * w + b per row; saves mean/rstd for the backward.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                       int N, int C, float eps);
void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                        const float* mean, const float* rstd, int N, int C);

// out[N,OC] = inp[N,IC] W[IC,OC] + bias[OC] (Hugging Face Conv1D layout). bias may be null.
void linear_forward(float* out, const float* inp, const float* w, const float* bias, int N, int IC, int OC);
void linear_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp, const float* w,
                     int N, int IC, int OC);

// tanh-approximated GELU (GPT-2's "gelu_new").
void gelu_forward(float* out, const float* inp, int64_t n);
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n);

// out[i] = a[i] + b[i]
void add_forward(float* out, const float* a, const float* b, int64_t n);

// Causal multi-head attention for the query columns [a, b) of B sequences of length T.
// qkv is the whole [T, B, 3C] buffer of the layer (columns < b already filled): the
// keys and values of columns < a are the KV cache. key_mask[t*B+s] = 0 hides column t
// of sequence s as a key (padding). A query sees keys at columns <= its own.
// out: rows of the pass ([(b-a)*B, C]). probs: [T, B, H, T] saved for the backward,
// or null at inference (softmax computed on the fly, nothing kept).
void attention_forward(float* out, float* probs, const float* qkv, const uint8_t* key_mask, int a, int b, int B,
                       int T, int C, int H);
// Backward for the queries [a, b): dq lands in dqkv rows [a, b); dK and dV of every
// column < b (this pass's and the cached ones) are accumulated into dqkv, so the
// earlier passes find their cache gradients there when their backward runs.
void attention_backward(float* dqkv, const float* dout, const float* probs, const float* qkv, int a, int b, int B,
                        int T, int C, int H);

// Tied LM head and softmax cross-entropy on N gathered rows: logits[N,V] = hidden wte^T.
// Returns sum over rows of -log p(target) * scale; overwrites logits with
// dlogits = (softmax - onehot) * scale. Targets must be in [0, V).
float cross_entropy_forward_backward(float* logits, const int* targets, int N, int V, float scale);

}  // namespace coconut::model
