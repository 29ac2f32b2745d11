// A small MPI program that saves and checks checkpoints, for the shell tests that kill
// ranks mid-save, fill the disk, and run `coconut ckpt` (tests/parallel/*.sh,
// tests/launcher/test_ckpt_cli.sh). The saved values depend on the step, so `check`
// can tell which save it reads.
//
//   ckpt_driver save ROOT STEP N [--milestone]   tensors "params" and "adam.m" of N floats,
//                                                 cut unevenly across the ranks
//   ckpt_driver check ROOT STEP N                 `latest` resolves to step STEP; every
//                                                 slice verifies; every rank reads back a
//                                                 different range and compares
//   ckpt_driver save-model ROOT REF_DIR           a tiny GPT-2's parameters as "params",
//                                                 with the model shape in trainer_state;
//                                                 rank 0 also exports them to REF_DIR
// Exit codes: 0 success, 1 check failed, 3 save failed (every rank reports its error).
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "model/gpt2.h"
#include "model/hf_weights.h"
#include "parallel/checkpoint.h"
#include "parallel/comm.h"

namespace {

using namespace coconut;
using namespace coconut::parallel;

float value(int tensor, int64_t step, uint64_t i) {
  uint64_t x = (uint64_t(tensor) << 56) ^ (uint64_t(step) << 40) ^ i;
  x = (x ^ (x >> 31)) * 0x7FB5D329728EA185ull;
  x = (x ^ (x >> 27)) * 0x81DADEF4BC2DD44Dull;
  x ^= x >> 33;
  return static_cast<float>(static_cast<int64_t>(x >> 40) - (int64_t(1) << 23)) * 1e-7f;
}

// Rank r owns [cut(r), cut(r+1)): rank r's share grows with r (uneven on purpose).
uint64_t cut(uint64_t n, int r, int size) {
  return n * (uint64_t(r) * (r + 1) / 2) / (uint64_t(size) * (size + 1) / 2);
}

int save(Communicator& world, const std::string& root, int64_t step, uint64_t n, bool milestone) {
  const std::vector<std::string> names = {"params", "adam.m"};
  std::vector<std::vector<float>> data(names.size());
  std::vector<StateSlice> slices;
  const uint64_t b = cut(n, world.rank(), world.size()), e = cut(n, world.rank() + 1, world.size());
  for (size_t t = 0; t < names.size(); ++t) {
    for (uint64_t i = b; i < e; ++i) data[t].push_back(value(static_cast<int>(t), step, i));
    if (e > b) slices.push_back({names[t], n, b, e - b, data[t].data()});
  }
  CheckpointMeta meta;
  meta.step = step;
  meta.model_digest = "driver";
  meta.dp = world.size();
  meta.milestone = milestone;
  try {
    const std::string dir = save_checkpoint(world, root, meta, slices, RetentionPolicy{3});
    if (world.rank() == 0) std::printf("saved %s\n", dir.c_str());
    return 0;
  } catch (const coconut::Error& e) {
    std::fprintf(stderr, "rank %d: save failed: %s\n", world.rank(), e.what());
    return 3;
  }
}

int check(Communicator& world, const std::string& root, int64_t step, uint64_t n) {
  const std::string dir = find_latest_checkpoint(root);
  const std::string want = root + "/step-" + std::string(8 - std::min<size_t>(8, std::to_string(step).size()), '0') +
                           std::to_string(step);
  if (dir != want) {
    std::fprintf(stderr, "rank %d: latest checkpoint is '%s', expected '%s'\n", world.rank(), dir.c_str(),
                 want.c_str());
    return 1;
  }
  const Manifest m = read_manifest(dir);
  for (const std::string& problem : verify_checkpoint(dir, m)) {
    std::fprintf(stderr, "rank %d: %s\n", world.rank(), problem.c_str());
    return 1;
  }
  // Read with the opposite cut of the writer's (the last rank's share first).
  const int mirror = world.size() - 1 - world.rank();
  const uint64_t b = n - cut(n, mirror + 1, world.size()), e = n - cut(n, mirror, world.size());
  std::vector<float> got(e - b);
  for (int t = 0; t < 2; ++t) {
    read_tensor_range(dir, m, t == 0 ? "params" : "adam.m", b, e - b, got.data());
    for (uint64_t i = b; i < e; ++i) {
      const float want_v = value(t, step, i);
      if (std::memcmp(&got[i - b], &want_v, sizeof(float)) != 0) {
        std::fprintf(stderr, "rank %d: tensor %d element %llu differs\n", world.rank(), t, (unsigned long long)i);
        return 1;
      }
    }
  }
  std::printf("rank %d: step %lld reads back intact\n", world.rank(), (long long)step);
  return 0;
}

int save_model(Communicator& world, const std::string& root, const std::string& ref_dir) {
  model::GPT2Config config;
  config.vocab_size = 50;
  config.max_positions = 32;
  config.n_layer = 2;
  config.n_head = 2;
  config.d_model = 16;
  model::GPT2 gpt(config);
  gpt.init_weights(5);
  const uint64_t n = gpt.num_params();
  const uint64_t b = cut(n, world.rank(), world.size()), e = cut(n, world.rank() + 1, world.size());
  std::vector<StateSlice> slices;
  if (e > b) slices.push_back({"params", n, b, e - b, gpt.params() + b});
  CheckpointMeta meta;
  meta.step = 12;
  meta.epoch = 1;
  meta.stage = 1;
  meta.model_digest = "tiny-gpt2";
  meta.dp = world.size();
  meta.trainer_state =
      R"({"model": {"n_layer": 2, "n_head": 2, "d_model": 16, "vocab_size": 50, "max_positions": 32}})";
  save_checkpoint(world, root, meta, slices);
  if (world.rank() == 0) model::export_hf_gpt2(ref_dir, config, gpt.params());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  MpiRuntime mpi(&argc, &argv);
  // CKPT_DRIVER_FSIZE_LIMIT=BYTES: a stand-in for a full disk where no small filesystem
  // can be mounted. Set after MPI_Init, whose shared-memory files are larger; with
  // SIGXFSZ ignored, a write past the limit fails with EFBIG instead of killing us.
  if (const char* limit = std::getenv("CKPT_DRIVER_FSIZE_LIMIT")) {
    std::signal(SIGXFSZ, SIG_IGN);
    const rlimit rl{std::stoul(limit), std::stoul(limit)};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) std::perror("setrlimit");
  }
  std::vector<std::string> a(argv + 1, argv + argc);
  try {
    auto world = MpiCommunicator::world();
    if (a.size() >= 4 && a[0] == "save")
      return save(*world, a[1], std::stoll(a[2]), std::stoull(a[3]), a.size() > 4 && a[4] == "--milestone");
    if (a.size() == 4 && a[0] == "check") return check(*world, a[1], std::stoll(a[2]), std::stoull(a[3]));
    if (a.size() == 3 && a[0] == "save-model") return save_model(*world, a[1], a[2]);
    std::fprintf(stderr, "usage: ckpt_driver save|check ROOT STEP N | save-model ROOT REF_DIR\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: error: %s\n", mpi.world_rank(), e.what());
    return 1;
  }
}
