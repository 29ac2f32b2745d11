// Helpers of the CUDA op tests (test_cuda_ops.cpp, test_cuda_attention_optim.cpp):
// random inputs, bf16 rounding, host <-> device copies, the normwise comparison and the
// CPU's dropout streams. Tolerances (normwise: max_i |gpu_i - cpu_i| <= tol * max_i |cpu_i|):
//   exact (0)  fp32 ops that do the same float operations in the same order on both
//              sides: embedding gather and its backward (rows summed in row order),
//              row scatter, position embedding, residual add, dropout (same Philox
//              words, same product), clipping; the Philox words themselves.
//   1e-5       fp32 ops whose sums run in another order or use another libm: layer
//              norm, GELU (tanhf vs the CPU's polynomial tanh, ~1e-7), linear and
//              attention (cuBLAS vs OpenBLAS dot products of length <= 256), softmax
//              cross-entropy, AdamW.
//   1e-12      the double sum of squares (relative).
//   1e-4       fp32 results computed from bf16 inputs (parameter gradients of the bf16
//              ops): the CPU sees the same bf16-rounded inputs, only the summation
//              order and the tensor-core accumulation differ.
//   2e-2       bf16 outputs: inputs rounded to bf16 on both sides, the CPU computes in
//              fp32, the GPU rounds its result to bf16 (2^-8 relative per rounding,
//              a few roundings per op).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "runtime/cuda/device.h"
#include "runtime/cuda/ops.h"
#include "runtime/rng.h"

namespace coconut::testing_gpu {

using gpu::bf16;

constexpr double kExact = 0, kFp32 = 1e-5, kFromBf16 = 1e-4, kBf16 = 2e-2;

inline std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// Rounds every value to bf16 (what the bf16 ops store), kept as float for the CPU.
inline std::vector<float> round_bf16(const std::vector<float>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = __bfloat162float(__float2bfloat16_rn(v[i]));
  return r;
}

template <typename T>
DeviceBuffer<T> upload(const std::vector<T>& host) {
  DeviceBuffer<T> d(std::max<size_t>(host.size(), 1));
  d.copy_from_host(host);
  return d;
}

// bf16 device buffers from and to float vectors.
inline DeviceBuffer<bf16> upload_bf16(const std::vector<float>& host) {
  std::vector<bf16> h(host.size());
  for (size_t i = 0; i < host.size(); ++i) h[i] = __float2bfloat16_rn(host[i]);
  return upload(h);
}
inline std::vector<float> download(const DeviceBuffer<bf16>& d, size_t n) {
  std::vector<bf16> h(n);
  d.copy_to_host(h.data(), n);
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) f[i] = __bfloat162float(h[i]);
  return f;
}
inline std::vector<float> download(const DeviceBuffer<float>& d, size_t n) {
  std::vector<float> h(n);
  d.copy_to_host(h.data(), n);
  return h;
}

inline void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol,
                         const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double max_want = 0, max_err = 0;
  size_t worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    max_want = std::max(max_want, std::abs(double(want[i])));
    const double err = std::abs(double(got[i]) - double(want[i]));
    if (std::isnan(err)) {  // the first NaN is the verdict: a later finite error must not hide it
      max_err = err;
      worst = i;
      break;
    }
    if (err > max_err) {
      max_err = err;
      worst = i;
    }
  }
  EXPECT_LE(max_err, tol * max_want) << what << ": worst element " << worst << " gpu " << got[worst] << " cpu "
                                     << want[worst] << " (max |cpu| " << max_want << ", tolerance " << tol << ")";
}

// An attention pass: B sequences of T columns, C channels in H heads, query columns [a, b).
struct AttentionCase {
  int B, T, C, H, a, b;
};

// Its key mask and position ids: sequences 1 and 3 are left-padded by 2 columns (masked
// keys, so their first query column sees no key), position ids from 0 at the first real
// column.
inline void attention_inputs(const AttentionCase& t, std::vector<uint8_t>& mask, std::vector<int>& pos) {
  mask.assign(size_t(t.T) * t.B, 1);
  pos.assign(size_t(t.T) * t.B, 0);
  for (int s = 0; s < t.B; ++s) {
    const int pad = s % 2 == 1 ? 2 : 0;
    for (int c = 0; c < t.T; ++c) {
      mask[size_t(c) * t.B + s] = c >= pad;
      pos[size_t(c) * t.B + s] = c >= pad ? c - pad : 0;
    }
  }
}

// The CPU's dropout streams: one CounterRng per row, as model/gpt2.cpp keys them.
inline std::vector<CounterRng> row_streams(int rows, uint64_t seed) {
  std::vector<CounterRng> streams;
  for (int r = 0; r < rows; ++r) streams.emplace_back(seed, std::initializer_list<uint64_t>{0xD809u, 3, uint64_t(r)});
  return streams;
}
inline DeviceBuffer<gpu::RowStream> upload_streams(const std::vector<CounterRng>& streams) {
  std::vector<gpu::RowStream> h;
  for (const CounterRng& s : streams) h.push_back(gpu::row_stream(s));
  return upload(h);
}

}  // namespace coconut::testing_gpu
