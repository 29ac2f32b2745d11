// Attention for a pass of one query column (a latent pass: each sequence's next
// continuous thought), bf16 inputs: one block per (sequence, head) pair does the whole
// forward (scores, masked softmax, the weighted sum of V) or the whole backward (dP,
// dS, dQ, and the pair's columns of dK and dV), where the batched path runs four or six
// kernels of cuBLAS products over [1, nk] matrices. The arithmetic is the batched path's
// (fp32 sums of bf16 products, the saved probabilities and dS rounded to bf16), in
// another summation order; deterministic (fixed orders, no atomics). Used by the bf16
// attention_forward/backward of ops_attention.cu for such passes without dropout.
// Only for .cu files: the public interface is ops.h.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/cuda/ops.h"

namespace coconut::gpu::detail {

// Whether the kernels' shared memory holds a pass whose query sits at column a (a + 1
// keys) with head size hd.
bool attention_row_fits(int a, int hd);
// The pass of column a: out rows [B, C] (the pass's), probs [T,B,H,T] from row probs_row0
// or null; the query's own row and every earlier one as keys.
void attention_row_forward(bf16* out, bf16* probs, const bf16* qkv, const uint8_t* key_mask, int a, int B, int T,
                           int C, int H, int64_t probs_row0, cudaStream_t stream);
// dqkv (fp32, accumulated): the query row's q part and the key rows' k and v parts of
// this pair's head.
void attention_row_backward(float* dqkv, const bf16* dout, const bf16* probs, const bf16* qkv, int a, int B, int T,
                            int C, int H, int64_t probs_row0, cudaStream_t stream);

}  // namespace coconut::gpu::detail
