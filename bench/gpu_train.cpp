// GPU training benchmark of a GPT-2 124M-shaped Coconut model (model/cuda_gpt2.h): a
// batch with continuous thoughts (a question pass, one single-column pass per thought,
// the final pass), forward + loss + backward through every thought + AdamW, repeated
// for a fixed time, once per configuration ("row"): bf16 mixed precision replayed as a
// CUDA graph with each attention kernel (graph-flash: fused; graph-attn: bf16 batched
// products; graph: fp32 products), bf16 launched op by op (eager-attn, eager,
// eager-flash), and fp32 as a graph (fp32). --rows picks them (default graph-attn,graph,
// eager-attn,fp32,graph-flash); --seconds is shared among them. --profile-step brackets each
// row's first timed step with cudaProfilerStart/Stop, for `ncu --profile-from-start off`
// (tests/gpu/run.sh COCONUT_GPU_NCU, tools/ncu_summary.py). --phases times one more step
// of each op-by-op row with CUDA events between its phases (first pass, latent passes,
// last pass, loss, their backwards, AdamW) and prints where the step's GPU time goes.
// Prints tokens/s and MFU against the card's dense bf16 peak (formula printed), then
// runs bench/torch_gpu_step.py, the same Coconut step in PyTorch (transformers' GPT-2
// with a KV cache) on the same GPU, and prints the ratios. tests/gpu/run.sh runs it; no
// CTest test runs it (it needs a GPU and minutes).
//
//   coconut_gpu_bench [--seconds 120] [--batch 32] [--seq-len 512] [--question 128]
//                     [--latents 6] [--python python3] [--no-torch] [--torch-seconds 30]
//                     [--rows LIST] [--profile-step] [--phases]
#include <cuda_profiler_api.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "bench/coconut_step.h"
#include "bench/options.h"
#include "model/adamw.h"
#include "model/cuda_gpt2.h"
#include "model/cuda_multipass.h"
#include "runtime/check.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/ops.h"
#include "runtime/rng.h"
#include "runtime/timer.h"

namespace coconut::bench {
namespace {

struct Options {
  double seconds = 120;
  // The shape of the MFU figures (docs/gpu.md): 32 sequences of 512 columns.
  int batch = 32, seq_len = 512, question = 128, latents = 6;
  std::string python = "python3";
  bool torch = true;
  int torch_seconds = 30;  // per precision
  std::vector<std::string> rows = {"graph-attn", "graph", "eager-attn", "fp32", "graph-flash"};
  bool profile_step = false;
  bool phases = false;
};


// One timed configuration: its --rows name, precision, graph or op by op, attention,
// and its share of --seconds (relative to the other rows asked for).
struct Row {
  const char* key;
  bool bf16, graphs;
  model::CudaAttention attention;
  double share;
  const char* name;
};
// The fused rows come last: a fault there (sticky for the process) would fail the rows
// after it too.
constexpr Row kRows[] = {
    {"graph-attn", true, true, model::CudaAttention::kBf16Batched, 0.2, "coconut bf16, CUDA graph, bf16 attention"},
    {"graph", true, true, model::CudaAttention::kFp32, 0.2, "coconut bf16, CUDA graph, fp32 attention"},
    {"eager-attn", true, false, model::CudaAttention::kBf16Batched, 0.15, "coconut bf16, op by op, bf16 attention"},
    {"eager", true, false, model::CudaAttention::kFp32, 0.15, "coconut bf16, op by op, fp32 attention"},
    {"fp32", false, true, model::CudaAttention::kFp32, 0.2, "coconut fp32, CUDA graph"},
    {"graph-flash", true, true, model::CudaAttention::kBf16Flash, 0.2, "coconut bf16, CUDA graph, fused attention"},
    {"eager-flash", true, false, model::CudaAttention::kBf16Flash, 0.15, "coconut bf16, op by op, fused attention"},
};

const Row* find_row(const std::string& key) {
  for (const Row& r : kRows)
    if (key == r.key) return &r;
  return nullptr;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      COCONUT_CHECK(i + 1 < argc, "{} needs a value", a);
      return argv[++i];
    };
    if (a == "--seconds") o.seconds = std::stod(value());
    else if (a == "--batch") o.batch = std::stoi(value());
    else if (a == "--seq-len") o.seq_len = std::stoi(value());
    else if (a == "--question") o.question = std::stoi(value());
    else if (a == "--latents") o.latents = std::stoi(value());
    else if (a == "--python") o.python = value();
    else if (a == "--no-torch") o.torch = false;
    else if (a == "--torch-seconds") o.torch_seconds = std::stoi(value());
    else if (a == "--rows") o.rows = split_list(value());
    else if (a == "--profile-step") o.profile_step = true;
    else if (a == "--phases") o.phases = true;
    else COCONUT_FAIL("unknown option {} (see the comment at the top of bench/gpu_train.cpp)", a);
  }
  for (const std::string& r : o.rows)
    COCONUT_CHECK(find_row(r) != nullptr,
                  "--rows: unknown row '{}' (see the comment at the top of bench/gpu_train.cpp)", r);
  COCONUT_CHECK(o.batch > 0 && o.latents >= 0 && o.question >= 1 && o.question + o.latents < o.seq_len,
                "need batch > 0, latents >= 0 and question + latents < seq-len");
  return o;
}

// Every sample has the same shape: question tokens [0, f), thoughts at [f, f + n),
// answer tokens after them; targets on the answer columns (next token), as the
// curriculum's labels. Pass 0 runs [0, f), pass i the column f + i - 1, the final pass
// [f + n - 1, T) (DESIGN.md 2.2). With n = 0 (--latents 0) it is one pass over [0, T):
// the same step without thoughts, the plain GPT-2 step that shows what the latent
// passes cost.
model::SequenceBatch coconut_batch(const Options& o, int vocab) {
  model::SequenceBatch b;
  b.B = o.batch;
  b.T = o.seq_len;
  const int f = o.question, n = o.latents, B = b.B, T = b.T;
  const size_t R = size_t(B) * T;
  CounterRng rng(7, {2});
  b.tokens.resize(R);
  for (int& t : b.tokens) t = int(rng.below(vocab));
  b.targets.assign(R, -100);
  b.pos_ids.resize(R);
  b.key_mask.assign(R, 1);
  for (int t = 0; t < T; ++t)
    for (int s = 0; s < B; ++s) {
      b.pos_ids[size_t(t) * B + s] = t;
      if (t >= f + n && t + 1 < T) b.targets[size_t(t) * B + s] = b.tokens[size_t(t + 1) * B + s];
    }
  auto feed = [&](int from) {
    std::vector<model::Feedback> fb;
    for (int s = 0; s < B; ++s) fb.push_back({s, from});
    return fb;
  };
  if (n == 0) {
    b.passes.push_back({0, T, {}});
    return b;
  }
  b.passes.push_back({0, f, feed(f - 1)});
  for (int i = 1; i < n; ++i) b.passes.push_back({f + i - 1, f + i, feed(f + i - 1)});
  b.passes.push_back({f + n - 1, T, {}});
  return b;
}

// Dense bf16 tensor-core FLOP per clock per SM: 4096 on Hopper (sm_90), 2048 on
// Ampere A100 (sm_80). Other chips: unknown here (MFU not printed).
int bf16_flop_per_clock_per_sm(int major, int minor) {
  if (major == 9 && minor == 0) return 4096;
  if (major == 8 && minor == 0) return 2048;
  return 0;
}

// Runs the PyTorch peer for `seconds` per precision; returns its fp32 ms per step
// (negative if it failed) and sets *bf16_ms when it timed bf16 autocast too.
double run_torch_peer(const Options& o, const model::GPT2Config& c, int seconds, double* bf16_ms) {
  const std::string cmd = fmt::format(
      "{} {}/bench/torch_gpu_step.py --layers {} --d-model {} --heads {} --vocab {} --positions {} --batch {} "
      "--seq-len {} --question {} --latents {} --seconds {} 2>&1",
      o.python, COCONUT_SOURCE_DIR, c.n_layer, c.d_model, c.n_head, c.vocab_size, c.max_positions, o.batch, o.seq_len,
      o.question, o.latents, seconds);
  fmt::print("PyTorch peer: {}\n", cmd);
  std::fflush(stdout);
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  if (!pipe) return -1;
  char line[512];
  double ms = -1;
  while (fgets(line, sizeof line, pipe.get())) {
    fmt::print("  {}", line);
    double v;
    if (std::sscanf(line, "torch_ms_per_step fp32 %lf", &v) == 1) ms = v;
    if (std::sscanf(line, "torch_ms_per_step bf16 %lf", &v) == 1) *bf16_ms = v;
  }
  return ms;
}

// Times training steps of one precision for `seconds` after 3 warm-up steps; returns
// ms per step and prints the step count and last loss.
// One step's GPU time by phase (CudaMultipassRunnerOf::set_phase_timing): the passes
// grouped into the first, the latent ones (one column each) and the last, then AdamW.
template <typename Act>
void print_phases(const std::vector<typename model::CudaMultipassRunnerOf<Act>::PhaseTime>& phases, int passes,
                  float adamw_ms, const char* name) {
  struct Group {
    std::string label;
    float ms = 0;
  };
  std::vector<Group> groups;
  auto add = [&](const std::string& label, float ms) {
    if (groups.empty() || groups.back().label != label) groups.push_back({label, 0});
    groups.back().ms += ms;
  };
  const std::string latent = fmt::format("{} latent passes (one column each)", std::max(0, passes - 2));
  for (const auto& ph : phases) {
    const bool forward = ph.name.rfind("forward ", 0) == 0, backward = ph.name.rfind("backward ", 0) == 0;
    if (!forward && !backward) {
      add(ph.name, ph.ms);
      continue;
    }
    const int p = std::stoi(ph.name.substr(ph.name.find(' ') + 1));
    const std::string which = passes == 1 ? "the one pass" : p == 0 ? "first pass" : p + 1 == passes ? "last pass"
                                                                                                        : latent;
    add(std::string(forward ? "forward, " : "backward, ") + which, ph.ms);
  }
  add("AdamW", adamw_ms);
  float total = 0;
  for (const Group& g : groups) total += g.ms;
  fmt::print("{}: one step's GPU time by phase (CUDA events), {:.2f} ms in all\n| phase | ms | share |\n"
             "|---|---|---|\n",
             name, total);
  for (const Group& g : groups) fmt::print("| {} | {:.2f} | {:.1f}% |\n", g.label, g.ms, 100.0 * g.ms / total);
  std::fflush(stdout);
}

template <typename Act>
double time_steps(const model::GPT2Config& cfg, const model::GPT2& host, const model::SequenceBatch& batch,
                  double seconds, bool graphs, model::CudaAttention attention, bool profile_step, bool phases,
                  const char* name) {
  model::CudaGPT2Of<Act> gpu(cfg);
  gpu.set_attention(attention);
  gpu.set_params(host.params());
  const model::AdamW host_opt(model::AdamWConfig{}, host.layout(), 0, host.num_params());
  std::vector<gpu::DecaySegment> segments;
  for (const auto& s : host_opt.segments()) segments.push_back({s.begin, s.end, s.decay});
  DeviceBuffer<float> m(gpu.num_params()), v(gpu.num_params());
  CUDA_CHECK(cudaMemset(m.data(), 0, m.bytes()));
  CUDA_CHECK(cudaMemset(v.data(), 0, v.bytes()));
  gpu::bf16* copy = nullptr;  // the bf16 weights the forward reads, refreshed by AdamW
  if constexpr (std::is_same_v<Act, gpu::bf16>) copy = gpu.params_for_compute();
  const float scale = 1.f / batch.num_targets();
  model::CudaMultipassRunnerOf<Act> runner;
  runner.set_cuda_graphs(graphs);
  auto step = [&](int64_t k) {
    gpu.zero_grads();
    const double loss = runner.forward_backward(gpu, batch, scale);
    gpu::adamw_step(gpu.params(), gpu.grads(), m.data(), v.data(), 0, segments, gpu::AdamWHyper{}, k, copy, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    return loss;
  };
  int64_t k = 0;
  for (; k < 3; ++k) step(k + 1);  // warm-up: cuBLAS heuristics, buffer growth, the graph's capture
  size_t free_bytes = 0, total_bytes = 0;  // the device memory this row holds (activations, probabilities, ...)
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  Timer timer;
  int steps = 0;
  double loss = 0;
  if (profile_step) CUDA_CHECK(cudaProfilerStart());
  loss = step(++k), ++steps;  // at least one timed step
  if (profile_step) CUDA_CHECK(cudaProfilerStop());
  while (timer.seconds() < seconds) loss = step(++k), ++steps;
  const double ms = 1e3 * timer.seconds() / steps;
  fmt::print("{}: {} timed steps in {:.1f} s after 3 warm-up steps, last loss {:.4f}, "
             "device memory in use {:.1f} GiB\n",
             name, steps, timer.seconds(), loss, double(total_bytes - free_bytes) / (1 << 30));
  std::fflush(stdout);
  if (phases && !graphs) {  // one more step, outside the timing, with events between its phases
    runner.set_phase_timing(true);
    gpu.zero_grads();
    runner.forward_backward(gpu, batch, scale);
    cudaEvent_t begin = nullptr, end = nullptr;
    CUDA_CHECK(cudaEventCreate(&begin));
    CUDA_CHECK(cudaEventCreate(&end));
    CUDA_CHECK(cudaEventRecord(begin, nullptr));
    gpu::adamw_step(gpu.params(), gpu.grads(), m.data(), v.data(), 0, segments, gpu::AdamWHyper{}, ++k, copy, nullptr);
    CUDA_CHECK(cudaEventRecord(end, nullptr));
    CUDA_CHECK(cudaEventSynchronize(end));
    float adamw_ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&adamw_ms, begin, end));
    (void)cudaEventDestroy(begin);
    (void)cudaEventDestroy(end);
    print_phases<Act>(runner.last_phases(), int(batch.passes.size()), adamw_ms, name);
  }
  return ms;
}

int run(const Options& o) {
  std::string why;
  COCONUT_CHECK(cuda_device_count(&why) > 0, "coconut_gpu_bench needs a GPU: {}", why);
  fmt::print("{}", describe_devices());
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  int clock_khz = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0));

  model::GPT2Config cfg;  // GPT-2 124M
  cfg.vocab_size = 50257;
  cfg.max_positions = 1024;
  cfg.n_layer = 12;
  cfg.n_head = 12;
  cfg.d_model = 768;
  model::GPT2 host(cfg);
  host.init_weights(1234);
  const model::SequenceBatch batch = coconut_batch(o, cfg.vocab_size);
  // Each row asked for, in kRows order; a failure (a graph capture, say) is reported
  // and leaves its row out (-1 ms).
  double shares = 0;
  for (const std::string& key : o.rows) shares += find_row(key)->share;
  std::vector<std::pair<const Row*, double>> timings;  // row, ms per step
  for (const Row& row : kRows) {
    if (std::find(o.rows.begin(), o.rows.end(), row.key) == o.rows.end()) continue;
    const double seconds = o.seconds * row.share / shares;
    double ms = -1;
    try {
      ms = row.bf16 ? time_steps<gpu::bf16>(cfg, host, batch, seconds, row.graphs, row.attention, o.profile_step,
                                            o.phases, row.name)
                    : time_steps<float>(cfg, host, batch, seconds, row.graphs, row.attention, o.profile_step,
                                        o.phases, row.name);
    } catch (const std::exception& e) {
      fmt::print("{}: failed: {}\n", row.name, e.what());
    }
    timings.push_back({&row, ms});
  }

  const int B = o.batch, T = o.seq_len;
  const double flops = 3.0 * coconut_forward_flops(cfg, B, T, batch.num_targets());
  const int per_clock = bf16_flop_per_clock_per_sm(prop.major, prop.minor);
  const double peak = double(prop.multiProcessorCount) * clock_khz * 1e3 * per_clock / 1e12;
  fmt::print("\nCoconut training step on the GPU, GPT-2 124M shape: bf16 mixed precision (bf16 activations and\n"
             "weight copy, fp32 accumulation, gradients and master weights) and fp32 (cuBLAS without TF32)\n");
  fmt::print("batch {} x {} columns: question {} columns, {} thoughts ({} passes), loss on {} targets\n", B, T,
             o.question, o.latents, batch.passes.size(), batch.num_targets());
  fmt::print("FLOPs per step = 3 x forward; forward = L (24 N C^2 + 2 B C T (T+1)) + 2 n C V, N = B T, n = targets "
             "(the LM head runs on the targeted rows only): {:.1f} GFLOP\n",
             flops / 1e9);
  if (peak > 0)
    fmt::print("peak = SMs x clock x dense bf16 FLOP/clock/SM = {} x {:.0f} MHz x {} = {:.0f} TFLOP/s\n",
               prop.multiProcessorCount, clock_khz / 1e3, per_clock, peak);
  else
    fmt::print("peak: dense bf16 rate of compute capability {}.{} not known here; MFU not computed\n", prop.major,
               prop.minor);
  auto print_row = [&](const char* name, double step_ms) {
    if (step_ms < 0) return fmt::print("| {} | failed | | | |\n", name);
    const double tf = flops / (step_ms / 1e3) / 1e12;
    fmt::print("| {} | {:.1f} | {:.0f} | {:.2f} | {} |\n", name, step_ms, B * T / (step_ms / 1e3), tf,
               peak > 0 ? fmt::format("{:.2f}%", 100 * tf / peak) : std::string("n/a"));
  };
  fmt::print("\n| system | ms/step | tokens/s | TFLOP/s | MFU |\n|---|---|---|---|---|\n");
  for (const auto& [row, ms] : timings) print_row(row->name, ms);
  if (o.torch) {
    // The peer times fp32 and bf16 autocast, --torch-seconds each; ratios compare like with like.
    double torch_bf16_ms = -1;
    const double torch_ms = run_torch_peer(o, cfg, o.torch_seconds, &torch_bf16_ms);
    if (torch_ms > 0) {
      print_row("pytorch fp32", torch_ms);
      if (torch_bf16_ms > 0) print_row("pytorch bf16 autocast", torch_bf16_ms);
      fmt::print("\nspeed ratio coconut / pytorch (tokens/s), against PyTorch in the same precision:\n");
      for (const auto& [row, ms] : timings) {
        const double peer = row->bf16 ? torch_bf16_ms : torch_ms;
        if (ms > 0 && peer > 0) fmt::print("  {}: {:.3f}x\n", row->name, peer / ms);
      }
    } else {
      fmt::print("\nPyTorch peer unavailable or failed (see its output above)\n");
    }
  }
  return 0;
}

}  // namespace
}  // namespace coconut::bench

int main(int argc, char** argv) {
  coconut::bench::Options options;
  try {
    options = coconut::bench::parse(argc, argv);
  } catch (const std::exception& e) {  // usage errors exit 2, as the coconut command's
    std::fprintf(stderr, "coconut_gpu_bench: %s\n", e.what());
    return 2;
  }
  try {
    return coconut::bench::run(options);
  } catch (const coconut::Error& e) {
    std::fprintf(stderr, "coconut_gpu_bench: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coconut_gpu_bench: %s\n", e.what());
    return 1;
  }
}
