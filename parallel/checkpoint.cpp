// The writing side of checkpoints (parallel/checkpoint.h): every rank writes and fsyncs
// its shard into a temporary directory, the ranks agree that all succeeded, rank 0
// writes the manifest, renames the directory into place (the commit), replaces
// `latest`, and applies retention. The synchronous save and AsyncCheckpointer share
// these steps; in the asynchronous one only the shard write runs on a background
// thread, and every MPI call stays on the calling thread.
//
// Failure handling: a rank never throws between collectives. Each phase records its
// error as a string, and agree() turns "some rank failed" into the same exception on
// every rank, so one rank's full disk cannot leave the others waiting forever.
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "checkpoint.pb.h"
#include "parallel/checkpoint.h"
#include "parallel/checkpoint_io.h"
#include "runtime/check.h"
#include "runtime/crc32c.h"
#include "runtime/files.h"
#include "runtime/timer.h"

namespace coconut::parallel {

namespace fs = std::filesystem;
using namespace ckpt_io;

namespace {

std::string strip_trailing_slashes(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

// A fresh name part for temporary directories, picked by rank 0 and sent to everyone:
// it must differ from whatever a killed earlier job left behind.
std::string agree_nonce(Communicator& world) {
  uint64_t nonce = 0;
  if (world.rank() == 0) {
    std::random_device rd;
    nonce = (uint64_t(rd()) << 32) ^ rd() ^ uint64_t(::getpid()) ^
            uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  world.broadcast_bytes(&nonce, sizeof nonce, 0);
  return fmt::format("{:016x}", nonce);
}

// Collective. Every rank passes its error ("" = success); returns "" when all succeeded,
// else the same message on every rank: how many ranks failed and the first one's error.
std::string agree(Communicator& world, const std::string& my_error) {
  const std::vector<int64_t> failed = gather_to_all(world, my_error.empty() ? 0 : 1);
  const auto first = std::find(failed.begin(), failed.end(), int64_t(1));
  if (first == failed.end()) return "";
  const int root = static_cast<int>(first - failed.begin());
  char message[2048] = {};
  if (world.rank() == root) std::strncpy(message, my_error.c_str(), sizeof message - 1);
  world.broadcast_bytes(message, sizeof message, root);
  const int64_t n = std::count(failed.begin(), failed.end(), int64_t(1));
  return fmt::format("checkpoint save failed on {} of {} ranks; rank {}: {}", n, world.size(), root, message);
}

// Collective: every rank's bytes, in rank order, on every rank. Each rank fills only its
// own region of a zeroed buffer and a sum all-reduce assembles them (x + 0 == x exactly).
std::vector<std::string> all_gather_bytes(Communicator& world, const std::string& mine) {
  const int n = world.size();
  const std::vector<int64_t> sizes = gather_to_all(world, static_cast<int64_t>(mine.size()));
  std::vector<size_t> word_offset(n + 1, 0);
  for (int r = 0; r < n; ++r) word_offset[r + 1] = word_offset[r] + (static_cast<size_t>(sizes[r]) + 7) / 8;
  std::vector<int64_t> words(word_offset[n], 0);
  std::memcpy(words.data() + word_offset[world.rank()], mine.data(), mine.size());
  world.all_reduce_sum(words.data(), words.size());
  std::vector<std::string> out(n);
  for (int r = 0; r < n; ++r)
    out[r].assign(reinterpret_cast<const char*>(words.data() + word_offset[r]), static_cast<size_t>(sizes[r]));
  return out;
}

// Writes dir/shard-<rank>.bin (header, then the slices back to back), fsyncs it and
// returns its index (serialized ckpt::ShardIndex). Throws naming the file.
std::string write_shard(const std::string& dir, int rank, const std::vector<StateSlice>& slices) {
  const std::string name = fmt::format("shard-{:05d}.bin", rank);
  uint64_t total = kShardHeaderBytes;
  for (const StateSlice& s : slices) {
    COCONUT_CHECK(!s.tensor.empty() && s.count > 0 && s.begin + s.count <= s.global_size && s.data != nullptr,
                  "checkpoint slice of tensor '{}' is invalid: elements [{}, {}) of {}, data {}", s.tensor, s.begin,
                  s.begin + s.count, s.global_size, s.data ? "set" : "null");
    total += s.count * sizeof(float);
  }
  const bool fault = fault_requested("mid_shard_write", rank);
  OutFile out(dir + "/" + name);
  // Appends bytes; under the mid_shard_write fault, dies once half the shard is written.
  auto put = [&](const void* data, size_t bytes) {
    if (fault && out.bytes_written() + bytes >= total / 2) {
      out.write(data, total / 2 - out.bytes_written());
      out.sync();
      maybe_fault("mid_shard_write", rank);
    }
    out.write(data, bytes);
  };
  unsigned char header[kShardHeaderBytes] = {};
  std::memcpy(header, kShardMagic, sizeof kShardMagic);
  const uint32_t version = kFormatVersion, writer = static_cast<uint32_t>(rank);
  std::memcpy(header + 8, &version, 4);
  std::memcpy(header + 12, &writer, 4);
  put(header, sizeof header);

  ckpt::ShardIndex index;
  for (const StateSlice& s : slices) {
    ckpt::ShardIndex::Entry* e = index.add_entries();
    e->set_tensor(s.tensor);
    e->set_global_size(s.global_size);
    ckpt::Slice* slice = e->mutable_slice();
    slice->set_file(name);
    slice->set_begin(s.begin);
    slice->set_count(s.count);
    slice->set_file_offset(out.bytes_written());
    // Checksum and write chunk by chunk, so each chunk is still in cache when written.
    const auto* bytes = reinterpret_cast<const char*>(s.data);
    const size_t size = s.count * sizeof(float);
    constexpr size_t kChunk = size_t(4) << 20;
    uint32_t crc = 0;
    for (size_t at = 0; at < size; at += kChunk) {
      const size_t n = std::min(kChunk, size - at);
      crc = crc32c(bytes + at, n, crc);
      put(bytes + at, n);
    }
    slice->set_crc32c(crc);
  }
  out.sync();
  out.close();
  index.mutable_file()->set_name(name);
  index.mutable_file()->set_bytes(total);
  return index.SerializeAsString();
}

// Rank 0: the manifest from every rank's shard index. Checks that every tensor has one
// global size and that the slices cover it exactly once.
ckpt::Manifest build_manifest(const CheckpointMeta& meta, const std::vector<std::string>& indices) {
  ckpt::Manifest m;
  m.set_format_version(kFormatVersion);
  m.set_step(meta.step);
  m.set_epoch(meta.epoch);
  m.set_stage(meta.stage);
  m.set_batch_in_epoch(meta.batch_in_epoch);
  m.set_config_digest(meta.config_digest);
  m.set_model_digest(meta.model_digest);
  m.mutable_topology()->set_world_size(static_cast<int32_t>(indices.size()));
  m.mutable_topology()->set_pp(meta.pp);
  m.mutable_topology()->set_dp(meta.dp);
  m.set_trainer_state(meta.trainer_state);
  m.set_milestone(meta.milestone);
  std::map<std::string, ckpt::Tensor> tensors;  // sorted by name: the same manifest bytes every time
  for (size_t r = 0; r < indices.size(); ++r) {
    ckpt::ShardIndex index;
    COCONUT_CHECK(index.ParseFromString(indices[r]), "shard index of rank {} does not parse", r);
    *m.add_files() = index.file();
    for (const ckpt::ShardIndex::Entry& e : index.entries()) {
      auto [it, fresh] = tensors.try_emplace(e.tensor());
      if (fresh) {
        it->second.set_name(e.tensor());
        it->second.set_global_size(e.global_size());
      }
      COCONUT_CHECK(it->second.global_size() == e.global_size(),
                    "tensor '{}' has global size {} on one rank but {} on rank {}", e.tensor(),
                    it->second.global_size(), e.global_size(), r);
      *it->second.add_slices() = e.slice();
    }
  }
  for (auto& [name, t] : tensors) {
    std::sort(t.mutable_slices()->begin(), t.mutable_slices()->end(),
              [](const ckpt::Slice& a, const ckpt::Slice& b) { return a.begin() < b.begin(); });
    uint64_t next = 0;
    for (const ckpt::Slice& s : t.slices()) {
      COCONUT_CHECK(s.begin() <= next, "tensor '{}': elements [{}, {}) are written by no rank", name, next, s.begin());
      COCONUT_CHECK(s.begin() >= next, "tensor '{}': elements [{}, {}) are written twice ({} and another shard)",
                    name, s.begin(), std::min<uint64_t>(next, s.begin() + s.count()), s.file());
      next = s.begin() + s.count();
    }
    COCONUT_CHECK(next == t.global_size(), "tensor '{}': elements [{}, {}) are written by no rank", name, next,
                  t.global_size());
    *m.add_tensors() = std::move(t);
  }
  return m;
}

// Deletes a directory by first renaming it to a temporary name, so that a crash halfway
// through the deletion leaves a *.tmp-* directory (ignored) rather than a committed name
// with files missing.
void remove_dir_safely(const std::string& root, const std::string& name, const std::string& nonce) {
  const std::string doomed = root + "/" + name + ".tmp-delete-" + nonce;
  fs::rename(root + "/" + name, doomed);
  fs::remove_all(doomed);
}

// Rank 0, after a commit: deletes committed non-milestone checkpoints beyond the newest
// keep_last (never the one just committed) and temporaries that killed saves left.
void apply_retention(const std::string& root, const RetentionPolicy& keep, const std::string& committed,
                     bool committed_is_milestone, const std::string& nonce) {
  std::vector<std::pair<int64_t, std::string>> candidates;  // (step, name), non-milestones
  std::vector<std::string> stale;
  for (const fs::directory_entry& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp-") != std::string::npos) {
      stale.push_back(name);
      continue;
    }
    const int64_t step = committed_step(name);
    if (step < 0 || name == committed || !fs::is_regular_file(e.path() / "manifest.pb")) continue;
    try {
      if (!read_manifest(e.path().string()).meta.milestone) candidates.emplace_back(step, name);
    } catch (const std::exception& err) {
      spdlog::warn("checkpoint retention: keeping {} which does not read: {}", name, err.what());
    }
  }
  for (const std::string& name : stale) fs::remove_all(root + "/" + name);
  if (keep.keep_last <= 0) return;
  std::sort(candidates.rbegin(), candidates.rend());
  // A new non-milestone checkpoint is one of the keep_last; the newest others fill the rest.
  const int others = std::max(keep.keep_last - (committed_is_milestone ? 0 : 1), 0);
  for (size_t i = static_cast<size_t>(others); i < candidates.size(); ++i)
    remove_dir_safely(root, candidates[i].second, nonce);
}

// Rank 0: writes the manifest into tmp_dir, commits it as root/step-X, updates `latest`,
// applies retention. Returns the committed directory.
std::string commit(const std::string& root, const std::string& tmp_dir, const CheckpointMeta& meta,
                   const std::vector<std::string>& indices, const RetentionPolicy& keep, const std::string& nonce) {
  const ckpt::Manifest m = build_manifest(meta, indices);
  ckpt::ManifestFile envelope;
  envelope.set_magic(kManifestMagic);
  envelope.set_format_version(kFormatVersion);
  envelope.set_manifest(m.SerializeAsString());
  envelope.set_manifest_crc32c(crc32c(envelope.manifest().data(), envelope.manifest().size()));
  const std::string bytes = envelope.SerializeAsString();
  OutFile out(tmp_dir + "/manifest.pb");
  out.write(bytes.data(), bytes.size());
  out.sync();
  out.close();
  sync_dir(tmp_dir);
  maybe_fault("before_manifest_rename", 0);

  const std::string name = step_dir_name(meta.step);
  const std::string final_dir = root + "/" + name;
  std::error_code ec;
  const std::string old = root + "/" + name + ".tmp-replaced-" + nonce;
  const bool replacing = fs::exists(final_dir, ec);
  if (replacing) {
    // A checkpoint of the same step (a rerun after a crash): move it aside, commit the new
    // one; retention then deletes the old. `latest` names an older step meanwhile.
    COCONUT_CHECK(::rename(final_dir.c_str(), old.c_str()) == 0, "cannot move {} aside to {}: {}", final_dir, old,
                  std::strerror(errno));
  }
  if (::rename(tmp_dir.c_str(), final_dir.c_str()) != 0) {
    const int err = errno;
    if (replacing) ::rename(old.c_str(), final_dir.c_str());  // put the committed one back
    COCONUT_FAIL("cannot commit {} as {}: {}", tmp_dir, final_dir, std::strerror(err));
  }
  sync_dir(root);
  maybe_fault("before_latest_update", 0);
  write_file_atomic(root + "/latest", name + "\n");
  // Retention never fails a save that is committed: a leftover old checkpoint is harmless.
  try {
    apply_retention(root, keep, name, meta.milestone, nonce);
  } catch (const std::exception& e) {
    spdlog::warn("checkpoint retention in {} failed: {}", root, e.what());
  }
  return final_dir;
}

// This rank's part of a save up to the collective steps: create the temporary directory
// and write the shard. Returns the error ("" = success) and sets index.
std::string write_local(const std::string& root, const std::string& tmp_dir, int rank,
                        const std::vector<StateSlice>& slices, std::string& index) {
  try {
    std::error_code ec;
    fs::create_directories(root, ec);
    COCONUT_CHECK(fs::is_directory(root), "cannot create checkpoint directory {}: {}", root, ec.message());
    // Every rank may create the directory; whoever comes first wins.
    COCONUT_CHECK(::mkdir(tmp_dir.c_str(), 0755) == 0 || errno == EEXIST, "cannot create {}: {}", tmp_dir,
                  std::strerror(errno));
    index = write_shard(tmp_dir, rank, slices);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

// Collective: agrees on the local writes, then rank 0 commits. Throws on every rank if
// any rank failed; a failed save leaves no committed directory and `latest` unchanged.
std::string finish_save(Communicator& world, const std::string& root, const std::string& tmp_dir,
                        const CheckpointMeta& meta, const std::string& local_error, const std::string& index,
                        const RetentionPolicy& keep, const std::string& nonce) {
  auto remove_tmp = [&] {
    std::error_code ec;
    if (world.rank() == 0) fs::remove_all(tmp_dir, ec);
  };
  std::string error = agree(world, local_error);
  if (!error.empty()) {
    remove_tmp();  // every rank is past its writes: safe to delete
    COCONUT_FAIL("{}", error);
  }
  const std::vector<std::string> indices = all_gather_bytes(world, index);
  std::string commit_error;
  if (world.rank() == 0) {
    try {
      commit(root, tmp_dir, meta, indices, keep, nonce);
    } catch (const std::exception& e) {
      commit_error = e.what();
      remove_tmp();
    }
  }
  error = agree(world, commit_error);
  if (!error.empty()) COCONUT_FAIL("{}", error);
  return root + "/" + step_dir_name(meta.step);
}

}  // namespace

std::string save_checkpoint(Communicator& world, const std::string& root_in, const CheckpointMeta& meta,
                            const std::vector<StateSlice>& slices, const RetentionPolicy& keep) {
  const std::string root = strip_trailing_slashes(root_in);
  const std::string nonce = agree_nonce(world);
  const std::string tmp_dir = root + "/" + step_dir_name(meta.step) + ".tmp-" + nonce;
  std::string index;
  const std::string error = write_local(root, tmp_dir, world.rank(), slices, index);
  return finish_save(world, root, tmp_dir, meta, error, index, keep, nonce);
}

// ---- AsyncCheckpointer ----

struct AsyncCheckpointer::Impl {
  Communicator& world;
  std::string root;
  RetentionPolicy keep;
  std::string nonce;  // agreed once; each save adds its sequence number
  uint64_t seq = 0;

  bool pending = false;
  double blocking = 0;
  CheckpointMeta meta;
  std::string tmp_dir;
  std::vector<std::vector<float>> buffers;  // host copies of the slices
  std::vector<StateSlice> slices;           // pointing into buffers
  std::thread worker;
  std::string error, index;  // written by the worker, read after join()

  Impl(Communicator& w, std::string r, RetentionPolicy k) : world(w), root(std::move(r)), keep(k) {}
};

AsyncCheckpointer::AsyncCheckpointer(Communicator& world, std::string root, RetentionPolicy keep)
    : impl_(std::make_unique<Impl>(world, strip_trailing_slashes(std::move(root)), keep)) {
  impl_->nonce = agree_nonce(world);
}

AsyncCheckpointer::~AsyncCheckpointer() {
  if (impl_ && impl_->worker.joinable()) impl_->worker.join();
}

void AsyncCheckpointer::snapshot(const CheckpointMeta& meta, const std::vector<StateSlice>& slices) {
  Impl& s = *impl_;
  if (s.pending) complete();
  Timer timer;
  // The copy is all that blocks training; buffers keep their capacity between saves.
  s.buffers.resize(slices.size());
  s.slices = slices;
  // No throwing here: a bad slice (null data) is reported by the worker's write and
  // agreed on in complete(), like any other failure of one rank.
  for (size_t i = 0; i < slices.size(); ++i) {
    if (slices[i].data == nullptr) continue;
    s.buffers[i].assign(slices[i].data, slices[i].data + slices[i].count);
    s.slices[i].data = s.buffers[i].data();
  }
  s.blocking = timer.seconds();
  s.meta = meta;
  s.tmp_dir = fmt::format("{}/{}.tmp-{}-{}", s.root, step_dir_name(meta.step), s.nonce, s.seq++);
  s.error.clear();
  s.index.clear();
  s.pending = true;
  const int rank = s.world.rank();
  s.worker = std::thread([&s, rank] { s.error = write_local(s.root, s.tmp_dir, rank, s.slices, s.index); });
}

std::string AsyncCheckpointer::complete() {
  Impl& s = *impl_;
  if (!s.pending) return "";
  s.worker.join();
  s.pending = false;
  return finish_save(s.world, s.root, s.tmp_dir, s.meta, s.error, s.index, s.keep, s.nonce);
}

bool AsyncCheckpointer::pending() const { return impl_->pending; }

double AsyncCheckpointer::blocking_seconds() const { return impl_->blocking; }

}  // namespace coconut::parallel
