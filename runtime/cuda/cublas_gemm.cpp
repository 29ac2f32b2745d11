// CublasContext (cublas_gemm.h): handle lifetime, the row-major sgemm mapping, and the
// cuBLASLt plans of the bf16 products with an epilogue (bias, GELU, GELU gradient).
#include "runtime/cuda/cublas_gemm.h"

#include <algorithm>

#include "runtime/check.h"

namespace coconut {

// 32 MiB: what NVIDIA recommends for Hopper (cuBLAS docs, cublasSetWorkspace).
constexpr size_t kWorkspaceBytes = size_t(32) << 20;

CublasContext::CublasContext() : workspace_(kWorkspaceBytes) {
  CUBLAS_CHECK(cublasCreate(&handle_));
  CUBLAS_CHECK(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH));
  CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_.data(), workspace_.bytes()));
}

// The descriptors of one cuBLASLt product and the algorithm chosen for it.
struct CublasContext::LtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool usable = false;

  LtPlan() = default;
  LtPlan(const LtPlan&) = delete;
  LtPlan& operator=(const LtPlan&) = delete;
  ~LtPlan() {  // must not throw: a failing destroy leaves nothing to retry
    if (d) (void)cublasLtMatrixLayoutDestroy(d);
    if (b) (void)cublasLtMatrixLayoutDestroy(b);
    if (a) (void)cublasLtMatrixLayoutDestroy(a);
    if (desc) (void)cublasLtMatmulDescDestroy(desc);
  }
};

CublasContext::~CublasContext() {
  // A destructor must not throw; a failing destroy leaves nothing to retry.
  lt_plans_.clear();
  if (lt_) (void)cublasLtDestroy(lt_);
  if (handle_) (void)cublasDestroy(handle_);
}

void CublasContext::set_stream(cudaStream_t stream) {
  stream_ = stream;
  CUBLAS_CHECK(cublasSetStream(handle_, stream));
  // cublasSetStream puts the handle back on cuBLAS's own workspace pool: ours again.
  CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_.data(), workspace_.bytes()));
}

void CublasContext::sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                          const float* a, int lda, const float* b, int ldb, float beta, float* c,
                          int ldc) {
  COCONUT_CHECK(m >= 0 && n >= 0 && k >= 0, "sgemm: negative size m={} n={} k={}", m, n, k);
  // Row strides must cover a stored row: A is m x k (k x m if transposed), B is k x n (n x k).
  const int a_cols = trans_a ? m : k, b_cols = trans_b ? k : n;
  COCONUT_CHECK(lda >= std::max(1, a_cols), "sgemm: lda={} is less than A's {} columns", lda, a_cols);
  COCONUT_CHECK(ldb >= std::max(1, b_cols), "sgemm: ldb={} is less than B's {} columns", ldb, b_cols);
  COCONUT_CHECK(ldc >= std::max(1, n), "sgemm: ldc={} is less than C's {} columns", ldc, n);
  if (m == 0 || n == 0) return;
  // See the header: column-major C^T (n x m) = op(B)^T (n x k) * op(A)^T (k x m).
  CUBLAS_CHECK(cublasSgemm(handle_, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                           trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, ldb, a, lda,
                           &beta, c, ldc));
}

namespace {

// The largest power of two up to 256 that divides the address: what cuBLASLt's
// heuristic may assume of a buffer (its default is 256).
uint32_t alignment_of(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}

template <typename T>
void set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute, const T& value) {
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof value));
}
template <typename T>
void set_pref(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attribute, const T& value) {
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attribute, &value, sizeof value));
}

}  // namespace

// One column-major cuBLASLt product D (M x N) = op(A) (M x K) B (K x N), all bf16 with
// leading dimensions M (D, aux), K (B) and the stored A's rows (M, or K when
// transposed), and its epilogue. Row-major callers pass their buffers swapped (see sgemm).
struct CublasContext::LtProduct {
  cublasLtEpilogue_t epilogue;
  bool trans_a;
  int M, N, K;
  const __nv_bfloat16* a;
  const __nv_bfloat16* b;
  __nv_bfloat16* d;
  const __nv_bfloat16* bias;  // the BIAS epilogues
  __nv_bfloat16* aux;         // the GELU epilogues: [N][M], leading dimension M
};

bool CublasContext::lt_matmul(const LtProduct& p) {
  COCONUT_CHECK(p.M > 0 && p.N > 0 && p.K > 0 && p.a && p.b && p.d, "cuBLASLt product: bad operands M={} N={} K={}",
                p.M, p.N, p.K);
  // cuBLASLt reads and writes the GELU epilogues' aux matrix in 16-byte vectors.
  if (p.aux && (alignment_of(p.aux) < 16 || p.M % 8 != 0)) return false;
  if (!lt_) CUBLAS_CHECK(cublasLtCreate(&lt_));
  const std::array<int64_t, 10> key = {int64_t(p.epilogue), p.trans_a,           p.M,
                                       p.N,                 p.K,                 alignment_of(p.a),
                                       alignment_of(p.b),   alignment_of(p.d),   p.bias ? alignment_of(p.bias) : 0,
                                       p.aux ? alignment_of(p.aux) : 0};
  std::unique_ptr<LtPlan>& slot = lt_plans_[key];
  if (!slot) {
    auto plan = std::make_unique<LtPlan>();
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t op_a = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    set_desc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, op_a);
    set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(p.epilogue));
    if (p.bias) set_desc(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(p.bias));
    if (p.aux) {
      set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<void*>(p.aux));
      set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(p.M));
    }
    if (p.trans_a) CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, p.K, p.M, p.K));
    else CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, p.M, p.K, p.M));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_16BF, p.K, p.N, p.K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->d, CUDA_R_16BF, p.M, p.N, p.M));
    cublasLtMatmulPreference_t pref = nullptr;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
    try {
      set_pref(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t(workspace_.bytes()));
      set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignment_of(p.a));
      set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignment_of(p.b));
      set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignment_of(p.d));
      set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignment_of(p.d));
      status = cublasLtMatmulAlgoGetHeuristic(lt_, plan->desc, plan->a, plan->b, plan->d, plan->d, pref, 1, &result,
                                              &found);
    } catch (...) {
      (void)cublasLtMatmulPreferenceDestroy(pref);
      throw;
    }
    (void)cublasLtMatmulPreferenceDestroy(pref);
    plan->usable = status == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS &&
                   result.workspaceSize <= workspace_.bytes();
    if (plan->usable) plan->algo = result.algo;
    slot = std::move(plan);
  }
  const LtPlan& plan = *slot;
  if (!plan.usable) return false;
  // The plan is per shape and alignment: this call's buffers go into its descriptor.
  if (p.bias) set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(p.bias));
  if (p.aux) set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<void*>(p.aux));
  const float alpha = 1.f, beta = 0.f;
  CUBLAS_CHECK(cublasLtMatmul(lt_, plan.desc, &alpha, p.a, plan.a, p.b, plan.b, &beta, p.d, plan.d, p.d, plan.d,
                              &plan.algo, workspace_.data(), workspace_.bytes(), stream_));
  return true;
}

// Column-major, as cuBLAS sees row-major buffers (see sgemm): out^T (OC x N) = W^T
// (OC x IC, W's row-major storage read as is) times inp^T (IC x N); the bias runs along
// the column-major rows, one per output channel.
bool CublasContext::linear_bias_bf16(const __nv_bfloat16* inp, const __nv_bfloat16* w, const __nv_bfloat16* bias,
                                     __nv_bfloat16* out, int N, int IC, int OC) {
  COCONUT_CHECK(bias, "linear_bias_bf16: no bias");
  return lt_matmul({CUBLASLT_EPILOGUE_BIAS, false, OC, N, IC, w, inp, out, bias, nullptr});
}

bool CublasContext::linear_gelu_bf16(const __nv_bfloat16* inp, const __nv_bfloat16* w, const __nv_bfloat16* bias,
                                     __nv_bfloat16* out, __nv_bfloat16* pre, int N, int IC, int OC) {
  COCONUT_CHECK(bias && pre, "linear_gelu_bf16: no bias or no pre-activation buffer");
  return lt_matmul({CUBLASLT_EPILOGUE_GELU_AUX_BIAS, false, OC, N, IC, w, inp, out, bias, pre});
}

// dpre^T (IC x N) = (W's storage, OC x IC, transposed) times dout^T (OC x N).
bool CublasContext::linear_dgelu_bf16(const __nv_bfloat16* dout, const __nv_bfloat16* w, const __nv_bfloat16* pre,
                                      __nv_bfloat16* dpre, int N, int IC, int OC) {
  COCONUT_CHECK(pre, "linear_dgelu_bf16: no pre-activation buffer");
  // The epilogue only reads aux here; the descriptor's pointer type is not const.
  return lt_matmul({CUBLASLT_EPILOGUE_DGELU, true, IC, N, OC, w, dout, dpre, nullptr,
                    const_cast<__nv_bfloat16*>(pre)});
}

}  // namespace coconut
