// CUDA ops of the GPT-2 decoder: the device counterparts of model/ops.h (the CPU
// reference), with the same semantics, layouts and argument order, on device pointers.
// Every op is queued on a stream and returns without waiting; nothing here allocates
// device memory (callers size their buffers and workspaces once, so the many small
// latent passes cost no cudaMalloc).
//
// Conventions, as on the CPU: N rows (time-major rows t*B+s of one pass), C channels;
// backward functions ACCUMULATE (+=) into every gradient they write.
//
// Precision: every op has an fp32 form. The ops that carry activations (embedding,
// layer norm, GELU, residual add, dropout, linear) also have a bf16 form for mixed
// precision: bf16 storage, fp32 arithmetic, and fp32 parameter gradients (dw, db,
// embedding tables), which the optimizer applies to fp32 master weights (adamw_step
// writes the bf16 copy the forward reads). Attention has both forms too; the loss reads
// fp32 logits and writes their gradient in either.
//
// Randomness: dropout masks are the CPU's bit for bit. A row's stream is a CounterRng
// (runtime/rng.h); the device gets its key and stream hash (DropoutKeys) and runs the
// same Philox4x32-10, so element e of a row is u32 number first + e of that stream.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "runtime/cuda/cublas_gemm.h"

namespace coconut {
class CounterRng;
}

namespace coconut::gpu {

using bf16 = __nv_bfloat16;

// ---------------------------------------------------------------- conversions

void convert(bf16* out, const float* in, int64_t n, cudaStream_t stream);  // round to nearest even
void convert(float* out, const bf16* in, int64_t n, cudaStream_t stream);   // exact

// ---------------------------------------------------------------- embedding

// out[r] = wte[tokens[r]] for n rows of C. Token ids must be in [0, V): the caller
// checks them on the host, where the batch is built.
void embed_tokens(float* out, const float* wte, const int* tokens, int n, int C, cudaStream_t stream);
void embed_tokens(bf16* out, const bf16* wte, const int* tokens, int n, int C, cudaStream_t stream);
// dwte[tokens[r]] += d[r], token ids in [0, V). The rows of one token are added in row
// order (one block per distinct id walks its rows), so repeated tokens add in a fixed
// order: deterministic, no atomics. Over more than kUnsortedEmbeddingRows rows a stable
// radix sort over the bits V needs groups the ids first; fewer rows (a latent pass's
// positions) skip the sort: each row's block looks for its id among the earlier rows.
// `workspace` holds embedding_backward_workspace_bytes(n) bytes (the sort's scratch).
constexpr int kUnsortedEmbeddingRows = 256;
size_t embedding_backward_workspace_bytes(int n);
void embed_tokens_backward(float* dwte, const float* d, const int* tokens, int n, int C, int V, void* workspace,
                           cudaStream_t stream);
void embed_tokens_backward(float* dwte, const bf16* d, const int* tokens, int n, int C, int V, void* workspace,
                           cudaStream_t stream);

// out[ids[r]] = in[r] for n rows (the ids distinct): the inverse of a row gather
// (embed_tokens gathers rows of any table).
void scatter_rows(float* out, const float* in, const int* ids, int n, int C, cudaStream_t stream);
void scatter_rows(bf16* out, const bf16* in, const int* ids, int n, int C, cudaStream_t stream);

// x[r] = in[r] + wpe[pos[r]] (x may be in): the input embedding of a pass. Position ids
// must be in [0, max_positions) (checked on the host, as for tokens).
void add_position_embedding(float* x, const float* in, const float* wpe, const int* pos, int n, int C,
                            cudaStream_t stream);
void add_position_embedding(bf16* x, const bf16* in, const bf16* wpe, const int* pos, int n, int C,
                            cudaStream_t stream);
// dwpe[pos[r]] += d[r], positions in [0, max_positions), rows in order (as
// embed_tokens_backward, same workspace).
void position_embedding_backward(float* dwpe, const float* d, const int* pos, int n, int C, int max_positions,
                                 void* workspace, cudaStream_t stream);
void position_embedding_backward(float* dwpe, const bf16* d, const int* pos, int n, int C, int max_positions,
                                 void* workspace, cudaStream_t stream);

// ---------------------------------------------------------------- layer norm

// out[N,C] = (inp - mean) * rstd * w + b per row; mean/rstd [N] fp32 for the backward.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                       int N, int C, float eps, cudaStream_t stream);
void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const bf16* w, const bf16* b, int N,
                       int C, float eps, cudaStream_t stream);
// dinp += ..., dw += ..., db += ... (dw/db summed over rows in a fixed order: chunks of
// rows, then the chunks in order). `scratch` holds column_sums_scratch_floats(C) floats
// (it may be null when N <= 256: one chunk).
void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                        const float* mean, const float* rstd, int N, int C, float* scratch, cudaStream_t stream);
void layernorm_backward(bf16* dinp, float* dw, float* db, const bf16* dout, const bf16* inp, const bf16* w,
                        const float* mean, const float* rstd, int N, int C, float* scratch, cudaStream_t stream);
// Device scratch (floats) of the column sums over rows in layernorm_backward and
// linear_backward's bias gradient, for C columns.
size_t column_sums_scratch_floats(int C);

// ---------------------------------------------------------------- GELU, residual

// tanh-approximated GELU ("gelu_new"); the backward overwrites dinp (as the CPU op).
void gelu_forward(float* out, const float* inp, int64_t n, cudaStream_t stream);
void gelu_forward(bf16* out, const bf16* inp, int64_t n, cudaStream_t stream);
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n, cudaStream_t stream);
void gelu_backward(bf16* dinp, const bf16* inp, const bf16* dout, int64_t n, cudaStream_t stream);

// out[i] = a[i] + b[i] (out may be a or b).
void add_forward(float* out, const float* a, const float* b, int64_t n, cudaStream_t stream);
void add_forward(bf16* out, const bf16* a, const bf16* b, int64_t n, cudaStream_t stream);

// ---------------------------------------------------------------- dropout

// One row's counter stream on the device: CounterRng's key and stream hash.
struct RowStream {
  uint32_t key0 = 0, key1 = 0;
  uint64_t hash = 0;
};
RowStream row_stream(const CounterRng& rng);

// The device form of model::Dropout: `rows` is a device array of one RowStream per row
// of the pass (in pass row order); key_pos a device array [T*B] of position ids.
struct DropoutKeys {
  float p = 0;
  const RowStream* rows = nullptr;
  uint64_t first = 0;
  const int* key_pos = nullptr;  // attention only (see model::Dropout)
  int head_stride = 0;           // attention only
};

// out[e] = u32 number first + e of the stream, e in [0, n) (device array): the device
// Philox, exposed so that tests compare it with model::dropout_words.
void dropout_words(uint32_t* out, RowStream rs, uint64_t first, int n, cudaStream_t stream);

// out[r, c] = in[r, c] * keep(r, c) / (1 - p) for a [rows, width] block (out may be in);
// the same call on the gradient is the backward.
void dropout_apply(float* out, const float* in, int rows, int width, const DropoutKeys& d, cudaStream_t stream);
void dropout_apply(bf16* out, const bf16* in, int rows, int width, const DropoutKeys& d, cudaStream_t stream);

// ---------------------------------------------------------------- linear (cuBLAS)

// out[N,OC] = inp[N,IC] W[IC,OC] + bias[OC] (Conv1D layout; bias may be null), on the
// stream of `cublas`. fp32: cublasSgemm (no TF32). bf16: cublasGemmEx with fp32 compute.
void linear_forward(CublasContext& cublas, float* out, const float* inp, const float* w, const float* bias, int N,
                    int IC, int OC);
void linear_forward(CublasContext& cublas, bf16* out, const bf16* inp, const bf16* w, const bf16* bias, int N,
                    int IC, int OC);
// dinp = dout W^T (overwritten, as the CPU op), dw += inp^T dout, dbias += column sums of
// dout (dbias may be null; the sums use `scratch`, column_sums_scratch_floats(OC) floats,
// which may be null when dbias is or N <= 256).
// Weight gradients are fp32 in both forms (bf16 products accumulate into fp32 C).
void linear_backward(CublasContext& cublas, float* dinp, float* dw, float* dbias, const float* dout,
                     const float* inp, const float* w, int N, int IC, int OC, float* scratch);
void linear_backward(CublasContext& cublas, bf16* dinp, float* dw, float* dbias, const bf16* dout, const bf16* inp,
                     const bf16* w, int N, int IC, int OC, float* scratch);

// The MLP's first layer and its GELU: pre[N,OC] = inp W + bias (kept: the backward reads
// it) and out = gelu(pre). bf16: one cuBLASLt product writes both (GELU in the epilogue)
// where cuBLASLt has an algorithm; else, and in fp32, linear_forward then gelu_forward.
void linear_gelu_forward(CublasContext& cublas, float* out, float* pre, const float* inp, const float* w,
                         const float* bias, int N, int IC, int OC);
void linear_gelu_forward(CublasContext& cublas, bf16* out, bf16* pre, const bf16* inp, const bf16* w,
                         const bf16* bias, int N, int IC, int OC);
// The backward of a linear layer whose input was gelu(pre) (the MLP's second layer), into
// the GELU: dpre = (dout W^T) * gelu'(pre) (overwritten), dw += gelu(pre)^T dout with
// gelu(pre) given as `inp`, dbias += column sums of dout (scratch as linear_backward).
// bf16: the GELU's gradient in the epilogue of the dout W^T product where cuBLASLt has an
// algorithm; else, and in fp32, linear_backward into `dgelu` ([N, IC], scratch) then
// gelu_backward.
void linear_backward_gelu(CublasContext& cublas, float* dpre, float* dw, float* dbias, const float* dout,
                          const float* inp, const float* w, const float* pre, int N, int IC, int OC, float* scratch,
                          float* dgelu);
void linear_backward_gelu(CublasContext& cublas, bf16* dpre, float* dw, float* dbias, const bf16* dout,
                          const bf16* inp, const bf16* w, const bf16* pre, int N, int IC, int OC, float* scratch,
                          bf16* dgelu);

// Row-major C = alpha op(A) op(B) + beta C with bf16 A, B and fp32 accumulation; C is
// bf16 or fp32. Same argument conventions as CublasContext::sgemm.
void gemm_bf16(CublasContext& cublas, bool trans_a, bool trans_b, int m, int n, int k, float alpha, const bf16* a,
               int lda, const bf16* b, int ldb, float beta, bf16* c, int ldc);
void gemm_bf16(CublasContext& cublas, bool trans_a, bool trans_b, int m, int n, int k, float alpha, const bf16* a,
               int lda, const bf16* b, int ldb, float beta, float* c, int ldc);

// ---------------------------------------------------------------- attention

// Causal multi-head attention for the query columns [a, b) of B sequences of T columns,
// exactly model::attention_forward/backward (same layouts: qkv [T,B,3C], out rows of the
// pass [(b-a)*B, C], probs [T,B,H,T] or null at inference, key_mask [T*B] device bytes).
// The products are batched cuBLAS calls over the (sequence, head) pairs; the masked
// softmax, its backward and the dropout are kernels. `workspace` (device memory of at
// least attention_workspace_bytes(B, H, b - a, b) bytes) holds the pointer arrays and
// the [nq, nk] scratch per pair: size it once for the largest pass. probs_row0 as on
// the CPU: a probs buffer holding only the rows from probs_row0 on (one pass's: a*B).
size_t attention_workspace_bytes(int B, int H, int nq, int nk, bool bf16_inputs = false);
void attention_forward(CublasContext& cublas, float* out, float* probs, const float* qkv, const uint8_t* key_mask,
                       int a, int b, int B, int T, int C, int H, const DropoutKeys* drop, void* workspace,
                       int64_t probs_row0 = 0);
void attention_backward(CublasContext& cublas, float* dqkv, const float* dout, const float* probs,
                        const float* qkv, int a, int b, int B, int T, int C, int H, const DropoutKeys* drop,
                        void* workspace, int64_t probs_row0 = 0);
// bf16 inputs: q|k|v, the output and its gradient in bf16, products on tensor cores
// with fp32 accumulation; scores, dP and dqkv (accumulated over passes) in fp32; the
// saved probabilities [T,B,H,T] in bf16, the operand of the products as autocast
// frameworks keep them (half the bytes of fp32, and no conversion before P V and
// P^T dY); dS is rounded to bf16 for its products. The workspace is
// attention_workspace_bytes(..., true).
void attention_forward(CublasContext& cublas, bf16* out, bf16* probs, const bf16* qkv, const uint8_t* key_mask, int a,
                       int b, int B, int T, int C, int H, const DropoutKeys* drop, void* workspace,
                       int64_t probs_row0 = 0);
void attention_backward(CublasContext& cublas, float* dqkv, const bf16* dout, const bf16* probs, const bf16* qkv,
                        int a, int b, int B, int T, int C, int H, const DropoutKeys* drop, void* workspace,
                        int64_t probs_row0 = 0);

// Fused (flash-style) bf16 attention, the function of the bf16 attention_forward/backward
// without their [nq, nk] buffers: blocks of 64 query rows (64 keys for dK/dV) per
// (sequence, head) walk the other side in tiles through shared memory, with tensor-core
// products and an online softmax; the forward saves the log-sum-exp of each query row
// and head, lse [T,B,H] fp32 (row t*B+s, +inf for a row that sees no key), and the
// backward recomputes the probabilities from it. Deterministic (no atomics). Head size
// 64 only (flash_attention_supported), no dropout. The backward reads the forward's
// output `out` and takes flash_attention_workspace_bytes(B, H, b - a) of workspace.
bool flash_attention_supported(int C, int H);
size_t flash_attention_workspace_bytes(int B, int H, int nq);
void flash_attention_forward(bf16* out, float* lse, const bf16* qkv, const uint8_t* key_mask, int a, int b, int B,
                             int T, int C, int H, cudaStream_t stream);
void flash_attention_backward(float* dqkv, const bf16* dout, const bf16* out, const float* lse, const bf16* qkv,
                              const uint8_t* key_mask, int a, int b, int B, int T, int C, int H, void* workspace,
                              cudaStream_t stream);

// ---------------------------------------------------------------- loss

// Softmax cross-entropy on fp32 logits [N, V] with row stride ld >= V: row_loss[r] =
// -log p(target) * scale and dlogits[r] = (softmax - onehot) * scale, with the same row
// stride and its columns [V, ld) set to 0. dlogits may be the logits themselves (fp32)
// or a bf16 buffer (the mixed-precision LM head's products read bf16). A row whose
// target is negative (-100, the ignore label) is skipped: loss 0, dlogits 0, so callers
// need not gather rows. Targets >= 0 must be < V (checked on the host by the caller).
// The LM head pads V to a multiple of 64 (GPT-2's 50257 to 50304) with zero weight
// rows: with an odd V as a product's extent cuBLAS falls back to unaligned kernels.
void cross_entropy_forward_backward(const float* logits, int ld, float* dlogits, float* row_loss, const int* targets,
                                    int N, int V, float scale, cudaStream_t stream);
void cross_entropy_forward_backward(const float* logits, int ld, bf16* dlogits, float* row_loss, const int* targets,
                                    int N, int V, float scale, cudaStream_t stream);
// The same with the scale read from device memory when the kernel runs: a captured CUDA
// graph then serves every step's scale (1 / the step's targets) without a new capture.
void cross_entropy_forward_backward(const float* logits, int ld, float* dlogits, float* row_loss, const int* targets,
                                    int N, int V, const float* scale, cudaStream_t stream);
void cross_entropy_forward_backward(const float* logits, int ld, bf16* dlogits, float* row_loss, const int* targets,
                                    int N, int V, const float* scale, cudaStream_t stream);
// out[r] = the column of the first maximum of logits row r over [0, V) (row stride ld):
// greedy decoding's token, as std::max_element picks it on the CPU.
void argmax_rows(const float* logits, int ld, int N, int V, int* out, cudaStream_t stream);

// ---------------------------------------------------------------- optimizer

// A run of the shard's elements that share the weight-decay decision (model/adamw.h).
struct DecaySegment {
  size_t begin = 0, end = 0;  // in the full buffer's coordinates
  bool decay = false;
};

struct AdamWHyper {
  float lr = 1e-4f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.01f;
};

// One AdamW update of params[begin, end) (fp32 master weights) from grads over the
// segments [shard_begin, ...) with moments m, v indexed from shard_begin, as
// model::AdamW::step; `step` is the step count after the increment (>= 1). When
// params_bf16 is not null, it receives the updated weights rounded to bf16 (the copy the
// mixed-precision forward reads; indexed like params).
void adamw_step(float* params, const float* grads, float* m, float* v, size_t shard_begin,
                const std::vector<DecaySegment>& segments, const AdamWHyper& hyper, int64_t step, bf16* params_bf16,
                cudaStream_t stream);

// Sum of squares of x[0, n) in double, reduced in a fixed order (deterministic).
// `partial` is device scratch of kSumSquaresBlocks doubles; the result lands in *out
// (a device double). sum_of_squares_host waits for it and returns it.
constexpr int kSumSquaresBlocks = 256;
void sum_of_squares(double* out, const float* x, size_t n, double* partial, cudaStream_t stream);
double sum_of_squares_host(const float* x, size_t n, cudaStream_t stream);
// grads *= min(1, max_norm / (global_norm + 1e-6)), as model::clip_grads.
void clip_grads(float* grads, size_t n, double global_norm, float max_norm, cudaStream_t stream);

}  // namespace coconut::gpu
