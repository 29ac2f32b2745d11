// The fused (flash-style) bf16 attention (gpu::flash_attention_forward/backward) against
// the CPU op (model::attention_forward/backward) on random bf16-rounded inputs, part of
// the test_cuda_ops binary: head size 64, several 64-column tiles, passes over a KV
// cache, a one-column latent pass, left padding (a query row that sees no key), and a
// log-sum-exp checked against one computed here in double. Tolerances: cpu_compare.h.
// Labelled gpu; skipped without a GPU (gpu_fixture.h).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "model/ops.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/ops.h"
#include "tests/gpu/cpu_compare.h"
#include "tests/gpu/gpu_fixture.h"

namespace coconut {
namespace {

using namespace testing_gpu;  // the comparison helpers of cpu_compare.h
using gpu::bf16;
using Gpu = GpuTest;

// log sum_j exp(q.k_j / sqrt(64)) over the visible keys of query column t of (s, h), in
// double; +inf when no key is visible (what the fused forward stores).
double reference_lse(const std::vector<float>& qkv, const std::vector<uint8_t>& mask, const AttentionCase& c, int t,
                     int s, int h) {
  const int hd = c.C / c.H;
  const float* q = qkv.data() + (size_t(t) * c.B + s) * 3 * c.C + h * hd;
  std::vector<double> scores;
  for (int j = 0; j <= t; ++j) {
    if (!mask[size_t(j) * c.B + s]) continue;
    const float* k = qkv.data() + (size_t(j) * c.B + s) * 3 * c.C + c.C + h * hd;
    double dot = 0;
    for (int d = 0; d < hd; ++d) dot += double(q[d]) * k[d];
    scores.push_back(dot / std::sqrt(double(hd)));
  }
  if (scores.empty()) return std::numeric_limits<double>::infinity();
  double m = scores[0], sum = 0;
  for (double x : scores) m = std::max(m, x);
  for (double x : scores) sum += std::exp(x - m);
  return m + std::log(sum);
}

TEST_F(Gpu, FlashAttentionSupportsHeadSize64Only) {
  EXPECT_TRUE(gpu::flash_attention_supported(768, 12));
  EXPECT_TRUE(gpu::flash_attention_supported(128, 2));
  EXPECT_FALSE(gpu::flash_attention_supported(16, 2));
  EXPECT_FALSE(gpu::flash_attention_supported(256, 2));
  EXPECT_THROW(gpu::flash_attention_forward(nullptr, nullptr, nullptr, nullptr, 0, 1, 1, 1, 16, 2, nullptr), Error);
}

TEST_F(Gpu, FlashAttentionIsCloseToCpu) {
  // Whole sequences over several tiles, passes over a KV cache (tile-aligned or not),
  // one-column latent passes, a partial last tile.
  const std::vector<AttentionCase> cases = {{3, 150, 128, 2, 0, 150}, {3, 150, 128, 2, 100, 150},
                                        {3, 150, 128, 2, 120, 121}, {2, 200, 64, 1, 64, 192},
                                        {4, 70, 192, 3, 0, 70},     {2, 9, 128, 2, 3, 4}};
  for (const AttentionCase& t : cases) {
    SCOPED_TRACE(testing::Message() << "B=" << t.B << " T=" << t.T << " C=" << t.C << " H=" << t.H << " [" << t.a
                                    << ", " << t.b << ")");
    const int nq = t.b - t.a, rows = nq * t.B;
    std::vector<uint8_t> mask;
    std::vector<int> pos;  // unused: no dropout
    attention_inputs(t, mask, pos);
    const std::vector<float> qkv = round_bf16(random_vector(size_t(t.T) * t.B * 3 * t.C, 60, -2.f, 2.f));
    std::vector<float> out(size_t(rows) * t.C), probs(size_t(t.T) * t.B * t.H * t.T, 0.f);
    model::attention_forward(out.data(), probs.data(), qkv.data(), mask.data(), t.a, t.b, t.B, t.T, t.C, t.H);
    const std::vector<float> dout = round_bf16(random_vector(out.size(), 61));
    const std::vector<float> dqkv0 = random_vector(qkv.size(), 62);
    std::vector<float> dqkv = dqkv0;
    model::attention_backward(dqkv.data(), dout.data(), probs.data(), qkv.data(), t.a, t.b, t.B, t.T, t.C, t.H);

    // Poisoned outputs: every element the op owns must be written, nothing else.
    DeviceBuffer<bf16> gqkv = upload_bf16(qkv), gout = upload_bf16(std::vector<float>(out.size(), NAN));
    const float kUntouched = 7.f;
    const size_t lse_size = size_t(t.T) * t.B * t.H;
    DeviceBuffer<float> glse = upload(std::vector<float>(lse_size, kUntouched));
    DeviceBuffer<uint8_t> gmask = upload(mask);
    gpu::flash_attention_forward(gout.data(), glse.data(), gqkv.data(), gmask.data(), t.a, t.b, t.B, t.T, t.C, t.H,
                                 nullptr);
    expect_close(download(gout, out.size()), out, kBf16, "fused attention out");
    const std::vector<float> lse = download(glse, lse_size);
    for (int c = 0; c < t.T; ++c)
      for (int s = 0; s < t.B; ++s)
        for (int h = 0; h < t.H; ++h) {
          const float got = lse[(size_t(c) * t.B + s) * t.H + h];
          if (c < t.a || c >= t.b) {
            ASSERT_EQ(got, kUntouched) << "lse of column " << c << " outside the pass was written";
            continue;
          }
          const double want = reference_lse(qkv, mask, t, c, s, h);
          if (std::isinf(want)) {
            EXPECT_TRUE(std::isinf(got) && got > 0) << "column " << c << " sample " << s << " sees no key: " << got;
          } else {
            EXPECT_NEAR(got, want, 1e-4 * std::max(1.0, std::abs(want))) << "lse column " << c << " sample " << s;
          }
        }

    // The backward, from the fused forward's output and lse (what the model keeps),
    // accumulating into dqkv0; twice, for the same bits.
    DeviceBuffer<bf16> gdout = upload_bf16(dout);
    DeviceBuffer<float> gdqkv = upload(dqkv0);
    DeviceBuffer<char> ws(gpu::flash_attention_workspace_bytes(t.B, t.H, nq));
    gpu::flash_attention_backward(gdqkv.data(), gdout.data(), gout.data(), glse.data(), gqkv.data(), gmask.data(),
                                  t.a, t.b, t.B, t.T, t.C, t.H, ws.data(), nullptr);
    const std::vector<float> got = download(gdqkv, dqkv.size());
    // Compared as increments, so that the accumulated start values cannot hide them.
    std::vector<float> got_increment(got.size()), want_increment(got.size());
    for (size_t i = 0; i < got.size(); ++i) {
      got_increment[i] = got[i] - dqkv0[i];
      want_increment[i] = dqkv[i] - dqkv0[i];
    }
    expect_close(got_increment, want_increment, kBf16, "fused attention dqkv increment");
    gdqkv.copy_from_host(dqkv0);
    gpu::flash_attention_backward(gdqkv.data(), gdout.data(), gout.data(), glse.data(), gqkv.data(), gmask.data(),
                                  t.a, t.b, t.B, t.T, t.C, t.H, ws.data(), nullptr);
    EXPECT_EQ(download(gdqkv, dqkv.size()), got) << "two identical backward calls differ";
  }
}

}  // namespace
}  // namespace coconut
