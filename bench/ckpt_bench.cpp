// `coconut bench ckpt` (see ckpt_bench.h). Every timed section starts and ends with a
// barrier, so a figure is the time of the slowest rank; throughput is the bytes of all
// ranks over that time. Before each read the files' cached pages are dropped
// (posix_fadvise DONTNEED, after their fsync), so both reads come from the disk rather
// than from the page cache, the same for the plain file and the checkpoint.
#include "bench/ckpt_bench.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <vector>

#include "parallel/checkpoint.h"
#include "runtime/files.h"
#include "runtime/check.h"
#include "runtime/timer.h"

namespace coconut::bench {

namespace {

namespace fs = std::filesystem;
using parallel::Communicator;

// Drops the page-cache copy of a file (it must be synced already).
void evict(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  COCONUT_CHECK(fd >= 0, "cannot open {}: {}", path, std::strerror(errno));
  const int rc = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
  COCONUT_CHECK(rc == 0, "posix_fadvise on {} failed: {}", path, std::strerror(rc));
}

// Seconds of f between two barriers (the slowest rank's time).
template <class F>
double timed(Communicator& world, F&& f) {
  world.barrier();
  Timer t;
  f();
  world.barrier();
  return t.seconds();
}

}  // namespace

CkptBenchResult measure_ckpt(const CkptBenchOptions& o, Communicator& world) {
  COCONUT_CHECK(o.params >= 1 && o.repeats >= 1, "bench ckpt: --params and --repeats must be >= 1");
  const int rank = world.rank(), size = world.size();
  const uint64_t n = o.params;
  const uint64_t begin = n * rank / size, local = n * (rank + 1) / size - begin;
  const std::vector<std::string> names = {"params", "adam.m", "adam.v"};
  const uint64_t total_bytes = names.size() * n * sizeof(float);

  // The state: arbitrary but not constant values (a constant page might compress somewhere).
  std::vector<std::vector<float>> state(names.size(), std::vector<float>(local));
  std::vector<std::vector<float>> back(names.size(), std::vector<float>(local));
  for (size_t t = 0; t < names.size(); ++t)
    for (uint64_t i = 0; i < local; ++i) state[t][i] = static_cast<float>((begin + i) % 9973) * 1e-3f + t;
  std::vector<parallel::StateSlice> slices;
  for (size_t t = 0; t < names.size(); ++t)
    if (local > 0) slices.push_back({names[t], n, begin, local, state[t].data()});

  const std::string dir = o.dir;
  if (rank == 0) {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  world.barrier();
  const std::string plain = fmt::format("{}/plain-{:05d}.bin", dir, rank);
  const std::string sync_root = dir + "/sync", async_root = dir + "/async";
  auto check_back = [&](const char* what) {
    for (size_t t = 0; t < names.size(); ++t)
      COCONUT_CHECK(std::memcmp(back[t].data(), state[t].data(), local * sizeof(float)) == 0,
                    "bench ckpt: {} read back different bytes for '{}'", what, names[t]);
    for (auto& b : back) std::fill(b.begin(), b.end(), 0.0f);
  };

  // Each the best (shortest) time over the repeats.
  double plain_write = 1e30, plain_read = 1e30, save = 1e30, load = 1e30, snap_first = 1e30, snap = 1e30,
         async_total = 1e30;
  const parallel::RetentionPolicy keep{1};
  parallel::AsyncCheckpointer async(world, async_root, keep);

  for (int rep = 0; rep < o.repeats; ++rep) {
    // A new file each time, as a checkpoint is: rewriting the old one in place reuses its
    // freed page-cache pages and measured up to 3x faster here than a fresh file.
    fs::remove(plain);
    plain_write = std::min(plain_write, timed(world, [&] {
      OutFile out(plain);
      for (const auto& t : state) out.write(t.data(), t.size() * sizeof(float));
      out.sync();
      out.close();
    }));
    evict(plain);
    plain_read = std::min(plain_read, timed(world, [&] {
      const int fd = ::open(plain.c_str(), O_RDONLY | O_CLOEXEC);
      COCONUT_CHECK(fd >= 0, "cannot open {}: {}", plain, std::strerror(errno));
      for (size_t t = 0; t < names.size(); ++t)
        read_exact(fd, plain, t * local * sizeof(float), back[t].data(), local * sizeof(float));
      ::close(fd);
    }));
    check_back("the plain read");

    parallel::CheckpointMeta meta;
    meta.step = rep;
    meta.dp = size;
    std::string ckpt;
    save = std::min(save, timed(world, [&] { ckpt = parallel::save_checkpoint(world, sync_root, meta, slices, keep); }));
    evict(fmt::format("{}/shard-{:05d}.bin", ckpt, rank));
    load = std::min(load, timed(world, [&] {
      const parallel::Manifest m = parallel::read_manifest(ckpt);
      for (size_t t = 0; t < names.size(); ++t)
        parallel::read_tensor_range(ckpt, m, names[t], begin, local, back[t].data());
    }));
    check_back("the checkpoint load");

    // Asynchronous: the snapshot is what training waits for; complete() would overlap with
    // the next training steps (here nothing runs in between).
    async_total = std::min(async_total, timed(world, [&] {
      async.snapshot(meta, slices);
      double& blocking = rep == 0 ? snap_first : snap;
      blocking = std::min(blocking, async.blocking_seconds());
      async.complete();
    }));
  }
  // The blocking time of the slowest rank.
  std::vector<double> blocking = {snap_first, snap < 1e29 ? snap : 0.0};
  {
    std::vector<double> all(size * blocking.size(), 0.0);
    std::copy(blocking.begin(), blocking.end(), all.begin() + rank * blocking.size());
    world.all_reduce_sum(all.data(), all.size());
    for (size_t k = 0; k < blocking.size(); ++k) {
      blocking[k] = 0;
      for (int r = 0; r < size; ++r) blocking[k] = std::max(blocking[k], all[r * blocking.size() + k]);
    }
    snap_first = blocking[0];
    snap = blocking[1];
  }

  world.barrier();
  if (!o.keep && rank == 0) fs::remove_all(dir);
  CkptBenchResult r;
  r.bytes = total_bytes, r.ranks = size;
  r.plain_write = plain_write, r.save = save, r.plain_read = plain_read, r.load = load;
  r.snapshot_first = snap_first, r.snapshot_reused = snap, r.async_total = async_total;
  return r;
}

int run_ckpt_bench(const CkptBenchOptions& o, Communicator& world) {
  const CkptBenchResult r = measure_ckpt(o, world);
  if (world.rank() != 0) return 0;
  fmt::print("checkpoint benchmark: 3 tensors x {} floats = {:.1f} MB over {} rank(s), in {} (best of {})\n", o.params,
             r.bytes / 1e6, r.ranks, o.dir, o.repeats);
  fmt::print("| what | seconds | MB/s |\n|---|---|---|\n");
  const std::pair<const char*, double> rows[] = {{"plain write + fsync", r.plain_write},
                                                 {"checkpoint save (sync)", r.save},
                                                 {"plain read", r.plain_read},
                                                 {"checkpoint load (CRC checked)", r.load},
                                                 {"async: snapshot blocking, first", r.snapshot_first},
                                                 {"async: snapshot blocking, buffers reused", r.snapshot_reused},
                                                 {"async: snapshot + complete", r.async_total}};
  for (const auto& [what, seconds] : rows) {
    if (seconds <= 0) continue;  // buffers reused: needs a second repeat
    fmt::print("| {} | {:.3f} | {:.0f} |\n", what, seconds, r.mb_per_s(seconds));
  }
  fmt::print("save / plain write: {:.2f}; load / plain read: {:.2f} (throughput ratios)\n", r.plain_write / r.save,
             r.plain_read / r.load);
  return 0;
}

}  // namespace coconut::bench
