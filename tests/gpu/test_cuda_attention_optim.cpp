// CUDA attention (over a column range with a KV cache and key mask), softmax
// cross-entropy and the optimizer ops (AdamW on a shard, sum of squares, clipping)
// against the CPU ops on random inputs, part of the test_cuda_ops binary. Tolerances
// per dtype: cpu_compare.h. Labelled gpu; skipped without a GPU (gpu_fixture.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "model/adamw.h"
#include "model/ops.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/ops.h"
#include "runtime/rng.h"
#include "tests/gpu/cpu_compare.h"
#include "tests/gpu/gpu_fixture.h"

namespace coconut {
namespace {

using namespace testing_gpu;  // the comparison helpers of cpu_compare.h
using gpu::bf16;
using Gpu = GpuTest;

// ---------------------------------------------------------------- attention

TEST_F(Gpu, AttentionMatchesCpu) {
  // Pass 0, a one-column latent pass over a KV cache, the final pass; odd head sizes.
  const std::vector<AttentionCase> cases = {
      {2, 9, 16, 2, 0, 5}, {2, 9, 16, 2, 5, 6}, {2, 9, 16, 2, 6, 9}, {3, 17, 24, 3, 0, 17}, {4, 33, 64, 4, 20, 21}};
  CublasContext cublas;
  for (const AttentionCase& t : cases) {
    for (float p : {0.f, 0.25f}) {
      SCOPED_TRACE(testing::Message() << "B=" << t.B << " T=" << t.T << " C=" << t.C << " H=" << t.H << " [" << t.a
                                      << ", " << t.b << ") dropout " << p);
      const int nq = t.b - t.a, rows = nq * t.B;
      std::vector<uint8_t> mask;
      std::vector<int> pos;
      attention_inputs(t, mask, pos);
      const std::vector<float> qkv = random_vector(size_t(t.T) * t.B * 3 * t.C, 40, -2.f, 2.f);
      const size_t probs_size = size_t(t.T) * t.B * t.H * t.T;
      const std::vector<CounterRng> streams = row_streams(rows, 77);
      model::Dropout cpu_drop{p, streams.data(), 3ull << 40, pos.data(), t.T};
      const model::Dropout* cd = p > 0 ? &cpu_drop : nullptr;

      std::vector<float> out(size_t(rows) * t.C), probs(probs_size, 0.f), out_infer(out.size());
      model::attention_forward(out.data(), probs.data(), qkv.data(), mask.data(), t.a, t.b, t.B, t.T, t.C, t.H, cd);
      if (p == 0)
        model::attention_forward(out_infer.data(), nullptr, qkv.data(), mask.data(), t.a, t.b, t.B, t.T, t.C, t.H);
      const std::vector<float> dout = random_vector(out.size(), 41);
      const std::vector<float> dqkv0 = random_vector(qkv.size(), 42);
      std::vector<float> dqkv = dqkv0;
      model::attention_backward(dqkv.data(), dout.data(), probs.data(), qkv.data(), t.a, t.b, t.B, t.T, t.C, t.H, cd);

      DeviceBuffer<gpu::RowStream> gstreams = upload_streams(streams);
      DeviceBuffer<int> gpos = upload(pos);
      gpu::DropoutKeys keys{p, gstreams.data(), cpu_drop.first, gpos.data(), t.T};
      const gpu::DropoutKeys* gd = p > 0 ? &keys : nullptr;
      DeviceBuffer<char> ws(gpu::attention_workspace_bytes(t.B, t.H, nq, t.b));
      DeviceBuffer<float> gqkv = upload(qkv), gout(out.size()), gprobs = upload(std::vector<float>(probs_size, 0.f));
      DeviceBuffer<uint8_t> gmask = upload(mask);
      gpu::attention_forward(cublas, gout.data(), gprobs.data(), gqkv.data(), gmask.data(), t.a, t.b, t.B, t.T, t.C,
                             t.H, gd, ws.data());
      expect_close(download(gout, out.size()), out, kFp32, "attention out");
      expect_close(download(gprobs, probs_size), probs, kFp32, "attention probs");
      if (p == 0) {
        gpu::attention_forward(cublas, gout.data(), nullptr, gqkv.data(), gmask.data(), t.a, t.b, t.B, t.T, t.C, t.H,
                               nullptr, ws.data());
        expect_close(download(gout, out.size()), out_infer, kFp32, "attention out (inference, no probs)");
      }
      // The backward from the CPU's probabilities, so that it is tested on its own.
      DeviceBuffer<float> cprobs = upload(probs), gdout = upload(dout), gdqkv = upload(dqkv0);
      gpu::attention_backward(cublas, gdqkv.data(), gdout.data(), cprobs.data(), gqkv.data(), t.a, t.b, t.B, t.T, t.C,
                              t.H, gd, ws.data());
      expect_close(download(gdqkv, dqkv.size()), dqkv, kFp32, "attention dqkv");

      // A probabilities buffer holding only this pass's rows (probs_row0 = a*B), as a
      // recomputed pass keeps them.
      const int64_t row0 = int64_t(t.a) * t.B;
      const size_t pass_probs = size_t(rows) * t.H * t.T;
      std::vector<float> pprobs(pass_probs, 0.f), pout(out.size()), pdqkv = dqkv0;
      model::attention_forward(pout.data(), pprobs.data(), qkv.data(), mask.data(), t.a, t.b, t.B, t.T, t.C, t.H, cd,
                               row0);
      model::attention_backward(pdqkv.data(), dout.data(), pprobs.data(), qkv.data(), t.a, t.b, t.B, t.T, t.C, t.H,
                                cd, row0);
      DeviceBuffer<float> gpp = upload(std::vector<float>(pass_probs, 0.f));
      gpu::attention_forward(cublas, gout.data(), gpp.data(), gqkv.data(), gmask.data(), t.a, t.b, t.B, t.T, t.C,
                             t.H, gd, ws.data(), row0);
      expect_close(download(gout, out.size()), pout, kFp32, "attention out (pass-sized probs)");
      expect_close(download(gpp, pass_probs), pprobs, kFp32, "attention pass-sized probs");
      gdqkv.copy_from_host(dqkv0);
      gpu::attention_backward(cublas, gdqkv.data(), gdout.data(), gpp.data(), gqkv.data(), t.a, t.b, t.B, t.T, t.C,
                              t.H, gd, ws.data(), row0);
      expect_close(download(gdqkv, dqkv.size()), pdqkv, kFp32, "attention dqkv (pass-sized probs)");
    }
  }
}

// The bf16 overloads: q|k|v and dout rounded to bf16 on both sides, the CPU op in fp32
// as the reference. The saved probabilities are bf16 (bf16 tolerance, and every element
// of the buffer written: it starts poisoned); the output and dqkv go through bf16
// operands (bf16 tolerance). The backward also runs from the CPU's probabilities
// rounded to bf16, so that it is tested on its own.
TEST_F(Gpu, AttentionInBf16IsCloseToCpu) {
  // T = 9, 17, 33: the saved probabilities are copied to an aligned scratch for the
  // products; T = 16, 24, 32 (multiples of 8): they are the products' operand directly.
  // Passes of one column without dropout run ops_attention_row.cu's kernels: head sizes
  // 8 and 16 (16 and 8 groups of threads over the keys), 64 (GPT-2's, 2 groups) and 128
  // (one group), with more keys than a warp has lanes.
  const std::vector<AttentionCase> cases = {
      {2, 9, 16, 2, 0, 5},    {2, 9, 16, 2, 5, 6},    {2, 9, 16, 2, 6, 9},     {3, 17, 24, 3, 0, 17},
      {4, 33, 64, 4, 20, 21}, {2, 16, 16, 2, 0, 16},  {3, 24, 24, 3, 10, 11},  {2, 32, 64, 4, 8, 32},
      {2, 40, 128, 2, 37, 38}, {2, 12, 256, 2, 7, 8}, {3, 48, 128, 2, 0, 1}};
  CublasContext cublas;
  for (const AttentionCase& t : cases) {
    for (float p : {0.f, 0.25f}) {
      SCOPED_TRACE(testing::Message() << "B=" << t.B << " T=" << t.T << " C=" << t.C << " H=" << t.H << " [" << t.a
                                      << ", " << t.b << ") dropout " << p);
      const int nq = t.b - t.a, rows = nq * t.B;
      std::vector<uint8_t> mask;
      std::vector<int> pos;
      attention_inputs(t, mask, pos);
      const std::vector<float> qkv = round_bf16(random_vector(size_t(t.T) * t.B * 3 * t.C, 40, -2.f, 2.f));
      const size_t probs_size = size_t(t.T) * t.B * t.H * t.T;
      const std::vector<CounterRng> streams = row_streams(rows, 77);
      model::Dropout cpu_drop{p, streams.data(), 3ull << 40, pos.data(), t.T};
      const model::Dropout* cd = p > 0 ? &cpu_drop : nullptr;
      std::vector<float> out(size_t(rows) * t.C), probs(probs_size, 0.f);
      model::attention_forward(out.data(), probs.data(), qkv.data(), mask.data(), t.a, t.b, t.B, t.T, t.C, t.H, cd);
      const std::vector<float> dout = round_bf16(random_vector(out.size(), 41));
      const std::vector<float> dqkv0 = random_vector(qkv.size(), 42);
      std::vector<float> dqkv = dqkv0;
      model::attention_backward(dqkv.data(), dout.data(), probs.data(), qkv.data(), t.a, t.b, t.B, t.T, t.C, t.H, cd);

      DeviceBuffer<gpu::RowStream> gstreams = upload_streams(streams);
      DeviceBuffer<int> gpos = upload(pos);
      gpu::DropoutKeys keys{p, gstreams.data(), cpu_drop.first, gpos.data(), t.T};
      const gpu::DropoutKeys* gd = p > 0 ? &keys : nullptr;
      DeviceBuffer<char> ws(gpu::attention_workspace_bytes(t.B, t.H, nq, t.b, true));
      DeviceBuffer<bf16> gqkv = upload_bf16(qkv), gout(out.size());
      // Rows of the pass are written in full (T columns); the others keep the CPU's zeros.
      std::vector<float> poisoned(probs_size, 0.f);
      for (int r = t.a * t.B; r < t.b * t.B; ++r)
        std::fill_n(poisoned.begin() + size_t(r) * t.H * t.T, size_t(t.H) * t.T, NAN);
      DeviceBuffer<bf16> gprobs = upload_bf16(poisoned);
      DeviceBuffer<uint8_t> gmask = upload(mask);
      gpu::attention_forward(cublas, gout.data(), gprobs.data(), gqkv.data(), gmask.data(), t.a, t.b, t.B, t.T, t.C,
                             t.H, gd, ws.data());
      expect_close(download(gout, out.size()), out, kBf16, "bf16 attention out");
      expect_close(download(gprobs, probs_size), probs, kBf16, "bf16 attention probs");
      DeviceBuffer<bf16> cprobs = upload_bf16(probs), gdout = upload_bf16(dout);
      DeviceBuffer<float> gdqkv = upload(dqkv0);
      gpu::attention_backward(cublas, gdqkv.data(), gdout.data(), cprobs.data(), gqkv.data(), t.a, t.b, t.B, t.T, t.C,
                              t.H, gd, ws.data());
      expect_close(download(gdqkv, dqkv.size()), dqkv, kBf16, "bf16 attention dqkv");
    }
  }
}

// ---------------------------------------------------------------- loss

TEST_F(Gpu, CrossEntropyMatchesCpuAndSkipsIgnoredRows) {
  for (int V : {5, 1000, 50257}) {
    SCOPED_TRACE(testing::Message() << "V=" << V);
    const int N = 7;
    const float scale = 1.f / 13;
    std::vector<float> logits = random_vector(size_t(N) * V, 50, -6.f, 6.f);
    const std::vector<int> targets = {3, -100, 0, V - 1, -100, 2, 4};
    // CPU: the labelled rows gathered, as the model's LM head does.
    std::vector<float> gathered;
    std::vector<int> kept;
    for (int r = 0; r < N; ++r)
      if (targets[r] >= 0) {
        gathered.insert(gathered.end(), logits.begin() + size_t(r) * V, logits.begin() + size_t(r + 1) * V);
        kept.push_back(targets[r]);
      }
    const float want_loss =
        model::cross_entropy_forward_backward(gathered.data(), kept.data(), int(kept.size()), V, scale);
    std::vector<float> want(logits.size(), 0.f);
    for (int r = 0, k = 0; r < N; ++r)
      if (targets[r] >= 0) {
        std::copy(gathered.begin() + size_t(k) * V, gathered.begin() + size_t(k + 1) * V, want.begin() + size_t(r) * V);
        ++k;
      }

    // On the device the rows are padded to a stride of V + 3 (the LM head pads V to a
    // multiple of 64); the gradient's padding must come back 0 (the padded products
    // read it), over a buffer that held something else.
    const int ld = V + 3;
    std::vector<float> padded(size_t(N) * ld, 42.f);
    for (int r = 0; r < N; ++r) std::copy(logits.begin() + size_t(r) * V, logits.begin() + size_t(r + 1) * V,
                                          padded.begin() + size_t(r) * ld);
    auto unpad = [&](const std::vector<float>& rows, const char* what) {
      std::vector<float> out(logits.size());
      for (int r = 0; r < N; ++r) {
        std::copy(rows.begin() + size_t(r) * ld, rows.begin() + size_t(r) * ld + V, out.begin() + size_t(r) * V);
        for (int j = V; j < ld; ++j) EXPECT_EQ(rows[size_t(r) * ld + j], 0.f) << what << ": padding of row " << r;
      }
      return out;
    };
    DeviceBuffer<float> g = upload(padded), row_loss(N);
    DeviceBuffer<int> gt = upload(targets);
    // bf16 gradient from fp32 logits (the mixed-precision LM head), into a poisoned buffer.
    DeviceBuffer<bf16> g_bf16(padded.size());
    gpu::convert(g_bf16.data(), g.data(), int64_t(padded.size()), nullptr);
    gpu::cross_entropy_forward_backward(g.data(), ld, g_bf16.data(), row_loss.data(), gt.data(), N, V, scale, nullptr);
    DeviceBuffer<float> g_from_bf16(padded.size());
    gpu::convert(g_from_bf16.data(), g_bf16.data(), int64_t(padded.size()), nullptr);
    expect_close(unpad(download(g_from_bf16, padded.size()), "bf16"), want, kBf16, "dlogits in bf16");
    const std::vector<float> losses_bf16 = row_loss.to_host();
    // fp32, in place.
    gpu::cross_entropy_forward_backward(g.data(), ld, g.data(), row_loss.data(), gt.data(), N, V, scale, nullptr);
    expect_close(unpad(download(g, padded.size()), "fp32"), want, kFp32, "dlogits");
    EXPECT_EQ(row_loss.to_host(), losses_bf16) << "the loss does not depend on the gradient's type";
    const std::vector<float> losses = row_loss.to_host();
    double total = 0;
    for (int r = 0; r < N; ++r) {
      if (targets[r] < 0) {
        EXPECT_EQ(losses[r], 0.f) << "ignored row " << r;
      }
      total += losses[r];
    }
    EXPECT_NEAR(total, want_loss, kFp32 * std::abs(want_loss));
  }
}

// ---------------------------------------------------------------- optimizer

TEST_F(Gpu, AdamWOnAShardMatchesCpu) {
  model::GPT2Config config;
  config.vocab_size = 11;
  config.max_positions = 8;
  config.n_layer = 2;
  config.n_head = 2;
  config.d_model = 8;
  const model::ParamLayout layout(config);
  const size_t total = layout.total(), begin = 13, end = total - 5;  // a shard cutting through tensors
  model::AdamWConfig cfg;
  cfg.lr = 1e-2f;
  cfg.weight_decay = 0.1f;
  cfg.decay_matrices_only = true;  // several decay segments
  model::AdamW cpu(cfg, layout, begin, end);
  ASSERT_GT(cpu.segments().size(), 2u);
  std::vector<gpu::DecaySegment> segments;
  for (const auto& s : cpu.segments()) segments.push_back({s.begin, s.end, s.decay});
  const gpu::AdamWHyper hyper{cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay};

  std::vector<float> params = random_vector(total, 60);
  DeviceBuffer<float> gparams = upload(params), gm = upload(std::vector<float>(end - begin, 0.f));
  DeviceBuffer<float> gv = upload(std::vector<float>(end - begin, 0.f));
  DeviceBuffer<bf16> copy = upload_bf16(std::vector<float>(total, 0.f));
  for (int step = 1; step <= 3; ++step) {
    const std::vector<float> grads = random_vector(total, 61 + step);
    cpu.step(params.data(), grads.data(), cfg.lr);
    DeviceBuffer<float> ggrads = upload(grads);
    gpu::adamw_step(gparams.data(), ggrads.data(), gm.data(), gv.data(), begin, segments, hyper, step, copy.data(),
                    nullptr);
  }
  const std::vector<float> got = download(gparams, total);
  expect_close(got, params, kFp32, "adamw params");
  expect_close(download(gm, end - begin), cpu.m(), kFp32, "adamw m");
  expect_close(download(gv, end - begin), cpu.v(), kFp32, "adamw v");
  // Outside the shard nothing moves; inside, the bf16 copy is the rounded master weight.
  const std::vector<float> start = random_vector(total, 60), bf = download(copy, total);
  for (size_t i = 0; i < total; ++i) {
    if (i < begin || i >= end) {
      ASSERT_EQ(got[i], start[i]) << "element " << i << " outside the shard";
      ASSERT_EQ(bf[i], 0.f) << "bf16 copy element " << i << " outside the shard";
    } else {
      ASSERT_EQ(bf[i], __bfloat162float(__float2bfloat16_rn(got[i]))) << "bf16 copy element " << i;
    }
  }
}

TEST_F(Gpu, SumOfSquaresAndClipMatchCpu) {
  for (size_t n : {size_t(1), size_t(1000), size_t(300007)}) {
    SCOPED_TRACE(testing::Message() << "n=" << n);
    const std::vector<float> g = random_vector(n, 70, -3.f, 3.f);
    const double want = model::sum_of_squares(g.data(), n);
    DeviceBuffer<float> dg = upload(g);
    const double got = gpu::sum_of_squares_host(dg.data(), n, nullptr);
    EXPECT_NEAR(got, want, 1e-12 * want);
    EXPECT_EQ(gpu::sum_of_squares_host(dg.data(), n, nullptr), got) << "not reproducible";

    const double norm = std::sqrt(want);
    std::vector<float> clipped = g;
    model::clip_grads(clipped.data(), n, norm, float(norm / 2));
    gpu::clip_grads(dg.data(), n, norm, float(norm / 2), nullptr);
    expect_close(download(dg, n), clipped, kExact, "clip_grads");
  }
}

}  // namespace
}  // namespace coconut
