// Coordinated sharded checkpoints (DESIGN.md section 6).
//
// A checkpoint is a directory under a checkpoint root, written by all ranks together:
//
//   ROOT/step-00000120/          committed checkpoint (renamed from step-00000120.tmp-<nonce>/)
//       shard-00000.bin ...      one file per rank: a magic/version header, then the
//                                rank's slices back to back
//       manifest.pb              Protobuf (parallel/checkpoint.proto), written last by
//                                rank 0 after every rank reported a successful, fsynced
//                                shard: format version, step/epoch/stage, config and
//                                model digests, topology, trainer state, and for every
//                                tensor its global size and the slices each file holds
//                                (file, tensor offset, length, file offset, checksum)
//   ROOT/latest                  the committed directory's name; replaced (write a
//                                temporary file, fsync, rename) only after the commit
//
// The state is a set of named flat float tensors ("params", "adam.m", "adam.v",
// "eot.params", ...), each of a known global size; every rank contributes the slices it
// owns, and together the ranks must cover every tensor exactly once (checked before
// anything is committed). Reading is by (tensor, range): the reader finds the files that
// hold the range, so a checkpoint written on one PP x DP topology loads on any other
// (resharding). Only committed checkpoints are ever read, and every slice read is
// checked against its checksum; any mismatch, missing or short file, or a manifest
// whose model digest differs from the caller's stops with a coconut::Error naming the
// file.
//
// A failed save (a rank that cannot write, a full disk) throws on every rank, removes
// its temporary directory where it can, and leaves earlier checkpoints and `latest`
// untouched. A job killed at any point leaves at worst a *.tmp-* directory, which
// readers ignore and the next save removes, or (killed after the commit, before the
// `latest` update) a complete step directory that `latest` does not name yet: readers
// follow `latest`, and the next save of that step replaces it.
//
// Fault injection (crash tests only; off unless the variable is set):
//   COCONUT_CKPT_FAULT=<point>[@<rank>]   e.g. mid_shard_write@1
// kills the process with SIGKILL (as `kill -9` would) at <point>, on every rank that
// reaches it or only on <rank>: mid_shard_write (half of the rank's shard written),
// before_manifest_rename (rank 0: manifest written and fsynced, directory not yet
// renamed), before_latest_update (rank 0: committed, `latest` not yet replaced).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "parallel/comm.h"

namespace coconut::parallel {

// One slice of a global tensor that this rank writes: elements [begin, begin + count)
// of the tensor named `tensor`, whose whole length is global_size.
struct StateSlice {
  std::string tensor;
  uint64_t global_size = 0;
  uint64_t begin = 0;
  uint64_t count = 0;
  const float* data = nullptr;  // count elements; only read during the save call
};

// Scalars and small structured state saved with the checkpoint (rank 0's values).
struct CheckpointMeta {
  int64_t step = 0;              // optimizer steps taken
  int32_t epoch = 0;             // the epoch in progress (or the next one at a boundary)
  int32_t stage = 0;             // its curriculum stage
  int64_t batch_in_epoch = 0;    // batches of `epoch` already taken (0 at a boundary)
  std::string config_digest;     // the effective run configuration (informational)
  std::string model_digest;      // what must match to load: model shape + tokenizer
  int32_t pp = 1, dp = 1;        // topology that wrote it
  std::string trainer_state;     // JSON: optimizer step counts, loss accumulators, ...
  bool milestone = false;        // never deleted by retention (e.g. end of a stage)
};

struct RetentionPolicy {
  int keep_last = 3;  // committed non-milestone checkpoints to keep (0 = all)
};

// Collective over `world` (every rank calls it with its own slices; rank 0's meta is
// the one stored). Writes ROOT/step-<step>, commits it, updates `latest`, then applies
// retention (oldest non-milestone checkpoints beyond keep_last are deleted). Returns the
// committed directory. Throws coconut::Error on every rank if any rank failed.
std::string save_checkpoint(Communicator& world, const std::string& root, const CheckpointMeta& meta,
                            const std::vector<StateSlice>& slices, const RetentionPolicy& keep = {});

// Asynchronous saving: snapshot() copies the slices into host buffers (the only time
// training is blocked; reported by blocking_seconds()) and returns while a background
// thread writes and fsyncs this rank's shard. complete() is collective: it waits for
// the local write, agrees on success over `world`, and rank 0 commits the manifest and
// `latest`. A second snapshot() first completes the previous one.
class AsyncCheckpointer {
 public:
  // Collective over world (rank 0 picks the name of the temporary directories).
  AsyncCheckpointer(Communicator& world, std::string root, RetentionPolicy keep = {});
  ~AsyncCheckpointer();  // waits for a pending write; does not commit it
  void snapshot(const CheckpointMeta& meta, const std::vector<StateSlice>& slices);
  // Collective; returns the committed directory ("" when nothing was pending).
  std::string complete();
  bool pending() const;
  double blocking_seconds() const;  // of the last snapshot()

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// What a committed checkpoint holds, read from its manifest.
struct SliceInfo {
  std::string file;         // shard file name inside the checkpoint directory
  uint64_t begin = 0, count = 0;  // tensor elements
  uint64_t file_offset = 0;       // bytes
  uint32_t checksum = 0;          // CRC-32C of the slice's bytes
};
struct TensorInfo {
  std::string name;
  uint64_t global_size = 0;
  std::vector<SliceInfo> slices;  // sorted by begin, covering [0, global_size) exactly
};
struct Manifest {
  uint32_t format_version = 0;
  CheckpointMeta meta;
  int32_t world_size = 0;
  std::vector<std::string> files;  // shard files, one per rank of the writer
  std::vector<uint64_t> file_bytes;  // the exact size of each file (truncation check)
  std::vector<TensorInfo> tensors;
  const TensorInfo& tensor(const std::string& name) const;  // throws naming the name
  bool has_tensor(const std::string& name) const;
};

// The newest committed checkpoint under root (by `latest`, falling back to the highest
// committed step-* when `latest` is missing or stale); "" when there is none.
std::string find_latest_checkpoint(const std::string& root);

// The committed checkpoint `path` names: path itself when it holds manifest.pb, else the
// newest committed checkpoint under it (a checkpoint root). Throws naming `what` (the
// option or key that gave the path) and the path when it is not a directory, is an
// uncommitted (temporary) checkpoint directory, or holds no committed checkpoint.
std::string committed_checkpoint(const std::string& path, const std::string& what);

// Reads and validates dir/manifest.pb (present, parseable, right magic and version,
// every shard file present with at least the bytes its slices need). Throws naming
// the file otherwise.
Manifest read_manifest(const std::string& dir);

// Throws naming dir/manifest.pb when the checkpoint was written for another model
// (manifest.meta.model_digest != expected_model_digest): loading it would fail later
// with a less helpful message or, worse, load weights of the wrong shape.
void check_model_digest(const std::string& dir, const Manifest& manifest, const std::string& expected_model_digest);

// Fills out[0, count) with elements [begin, begin + count) of `tensor`, from whichever
// shard files hold them, verifying the checksum of every slice it touches.
void read_tensor_range(const std::string& dir, const Manifest& manifest, const std::string& tensor,
                       uint64_t begin, uint64_t count, float* out);

// Reads every slice of every tensor and checks its checksum; returns one line per
// problem (empty = sound). For `coconut ckpt inspect`.
std::vector<std::string> verify_checkpoint(const std::string& dir, const Manifest& manifest);

}  // namespace coconut::parallel
