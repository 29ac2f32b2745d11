// Op-by-op tests of the CUDA ops (runtime/cuda/ops.h) against the CPU ops
// (model/ops.h) on random inputs: Philox and dropout, embeddings, layer norm, GELU,
// residual add and linear, forward and backward, in fp32 and bf16, on several shapes
// including one-row (latent pass) and odd sizes. Attention, loss and optimizer are in
// test_cuda_attention_optim.cpp (same binary). Tolerances per dtype: cpu_compare.h.
// Labelled gpu; skipped without a GPU (gpu_fixture.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <random>
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

TEST_F(Gpu, PhiloxWordsEqualCpuStreams) {
  for (uint64_t seed : {0ull, 42ull, 0x123456789ABCDEFull}) {
    const CounterRng rng(seed, {0xD809u, 7, 11, 5});
    for (uint64_t first : {0ull, 3ull, (5ull << 40) + 1}) {
      const int n = 1001;
      std::vector<uint32_t> want(n);
      model::dropout_words(rng, first, n, want.data());
      DeviceBuffer<uint32_t> got(n);
      gpu::dropout_words(got.data(), gpu::row_stream(rng), first, n, nullptr);
      ASSERT_EQ(got.to_host(), want) << "seed " << seed << " first " << first;
    }
  }
}

TEST_F(Gpu, DropoutMatchesCpuBitForBit) {
  for (float p : {0.1f, 0.5f}) {
    const int rows = 7, width = 53;
    const std::vector<CounterRng> streams = row_streams(rows, 99);
    const DeviceBuffer<gpu::RowStream> d_streams = upload_streams(streams);
    model::Dropout cpu{p, streams.data(), (2ull << 40) + 3};
    gpu::DropoutKeys keys{p, d_streams.data(), cpu.first};
    const std::vector<float> x = round_bf16(random_vector(size_t(rows) * width, 1));
    std::vector<float> want(x.size());
    model::dropout_apply(want.data(), x.data(), rows, width, cpu);

    DeviceBuffer<float> dx = upload(x), dy(x.size());
    gpu::dropout_apply(dy.data(), dx.data(), rows, width, keys, nullptr);
    expect_close(download(dy, x.size()), want, kExact, "dropout fp32");
    gpu::dropout_apply(dx.data(), dx.data(), rows, width, keys, nullptr);  // in place
    expect_close(download(dx, x.size()), want, kExact, "dropout fp32 in place");

    DeviceBuffer<bf16> bx = upload_bf16(x), by(x.size());
    gpu::dropout_apply(by.data(), bx.data(), rows, width, keys, nullptr);
    expect_close(download(by, x.size()), round_bf16(want), kExact, "dropout bf16");
  }
}

// ---------------------------------------------------------------- embeddings

TEST_F(Gpu, EmbeddingsMatchCpu) {
  const int V = 37, P = 19, C = 24, n = 29;
  const std::vector<float> wte = round_bf16(random_vector(size_t(V) * C, 2));
  const std::vector<float> wpe = round_bf16(random_vector(size_t(P) * C, 3));
  const std::vector<float> in = round_bf16(random_vector(size_t(n) * C, 4));
  std::vector<int> tokens(n), pos(n);
  for (int r = 0; r < n; ++r) {
    tokens[r] = (r * 7) % 5 == 0 ? 3 : (r * 13) % V;  // repeats: rows add into one wte row
    pos[r] = (r * 5) % P;
  }
  DeviceBuffer<char> ws(gpu::embedding_backward_workspace_bytes(n));
  // CPU: the gather, x = in + wpe[pos], and both backward scatters in row order.
  std::vector<float> gathered(size_t(n) * C), x(size_t(n) * C);
  for (int r = 0; r < n; ++r)
    for (int c = 0; c < C; ++c) {
      gathered[size_t(r) * C + c] = wte[size_t(tokens[r]) * C + c];
      x[size_t(r) * C + c] = in[size_t(r) * C + c] + wpe[size_t(pos[r]) * C + c];
    }
  std::vector<float> dwte = random_vector(wte.size(), 5), dwpe = random_vector(wpe.size(), 6);
  const std::vector<float> d = round_bf16(random_vector(size_t(n) * C, 7));
  std::vector<float> want_dwte = dwte, want_dwpe = dwpe;
  for (int r = 0; r < n; ++r)
    for (int c = 0; c < C; ++c) {
      want_dwte[size_t(tokens[r]) * C + c] += d[size_t(r) * C + c];
      want_dwpe[size_t(pos[r]) * C + c] += d[size_t(r) * C + c];
    }

  DeviceBuffer<int> dtok = upload(tokens), dpos = upload(pos);
  {  // fp32
    DeviceBuffer<float> w = upload(wte), pe = upload(wpe), inp = upload(in), out(x.size());
    gpu::embed_tokens(out.data(), w.data(), dtok.data(), n, C, nullptr);
    expect_close(download(out, out.size()), gathered, kExact, "embed_tokens fp32");
    // scatter_rows puts rows back where a gather took them (distinct ids: the positions).
    std::vector<int> distinct(n);
    for (int r = 0; r < n; ++r) distinct[r] = (r * 7) % n;  // n = 29 is prime: a permutation
    std::vector<float> scattered(x.size());
    for (int r = 0; r < n; ++r)
      std::copy(gathered.begin() + size_t(r) * C, gathered.begin() + size_t(r + 1) * C,
                scattered.begin() + size_t(distinct[r]) * C);
    DeviceBuffer<int> dperm = upload(distinct);
    DeviceBuffer<float> sc(x.size());
    gpu::scatter_rows(sc.data(), out.data(), dperm.data(), n, C, nullptr);
    expect_close(download(sc, sc.size()), scattered, kExact, "scatter_rows fp32");
    gpu::add_position_embedding(out.data(), inp.data(), pe.data(), dpos.data(), n, C, nullptr);
    expect_close(download(out, out.size()), x, kExact, "add_position_embedding fp32");
    DeviceBuffer<float> g = upload(d), gw = upload(dwte), gp = upload(dwpe);
    gpu::embed_tokens_backward(gw.data(), g.data(), dtok.data(), n, C, V, ws.data(), nullptr);
    gpu::position_embedding_backward(gp.data(), g.data(), dpos.data(), n, C, P, ws.data(), nullptr);
    expect_close(download(gw, wte.size()), want_dwte, kExact, "embed_tokens_backward fp32");
    expect_close(download(gp, wpe.size()), want_dwpe, kExact, "position_embedding_backward fp32");
  }
  {  // bf16 storage, fp32 gradient tables
    DeviceBuffer<bf16> w = upload_bf16(wte), pe = upload_bf16(wpe), inp = upload_bf16(in), out(x.size());
    gpu::embed_tokens(out.data(), w.data(), dtok.data(), n, C, nullptr);
    expect_close(download(out, out.size()), gathered, kExact, "embed_tokens bf16");
    gpu::add_position_embedding(out.data(), inp.data(), pe.data(), dpos.data(), n, C, nullptr);
    expect_close(download(out, out.size()), x, kBf16, "add_position_embedding bf16");
    DeviceBuffer<bf16> g = upload_bf16(d);
    DeviceBuffer<float> gw = upload(dwte), gp = upload(dwpe);
    gpu::embed_tokens_backward(gw.data(), g.data(), dtok.data(), n, C, V, ws.data(), nullptr);
    gpu::position_embedding_backward(gp.data(), g.data(), dpos.data(), n, C, P, ws.data(), nullptr);
    expect_close(download(gw, wte.size()), want_dwte, kExact, "embed_tokens_backward bf16");
    expect_close(download(gp, wpe.size()), want_dwpe, kExact, "position_embedding_backward bf16");
  }
}

// The embedding backward at a training step's size (tens of thousands of rows, runs of
// one id from 1 to hundreds of rows, unsorted): still the CPU's sequential sums, bit for
// bit, and the workspace's sort leaves no trace in a second call. Also around the row
// count where the sort starts (kUnsortedEmbeddingRows), and with GPT-2's vocabulary,
// whose largest id needs all 16 bits the sort looks at.
TEST_F(Gpu, EmbeddingBackwardOfManyRowsMatchesCpu) {
  const int C = 96;
  struct Shape {
    int V, n;
  };
  for (const Shape& shape : {Shape{1000, 20000}, Shape{50257, 300}, Shape{1024, gpu::kUnsortedEmbeddingRows},
                             Shape{1024, gpu::kUnsortedEmbeddingRows + 1}}) {
    const int V = shape.V, n = shape.n;
    SCOPED_TRACE(testing::Message() << "V=" << V << " rows=" << n);
    std::vector<int> tokens(n);
    std::mt19937 gen(11);
    for (int r = 0; r < n; ++r) tokens[r] = r % 50 == 0 ? 7 : int(gen() % V);  // token 7: a long run
    tokens[n / 2] = tokens[n - 1] = V - 1;                                      // the largest id, twice
    const std::vector<float> d = random_vector(size_t(n) * C, 12);
    const std::vector<float> table = random_vector(size_t(V) * C, 13);
    std::vector<float> want = table;
    for (int pass = 0; pass < 2; ++pass)
      for (int r = 0; r < n; ++r)
        for (int c = 0; c < C; ++c) want[size_t(tokens[r]) * C + c] += d[size_t(r) * C + c];
    DeviceBuffer<int> dtok = upload(tokens);
    DeviceBuffer<float> g = upload(d), gw = upload(table);
    DeviceBuffer<char> ws(gpu::embedding_backward_workspace_bytes(n));
    for (int pass = 0; pass < 2; ++pass)
      gpu::embed_tokens_backward(gw.data(), g.data(), dtok.data(), n, C, V, ws.data(), nullptr);
    expect_close(download(gw, table.size()), want, kExact, "embed_tokens_backward, twice");
  }
}

// ---------------------------------------------------------------- layer norm, GELU, add

struct RowShape {
  int N, C;
};
// Over 256 rows the parameter gradients' column sums split the rows into chunks (two
// kernels); over 4096 the chunks hold more than 256 rows each.
const std::vector<RowShape> kRowShapes = {{1, 7}, {4, 64}, {33, 130}, {3, 768}, {700, 100}, {5000, 40}};

TEST_F(Gpu, LayerNormMatchesCpu) {
  for (const RowShape& s : kRowShapes) {
    SCOPED_TRACE(testing::Message() << "N=" << s.N << " C=" << s.C);
    const size_t nc = size_t(s.N) * s.C;
    const std::vector<float> x = round_bf16(random_vector(nc, 10, -2.f, 3.f));
    const std::vector<float> w = round_bf16(random_vector(s.C, 11, 0.5f, 1.5f));
    const std::vector<float> b = round_bf16(random_vector(s.C, 12));
    const std::vector<float> dy = round_bf16(random_vector(nc, 13));
    const std::vector<float> dx0 = round_bf16(random_vector(nc, 14));
    const std::vector<float> dw0 = random_vector(s.C, 15), db0 = random_vector(s.C, 16);
    std::vector<float> y(nc), mean(s.N), rstd(s.N);
    model::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), s.N, s.C, 1e-5f);
    std::vector<float> dx = dx0, dw = dw0, db = db0;
    model::layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(),
                              rstd.data(), s.N, s.C);

    DeviceBuffer<float> gmean(s.N), grstd(s.N), gdw = upload(dw0), gdb = upload(db0);
    DeviceBuffer<float> cmean = upload(mean), crstd = upload(rstd);  // the backward gets the CPU's statistics
    DeviceBuffer<float> scratch(gpu::column_sums_scratch_floats(s.C));
    {
      DeviceBuffer<float> gx = upload(x), gw = upload(w), gb = upload(b), gy(nc), gdy = upload(dy), gdx = upload(dx0);
      gpu::layernorm_forward(gy.data(), gmean.data(), grstd.data(), gx.data(), gw.data(), gb.data(), s.N, s.C, 1e-5f,
                             nullptr);
      expect_close(download(gy, nc), y, kFp32, "layernorm fp32 out");
      expect_close(download(gmean, s.N), mean, kFp32, "layernorm fp32 mean");
      expect_close(download(grstd, s.N), rstd, kFp32, "layernorm fp32 rstd");
      gpu::layernorm_backward(gdx.data(), gdw.data(), gdb.data(), gdy.data(), gx.data(), gw.data(), cmean.data(),
                              crstd.data(), s.N, s.C, scratch.data(), nullptr);
      expect_close(download(gdx, nc), dx, kFp32, "layernorm fp32 dinp");
      expect_close(download(gdw, s.C), dw, kFp32, "layernorm fp32 dw");
      expect_close(download(gdb, s.C), db, kFp32, "layernorm fp32 db");
    }
    {
      gdw.copy_from_host(dw0);
      gdb.copy_from_host(db0);
      DeviceBuffer<bf16> gx = upload_bf16(x), gw = upload_bf16(w), gb = upload_bf16(b), gy(nc);
      DeviceBuffer<bf16> gdy = upload_bf16(dy), gdx = upload_bf16(dx0);
      gpu::layernorm_forward(gy.data(), gmean.data(), grstd.data(), gx.data(), gw.data(), gb.data(), s.N, s.C, 1e-5f,
                             nullptr);
      expect_close(download(gy, nc), y, kBf16, "layernorm bf16 out");
      expect_close(download(grstd, s.N), rstd, kFp32, "layernorm bf16 rstd (fp32 math)");
      gpu::layernorm_backward(gdx.data(), gdw.data(), gdb.data(), gdy.data(), gx.data(), gw.data(), cmean.data(),
                              crstd.data(), s.N, s.C, scratch.data(), nullptr);
      expect_close(download(gdx, nc), dx, kBf16, "layernorm bf16 dinp");
      expect_close(download(gdw, s.C), dw, kFromBf16, "layernorm bf16 dw");
      expect_close(download(gdb, s.C), db, kFromBf16, "layernorm bf16 db");
    }
  }
}

TEST_F(Gpu, GeluAndAddMatchCpu) {
  for (int64_t n : {int64_t(1), int64_t(1000), int64_t(3 * 4 * 768 + 5)}) {
    SCOPED_TRACE(testing::Message() << "n=" << n);
    const std::vector<float> x = round_bf16(random_vector(n, 20, -4.f, 4.f));
    const std::vector<float> dy = round_bf16(random_vector(n, 21));
    const std::vector<float> dx0 = round_bf16(random_vector(n, 22));  // overwritten by the backward
    std::vector<float> y(n), dx = dx0, sum(n);
    model::gelu_forward(y.data(), x.data(), n);
    model::gelu_backward(dx.data(), x.data(), dy.data(), n);
    model::add_forward(sum.data(), x.data(), dy.data(), n);
    {
      DeviceBuffer<float> gx = upload(x), gdy = upload(dy), gdx = upload(dx0), gy(n);
      gpu::gelu_forward(gy.data(), gx.data(), n, nullptr);
      expect_close(download(gy, n), y, kFp32, "gelu fp32");
      gpu::gelu_backward(gdx.data(), gx.data(), gdy.data(), n, nullptr);
      expect_close(download(gdx, n), dx, kFp32, "gelu backward fp32");
      gpu::add_forward(gy.data(), gx.data(), gdy.data(), n, nullptr);
      expect_close(download(gy, n), sum, kExact, "add fp32");
    }
    {
      DeviceBuffer<bf16> gx = upload_bf16(x), gdy = upload_bf16(dy), gdx = upload_bf16(dx0), gy(n);
      gpu::gelu_forward(gy.data(), gx.data(), n, nullptr);
      expect_close(download(gy, n), y, kBf16, "gelu bf16");
      gpu::gelu_backward(gdx.data(), gx.data(), gdy.data(), n, nullptr);
      expect_close(download(gdx, n), dx, kBf16, "gelu backward bf16");
      gpu::add_forward(gx.data(), gx.data(), gdy.data(), n, nullptr);  // in place
      expect_close(download(gx, n), sum, kBf16, "add bf16");
    }
  }
}

// ---------------------------------------------------------------- linear

TEST_F(Gpu, LinearMatchesCpu) {
  struct Shape {
    int N, IC, OC;
    bool bias;
  };
  CublasContext cublas;
  // The last two split the bias gradient's rows into chunks (ops.h).
  const std::vector<Shape> shapes = {{1, 16, 48, true},   {37, 64, 192, true},  {5, 33, 7, false},
                                     {8, 256, 64, true},  {700, 64, 100, true}, {5000, 32, 40, true}};
  for (const Shape& s : shapes) {
    SCOPED_TRACE(testing::Message() << "N=" << s.N << " IC=" << s.IC << " OC=" << s.OC << " bias=" << s.bias);
    const std::vector<float> x = round_bf16(random_vector(size_t(s.N) * s.IC, 30));
    const std::vector<float> w = round_bf16(random_vector(size_t(s.IC) * s.OC, 31));
    const std::vector<float> b = round_bf16(random_vector(s.OC, 32));
    const std::vector<float> dy = round_bf16(random_vector(size_t(s.N) * s.OC, 33));
    const std::vector<float> dx0 = round_bf16(random_vector(x.size(), 34));  // overwritten by the backward
    const std::vector<float> dw0 = random_vector(w.size(), 35), db0 = random_vector(b.size(), 36);
    std::vector<float> y(size_t(s.N) * s.OC), dx = dx0, dw = dw0, db = db0;
    model::linear_forward(y.data(), x.data(), w.data(), s.bias ? b.data() : nullptr, s.N, s.IC, s.OC);
    model::linear_backward(dx.data(), dw.data(), s.bias ? db.data() : nullptr, dy.data(), x.data(), w.data(), s.N,
                           s.IC, s.OC);
    DeviceBuffer<float> scratch(gpu::column_sums_scratch_floats(s.OC));
    {
      DeviceBuffer<float> gx = upload(x), gw = upload(w), gb = upload(b), gy(y.size()), gdy = upload(dy);
      DeviceBuffer<float> gdx = upload(dx0), gdw = upload(dw0), gdb = upload(db0);
      gpu::linear_forward(cublas, gy.data(), gx.data(), gw.data(), s.bias ? gb.data() : nullptr, s.N, s.IC, s.OC);
      expect_close(download(gy, y.size()), y, kFp32, "linear fp32 out");
      gpu::linear_backward(cublas, gdx.data(), gdw.data(), s.bias ? gdb.data() : nullptr, gdy.data(), gx.data(),
                           gw.data(), s.N, s.IC, s.OC, scratch.data());
      expect_close(download(gdx, dx.size()), dx, kFp32, "linear fp32 dinp");
      expect_close(download(gdw, dw.size()), dw, kFp32, "linear fp32 dw");
      expect_close(download(gdb, db.size()), db, kFp32, "linear fp32 dbias");
    }
    {
      DeviceBuffer<bf16> gx = upload_bf16(x), gw = upload_bf16(w), gb = upload_bf16(b), gy(y.size());
      DeviceBuffer<bf16> gdy = upload_bf16(dy), gdx = upload_bf16(dx0);
      DeviceBuffer<float> gdw = upload(dw0), gdb = upload(db0);
      gpu::linear_forward(cublas, gy.data(), gx.data(), gw.data(), s.bias ? gb.data() : nullptr, s.N, s.IC, s.OC);
      expect_close(download(gy, y.size()), y, kBf16, "linear bf16 out");
      gpu::linear_backward(cublas, gdx.data(), gdw.data(), s.bias ? gdb.data() : nullptr, gdy.data(), gx.data(),
                           gw.data(), s.N, s.IC, s.OC, scratch.data());
      expect_close(download(gdx, dx.size()), dx, kBf16, "linear bf16 dinp");
      expect_close(download(gdw, dw.size()), dw, kFromBf16, "linear bf16 dw (fp32)");
      expect_close(download(gdb, db.size()), db, kFromBf16, "linear bf16 dbias (fp32)");
    }
  }
  CUDA_CHECK(cudaDeviceSynchronize());
}

// The bf16 forward with a bias runs on cuBLASLt with the bias in the epilogue where an
// algorithm exists: for the model's aligned shapes it must (else the broadcast kernel
// and a second pass over the output come back), and the result is the CPU's.
TEST_F(Gpu, LinearBiasEpilogueRunsForAlignedShapes) {
  CublasContext cublas;
  for (const auto& [N, IC, OC] : {std::array<int, 3>{64, 64, 192}, std::array<int, 3>{32, 768, 2304}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " IC=" << IC << " OC=" << OC);
    const std::vector<float> x = round_bf16(random_vector(size_t(N) * IC, 40));
    const std::vector<float> w = round_bf16(random_vector(size_t(IC) * OC, 41));
    const std::vector<float> b = round_bf16(random_vector(OC, 42));
    std::vector<float> y(size_t(N) * OC);
    model::linear_forward(y.data(), x.data(), w.data(), b.data(), N, IC, OC);
    DeviceBuffer<bf16> gx = upload_bf16(x), gw = upload_bf16(w), gb = upload_bf16(b);
    DeviceBuffer<bf16> gy = upload_bf16(std::vector<float>(y.size(), NAN));  // every element must be written
    EXPECT_TRUE(cublas.linear_bias_bf16(gx.data(), gw.data(), gb.data(), gy.data(), N, IC, OC))
        << "cuBLASLt offered no algorithm";
    expect_close(download(gy, y.size()), y, kBf16, "linear with the bias in the epilogue");
  }
}

// The MLP's GELU folded into the products around it (linear_gelu_forward,
// linear_backward_gelu) against the CPU's linear and GELU ops in sequence. The first two
// shapes are aligned, and cuBLASLt must offer the bf16 epilogues there (a small case, and
// the model's MLP at 32 rows, a latent pass's); the last is not (rows of 7 columns are
// not 16-byte aligned: the separate GELU kernels run).
TEST_F(Gpu, LinearWithGeluMatchesCpu) {
  struct Shape {
    int N, IC, OC;
    bool epilogue;
  };
  CublasContext cublas;
  for (const Shape& s : {Shape{37, 64, 256, true}, Shape{32, 768, 3072, true}, Shape{5, 33, 7, false}}) {
    SCOPED_TRACE(testing::Message() << "N=" << s.N << " IC=" << s.IC << " OC=" << s.OC);
    // Forward: pre = x W1 + b1, out = gelu(pre) with W1 [IC, OC]. Backward through the next
    // layer W2 [OC, IC]: dgelu = dy W2^T, dpre = dgelu * gelu'(pre), dW2 += out^T dy, db2 += sums of dy.
    const size_t n_pre = size_t(s.N) * s.OC;
    const std::vector<float> x = round_bf16(random_vector(size_t(s.N) * s.IC, 50, -2.f, 2.f));
    const std::vector<float> w1 = round_bf16(random_vector(size_t(s.IC) * s.OC, 51, -0.2f, 0.2f));
    const std::vector<float> b1 = round_bf16(random_vector(s.OC, 52));
    const std::vector<float> w2 = round_bf16(random_vector(size_t(s.OC) * s.IC, 53, -0.2f, 0.2f));
    const std::vector<float> dy = round_bf16(random_vector(size_t(s.N) * s.IC, 54));
    const std::vector<float> dw0 = random_vector(w2.size(), 55), db0 = random_vector(s.IC, 56);
    std::vector<float> pre(n_pre), out(n_pre), dgelu(n_pre), dpre(n_pre), dw = dw0, db = db0;
    model::linear_forward(pre.data(), x.data(), w1.data(), b1.data(), s.N, s.IC, s.OC);
    model::gelu_forward(out.data(), pre.data(), int64_t(n_pre));
    model::linear_backward(dgelu.data(), dw.data(), db.data(), dy.data(), out.data(), w2.data(), s.N, s.OC, s.IC);
    model::gelu_backward(dpre.data(), pre.data(), dgelu.data(), int64_t(n_pre));
    DeviceBuffer<float> scratch(gpu::column_sums_scratch_floats(s.IC));
    {
      DeviceBuffer<float> gx = upload(x), gw1 = upload(w1), gb1 = upload(b1), gw2 = upload(w2), gdy = upload(dy);
      DeviceBuffer<float> gpre(n_pre), gout(n_pre), gdgelu(n_pre), gdpre(n_pre), gdw = upload(dw0), gdb = upload(db0);
      gpu::linear_gelu_forward(cublas, gout.data(), gpre.data(), gx.data(), gw1.data(), gb1.data(), s.N, s.IC, s.OC);
      expect_close(download(gpre, n_pre), pre, kFp32, "fp32 pre-activation");
      expect_close(download(gout, n_pre), out, kFp32, "fp32 gelu");
      gpu::linear_backward_gelu(cublas, gdpre.data(), gdw.data(), gdb.data(), gdy.data(), gout.data(), gw2.data(),
                                gpre.data(), s.N, s.OC, s.IC, scratch.data(), gdgelu.data());
      expect_close(download(gdpre, n_pre), dpre, kFp32, "fp32 dpre");
      expect_close(download(gdw, dw.size()), dw, kFp32, "fp32 dw");
      expect_close(download(gdb, db.size()), db, kFp32, "fp32 dbias");
    }
    {
      // NaNs in the outputs: every element must be written, by the epilogue or the kernels.
      const std::vector<float> nans(n_pre, NAN);
      DeviceBuffer<bf16> gx = upload_bf16(x), gw1 = upload_bf16(w1), gb1 = upload_bf16(b1), gw2 = upload_bf16(w2);
      DeviceBuffer<bf16> gdy = upload_bf16(dy), gpre = upload_bf16(nans), gout = upload_bf16(nans);
      DeviceBuffer<bf16> gdgelu(n_pre), gdpre = upload_bf16(nans);
      DeviceBuffer<float> gdw = upload(dw0), gdb = upload(db0);
      EXPECT_EQ(cublas.linear_gelu_bf16(gx.data(), gw1.data(), gb1.data(), gout.data(), gpre.data(), s.N, s.IC, s.OC),
                s.epilogue)
          << "the GELU epilogue (cuBLASLt's offer for these operands)";
      gpu::linear_gelu_forward(cublas, gout.data(), gpre.data(), gx.data(), gw1.data(), gb1.data(), s.N, s.IC, s.OC);
      const std::vector<float> got_pre = download(gpre, n_pre), got_out = download(gout, n_pre);
      expect_close(got_pre, pre, kBf16, "bf16 pre-activation");
      expect_close(got_out, out, kBf16, "bf16 gelu");
      // The backward's reference starts from what the GPU stored (bf16 pre and gelu), so
      // that the weight gradient can be held to the fp32-from-bf16 tolerance.
      std::vector<float> want_dgelu(n_pre), want_dpre(n_pre), want_dw = dw0, want_db = db0;
      model::linear_backward(want_dgelu.data(), want_dw.data(), want_db.data(), dy.data(), got_out.data(), w2.data(),
                             s.N, s.OC, s.IC);
      model::gelu_backward(want_dpre.data(), got_pre.data(), want_dgelu.data(), int64_t(n_pre));
      EXPECT_EQ(cublas.linear_dgelu_bf16(gdy.data(), gw2.data(), gpre.data(), gdpre.data(), s.N, s.OC, s.IC),
                s.epilogue)
          << "the GELU-gradient epilogue (cuBLASLt's offer for these operands)";
      gpu::linear_backward_gelu(cublas, gdpre.data(), gdw.data(), gdb.data(), gdy.data(), gout.data(), gw2.data(),
                                gpre.data(), s.N, s.OC, s.IC, scratch.data(), gdgelu.data());
      expect_close(download(gdpre, n_pre), want_dpre, kBf16, "bf16 dpre");
      expect_close(download(gdw, dw.size()), want_dw, kFromBf16, "bf16 dw (fp32)");
      expect_close(download(gdb, db.size()), want_db, kFromBf16, "bf16 dbias (fp32)");
    }
  }
  CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace coconut
