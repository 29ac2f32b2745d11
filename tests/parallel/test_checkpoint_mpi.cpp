// Sharded checkpoints under real mpirun processes (parallel/checkpoint.h): round trip of
// random uneven slices, reading arbitrary ranges across shard files (resharding),
// asynchronous save equal to the synchronous one, retention, uncommitted directories
// ignored, damaged checkpoints refused with the file named, and a failing rank making
// every rank throw instead of hanging. Runs at 1, 2 and 4 ranks.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "parallel/checkpoint.h"
#include "parallel/checkpoint_io.h"
#include "tests/parallel/mpi_test_main.h"

namespace coconut::parallel {
namespace {

namespace fs = std::filesystem;

// A fresh directory shared by the ranks of this job (the rank count is part of the name
// so that the np1/np2/np4 CTest runs never share one).
std::string fresh_root(const std::string& name) {
  Communicator& world = test_world();
  const std::string root = fmt::format("{}/ckpt_np{}/{}", COCONUT_TEST_TMP, world.size(), name);
  if (world.rank() == 0) {
    fs::remove_all(root);
    fs::create_directories(root);
  }
  world.barrier();
  return root;
}

// Element i of tensor t at version v: a hashed, full-precision float (not a small
// integer), so any misplaced or dropped element shows.
float value(int t, int v, uint64_t i) {
  uint64_t x = (uint64_t(t) << 48) ^ (uint64_t(v) << 36) ^ i;
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  return static_cast<float>(static_cast<int64_t>(x >> 40) - (int64_t(1) << 23)) * 1e-6f;
}

// The whole state of every rank: each tensor's values, and this rank's share of it.
struct State {
  std::vector<std::string> names;
  std::vector<std::vector<float>> full;  // every tensor, whole (each rank knows all)
  std::vector<StateSlice> mine;
};

// Tensors cut at random points into pieces dealt out to random ranks, so a rank may own
// several separate pieces of a tensor or none; the random generator is seeded the same on
// every rank, so they agree on the cut. "eot.params" belongs to rank 0 alone.
State make_state(int version, uint64_t size = 10007, uint32_t seed = 11) {
  Communicator& world = test_world();
  State s;
  s.names = {"adam.m", "adam.v", "eot.params", "params"};
  const std::vector<uint64_t> sizes = {size, size, 37, size};
  std::mt19937_64 gen(seed);
  s.full.resize(s.names.size());
  for (size_t t = 0; t < s.names.size(); ++t) {
    s.full[t].resize(sizes[t]);
    for (uint64_t i = 0; i < sizes[t]; ++i) s.full[t][i] = value(static_cast<int>(t), version, i);
    std::vector<uint64_t> cuts = {0, sizes[t]};
    if (s.names[t] != "eot.params")
      for (int k = 0; k < 3 * world.size(); ++k) cuts.push_back(1 + gen() % (sizes[t] - 1));
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    for (size_t p = 0; p + 1 < cuts.size(); ++p) {
      const int owner = s.names[t] == "eot.params" ? 0 : static_cast<int>(gen() % world.size());
      if (owner == world.rank())
        s.mine.push_back({s.names[t], sizes[t], cuts[p], cuts[p + 1] - cuts[p], s.full[t].data() + cuts[p]});
    }
  }
  return s;
}

CheckpointMeta make_meta(int64_t step) {
  CheckpointMeta m;
  m.step = step;
  m.epoch = 3;
  m.stage = 2;
  m.batch_in_epoch = 5;
  m.config_digest = "config-abc";
  m.model_digest = "model-xyz";
  m.pp = 1;
  m.dp = test_world().size();
  m.trainer_state = R"({"adam_step": 17})";
  return m;
}

// Every tensor read back whole equals the state, bit for bit.
void expect_reads_back(const std::string& dir, const State& s) {
  const Manifest m = read_manifest(dir);
  ASSERT_EQ(m.tensors.size(), s.names.size());
  for (size_t t = 0; t < s.names.size(); ++t) {
    std::vector<float> got(s.full[t].size(), -1.0f);
    read_tensor_range(dir, m, s.names[t], 0, got.size(), got.data());
    EXPECT_EQ(std::memcmp(got.data(), s.full[t].data(), got.size() * sizeof(float)), 0) << s.names[t];
  }
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Runs f and returns its coconut::Error message ("" when it did not throw).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const coconut::Error& e) {
    return e.what();
  }
  return "";
}

TEST(CheckpointMpi, RoundTripRandomSlices) {
  Communicator& world = test_world();
  const std::string root = fresh_root("roundtrip");
  const State s = make_state(1);
  const std::string dir = save_checkpoint(world, root, make_meta(40), s.mine);
  EXPECT_EQ(dir, root + "/step-00000040");
  EXPECT_EQ(find_latest_checkpoint(root), dir);
  const Manifest m = read_manifest(dir);
  EXPECT_EQ(m.format_version, 1u);
  EXPECT_EQ(m.meta.step, 40);
  EXPECT_EQ(m.meta.epoch, 3);
  EXPECT_EQ(m.meta.stage, 2);
  EXPECT_EQ(m.meta.batch_in_epoch, 5);
  EXPECT_EQ(m.meta.config_digest, "config-abc");
  EXPECT_EQ(m.meta.model_digest, "model-xyz");
  EXPECT_EQ(m.meta.dp, world.size());
  EXPECT_EQ(m.meta.trainer_state, R"({"adam_step": 17})");
  EXPECT_EQ(m.world_size, world.size());
  EXPECT_EQ(m.files.size(), static_cast<size_t>(world.size()));
  EXPECT_EQ(m.tensor("eot.params").slices.size(), 1u);
  EXPECT_EQ(m.tensor("eot.params").slices[0].file, "shard-00000.bin");
  EXPECT_TRUE(verify_checkpoint(dir, m).empty());
  expect_reads_back(dir, s);
  check_model_digest(dir, m, "model-xyz");  // the same model: no error
  world.barrier();
}

TEST(CheckpointMpi, ReadsAnyRangeAcrossShards) {
  Communicator& world = test_world();
  const std::string root = fresh_root("reshard");
  const State s = make_state(2);
  const std::string dir = save_checkpoint(world, root, make_meta(7), s.mine);
  const Manifest m = read_manifest(dir);
  // The even split another topology would load, then random ranges (different on each rank).
  const uint64_t n = s.full[3].size();
  for (int parts : {1, 2, 3, 5, 8}) {
    for (int p = 0; p < parts; ++p) {
      const uint64_t b = n * p / parts, e = n * (p + 1) / parts;
      std::vector<float> got(e - b);
      read_tensor_range(dir, m, "params", b, e - b, got.data());
      ASSERT_EQ(std::memcmp(got.data(), s.full[3].data() + b, got.size() * sizeof(float)), 0)
          << parts << " parts, part " << p;
    }
  }
  std::mt19937_64 gen(100 + world.rank());
  for (int k = 0; k < 60; ++k) {
    const size_t t = gen() % s.names.size();
    const uint64_t size = s.full[t].size(), b = gen() % size, count = gen() % (size - b + 1);
    std::vector<float> got(count);
    read_tensor_range(dir, m, s.names[t], b, count, got.data());
    ASSERT_EQ(std::memcmp(got.data(), s.full[t].data() + b, count * sizeof(float)), 0)
        << s.names[t] << " [" << b << ", +" << count << ")";
  }
  EXPECT_NE(error_of([&] { read_tensor_range(dir, m, "params", n - 2, 3, nullptr); }).find("outside"),
            std::string::npos);
  EXPECT_NE(error_of([&] { m.tensor("nope"); }).find("no tensor 'nope'"), std::string::npos);
  world.barrier();
}

TEST(CheckpointMpi, AsyncSaveEqualsSyncSave) {
  Communicator& world = test_world();
  const std::string root_sync = fresh_root("sync"), root_async = fresh_root("async");
  State s = make_state(3, 200003);
  const std::string dir_sync = save_checkpoint(world, root_sync, make_meta(9), s.mine);
  AsyncCheckpointer async(world, root_async);
  async.snapshot(make_meta(9), s.mine);
  EXPECT_TRUE(async.pending());
  EXPECT_GT(async.blocking_seconds(), 0.0);
  // Training goes on and changes the state: the snapshot must not see it.
  for (auto& t : s.full) std::fill(t.begin(), t.end(), 42.0f);
  const std::string dir_async = async.complete();
  EXPECT_FALSE(async.pending());
  EXPECT_EQ(async.complete(), "");
  EXPECT_EQ(dir_async, root_async + "/step-00000009");
  if (world.rank() == 0) {
    std::printf("async snapshot blocked %.3f ms for %zu local slices\n", async.blocking_seconds() * 1e3,
                s.mine.size());
    // Same state and meta: the same bytes in every file, manifest included.
    std::vector<std::string> names = {"manifest.pb"};
    for (int r = 0; r < world.size(); ++r) names.push_back(fmt::format("shard-{:05d}.bin", r));
    for (const std::string& name : names) {
      const std::string a = read_bytes(dir_sync + "/" + name), b = read_bytes(dir_async + "/" + name);
      EXPECT_FALSE(a.empty()) << name;
      EXPECT_TRUE(a == b) << name << " differs between the synchronous and the asynchronous save";
    }
  }
  // A second snapshot completes the first on its own; then the newest is latest.
  const State s2 = make_state(4, 200003);
  async.snapshot(make_meta(10), s2.mine);
  async.snapshot(make_meta(11), s2.mine);
  EXPECT_EQ(find_latest_checkpoint(root_async), root_async + "/step-00000010");
  async.complete();
  EXPECT_EQ(find_latest_checkpoint(root_async), root_async + "/step-00000011");
  expect_reads_back(root_async + "/step-00000011", s2);
  world.barrier();
}

TEST(CheckpointMpi, RetentionKeepsLastAndMilestones) {
  Communicator& world = test_world();
  const std::string root = fresh_root("retention");
  const State s = make_state(5, 101);
  for (int step = 1; step <= 7; ++step) {
    CheckpointMeta meta = make_meta(step);
    meta.milestone = step == 2 || step == 3;
    save_checkpoint(world, root, meta, s.mine, RetentionPolicy{2});
  }
  if (world.rank() == 0) {
    std::vector<std::string> left;
    for (const auto& e : fs::directory_iterator(root)) left.push_back(e.path().filename().string());
    std::sort(left.begin(), left.end());
    const std::vector<std::string> expected = {"latest", "step-00000002", "step-00000003", "step-00000006",
                                               "step-00000007"};
    EXPECT_EQ(left, expected);
  }
  EXPECT_EQ(find_latest_checkpoint(root), root + "/step-00000007");
  // keep_last 0 keeps everything.
  const std::string all = fresh_root("retention_all");
  for (int step = 1; step <= 4; ++step) save_checkpoint(world, all, make_meta(step), s.mine, RetentionPolicy{0});
  if (world.rank() == 0) {
    EXPECT_EQ(std::distance(fs::directory_iterator(all), fs::directory_iterator()), 5);
  }
  world.barrier();
}

TEST(CheckpointMpi, FindLatestIgnoresUncommittedDirectories) {
  Communicator& world = test_world();
  const std::string root = fresh_root("uncommitted");
  const State s = make_state(6, 500);
  const std::string good = save_checkpoint(world, root, make_meta(3), s.mine);
  if (world.rank() == 0) {
    // A complete-looking temporary (killed before its rename) and a step directory whose
    // manifest never got written: neither is committed.
    fs::copy(good, root + "/step-00000009.tmp-deadbeef");
    fs::copy(good, root + "/step-00000007");
    fs::remove(root + "/step-00000007/manifest.pb");
  }
  world.barrier();
  EXPECT_EQ(find_latest_checkpoint(root), good);  // `latest` names step 3
  world.barrier();
  if (world.rank() == 0) {
    std::ofstream(root + "/latest") << "step-00000009.tmp-deadbeef\n";
  }
  world.barrier();
  EXPECT_EQ(find_latest_checkpoint(root), good);
  world.barrier();
  if (world.rank() == 0) std::ofstream(root + "/latest") << "step-00000007\n";
  world.barrier();
  EXPECT_EQ(find_latest_checkpoint(root), good);
  world.barrier();
  if (world.rank() == 0) fs::remove(root + "/latest");
  world.barrier();
  EXPECT_EQ(find_latest_checkpoint(root), good);
  const std::string err = error_of([&] { read_manifest(root + "/step-00000007"); });
  EXPECT_NE(err.find("step-00000007/manifest.pb"), std::string::npos) << err;
  EXPECT_EQ(find_latest_checkpoint(root + "/does-not-exist"), "");
  world.barrier();
}

TEST(CheckpointMpi, DamagedCheckpointsAreRefusedNamingTheFile) {
  Communicator& world = test_world();
  const std::string root = fresh_root("damaged");
  const State s = make_state(7, 3000);
  const std::string dir = save_checkpoint(world, root, make_meta(5), s.mine);
  const std::string last = fmt::format("shard-{:05d}.bin", world.size() - 1);
  const Manifest m = read_manifest(dir);

  // Wrong model configuration.
  std::string err = error_of([&] { check_model_digest(dir, m, "model-other"); });
  EXPECT_NE(err.find(dir + "/manifest.pb"), std::string::npos) << err;
  EXPECT_NE(err.find("another model configuration"), std::string::npos) << err;

  // One flipped byte inside the data of shard 0: the slice that holds it fails its checksum.
  world.barrier();
  const SliceInfo victim = m.tensor("eot.params").slices[0];  // always in shard 0
  if (world.rank() == 0) {
    std::fstream f(dir + "/shard-00000.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(victim.file_offset + 13));
    char c = 0;
    f.seekg(static_cast<std::streamoff>(victim.file_offset + 13));
    f.get(c);
    f.seekp(static_cast<std::streamoff>(victim.file_offset + 13));
    f.put(static_cast<char>(c ^ 0x10));
  }
  world.barrier();
  std::vector<float> buf(37);
  err = error_of([&] { read_tensor_range(dir, read_manifest(dir), "eot.params", 0, 37, buf.data()); });
  EXPECT_NE(err.find(dir + "/shard-00000.bin: checksum mismatch"), std::string::npos) << err;
  const std::vector<std::string> problems = verify_checkpoint(dir, m);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("shard-00000.bin"), std::string::npos) << problems[0];
  // Other tensors' slices still read: the damage is reported where it is.
  std::vector<float> p(3000);
  read_tensor_range(dir, m, "params", 0, 3000, p.data());
  EXPECT_EQ(std::memcmp(p.data(), s.full[3].data(), p.size() * sizeof(float)), 0);

  // A truncated shard: refused when the manifest is read, before any data is trusted.
  world.barrier();
  if (world.rank() == 0) fs::resize_file(dir + "/" + last, fs::file_size(dir + "/" + last) - 4);
  world.barrier();
  err = error_of([&] { read_manifest(dir); });
  EXPECT_NE(err.find(dir + "/" + last), std::string::npos) << err;
  EXPECT_NE(err.find("truncated"), std::string::npos) << err;

  // A missing shard.
  world.barrier();
  if (world.rank() == 0) fs::remove(dir + "/" + last);
  world.barrier();
  err = error_of([&] { read_manifest(dir); });
  EXPECT_NE(err.find(dir + "/" + last + ": shard file missing"), std::string::npos) << err;

  // A damaged manifest.
  const std::string dir2 = save_checkpoint(world, root, make_meta(6), s.mine);
  if (world.rank() == 0) {
    std::string bytes = read_bytes(dir2 + "/manifest.pb");
    bytes[bytes.size() / 2] ^= 0x01;
    std::ofstream(dir2 + "/manifest.pb", std::ios::binary | std::ios::trunc) << bytes;
  }
  world.barrier();
  err = error_of([&] { read_manifest(dir2); });
  EXPECT_NE(err.find(dir2 + "/manifest.pb"), std::string::npos) << err;
  world.barrier();
}

TEST(CheckpointMpi, OneFailingRankMakesEveryRankThrow) {
  Communicator& world = test_world();
  const std::string root = fresh_root("failing");
  const State s = make_state(8, 1000);
  const std::string good = save_checkpoint(world, root, make_meta(1), s.mine);

  // The last rank hands over a slice without data: every rank throws the same error.
  std::vector<StateSlice> bad = s.mine;
  if (world.rank() == world.size() - 1) bad.push_back({"params", 1000, 0, 10, nullptr});
  std::string err = error_of([&] { save_checkpoint(world, root, make_meta(2), bad); });
  EXPECT_NE(err.find(fmt::format("failed on 1 of {} ranks; rank {}", world.size(), world.size() - 1)),
            std::string::npos) << err;
  EXPECT_NE(err.find("data null"), std::string::npos) << err;

  // Slices that leave a hole or overlap: found by rank 0 before committing.
  std::vector<StateSlice> holes;
  for (const StateSlice& x : s.mine)
    if (!(x.tensor == "adam.v" && x.begin == 0)) holes.push_back(x);
  err = error_of([&] { save_checkpoint(world, root, make_meta(3), holes); });
  EXPECT_NE(err.find("tensor 'adam.v': elements [0, "), std::string::npos) << err;
  EXPECT_NE(err.find("written by no rank"), std::string::npos) << err;
  std::vector<StateSlice> twice = s.mine;
  if (world.rank() == 0) twice.push_back({"params", 1000, 500, 1, s.full[3].data() + 500});
  err = error_of([&] { save_checkpoint(world, root, make_meta(4), twice); });
  EXPECT_NE(err.find("written twice"), std::string::npos) << err;

  // Nothing of the failed saves is committed or left behind; the first still loads.
  world.barrier();
  EXPECT_EQ(find_latest_checkpoint(root), good);
  if (world.rank() == 0) {
    std::vector<std::string> left;
    for (const auto& e : fs::directory_iterator(root)) left.push_back(e.path().filename().string());
    std::sort(left.begin(), left.end());
    EXPECT_EQ(left, (std::vector<std::string>{"latest", "step-00000001"}));
  }
  expect_reads_back(good, s);
  world.barrier();
}

TEST(CheckpointMpi, SavingTheSameStepAgainReplacesIt) {
  Communicator& world = test_world();
  const std::string root = fresh_root("resave");
  const State a = make_state(9, 777), b = make_state(10, 777, 99);
  save_checkpoint(world, root, make_meta(4), a.mine);
  const std::string dir = save_checkpoint(world, root, make_meta(4), b.mine);
  EXPECT_EQ(find_latest_checkpoint(root), dir);
  expect_reads_back(dir, b);
  world.barrier();
  if (world.rank() == 0) {
    for (const auto& e : fs::directory_iterator(root))
      EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  }
  world.barrier();
}

}  // namespace
}  // namespace coconut::parallel
