// CublasContext (cublas_gemm.h): handle lifetime, the row-major sgemm mapping, and the
// cuBLASLt plans of the bf16 linear layer with its bias in the epilogue.
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

bool CublasContext::linear_bias_bf16(const __nv_bfloat16* inp, const __nv_bfloat16* w, const __nv_bfloat16* bias,
                                     __nv_bfloat16* out, int N, int IC, int OC) {
  COCONUT_CHECK(N > 0 && IC > 0 && OC > 0 && inp && w && bias && out,
                "linear_bias_bf16: bad operands N={} IC={} OC={}", N, IC, OC);
  if (!lt_) CUBLAS_CHECK(cublasLtCreate(&lt_));
  const std::array<int64_t, 7> key = {N, IC, OC, alignment_of(inp), alignment_of(w), alignment_of(out),
                                      alignment_of(bias)};
  std::unique_ptr<LtPlan>& slot = lt_plans_[key];
  if (!slot) {
    auto plan = std::make_unique<LtPlan>();
    // Column-major, as cuBLAS sees row-major buffers (see sgemm): D (OC x N) = W (OC x IC)
    // times inp (IC x N), no transposes; the bias runs along D's rows, one per channel.
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_BIAS));
    set_desc(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(bias));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, OC, IC, OC));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_16BF, IC, N, IC));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->d, CUDA_R_16BF, OC, N, OC));
    cublasLtMatmulPreference_t pref = nullptr;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
    try {
      set_pref(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t(workspace_.bytes()));
      set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignment_of(w));
      set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignment_of(inp));
      set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignment_of(out));
      set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignment_of(out));
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
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(bias));
  const float alpha = 1.f, beta = 0.f;
  CUBLAS_CHECK(cublasLtMatmul(lt_, plan.desc, &alpha, w, plan.a, inp, plan.b, &beta, out, plan.d, out, plan.d,
                              &plan.algo, workspace_.data(), workspace_.bytes(), stream_));
  return true;
}

}  // namespace coconut
