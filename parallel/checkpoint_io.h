// Low-level pieces of the checkpoint format (parallel/checkpoint.h): the on-disk
// constants, directory names, and the fault-injection points that the crash tests use
// (checked file I/O is runtime/files.h). Nothing here knows about ranks or manifests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace coconut::parallel::ckpt_io {

// The on-disk format. A shard file starts with a 64-byte header: the 8 magic bytes
// "COCOSHD\0", the format version (u32 little-endian), the writer's rank (u32), then
// zeros; its slices follow back to back as float32, at the offsets the manifest gives.
// manifest.pb is a ManifestFile (checkpoint.proto) with kManifestMagic.
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr char kShardMagic[8] = {'C', 'O', 'C', 'O', 'S', 'H', 'D', '\0'};
inline constexpr size_t kShardHeaderBytes = 64;
inline constexpr uint32_t kManifestMagic = 0x4B43434D;

// "step-00000120" for step 120; the name of a committed checkpoint directory.
std::string step_dir_name(int64_t step);
// The step of a committed directory's name ("step-" and digits only), -1 for any other
// name (a temporary "step-00000120.tmp-...", `latest`, foreign files).
int64_t committed_step(const std::string& name);

// Fault injection for the crash tests, off unless COCONUT_CKPT_FAULT is set:
//   COCONUT_CKPT_FAULT=<point>        every rank that reaches the point
//   COCONUT_CKPT_FAULT=<point>@<rank> only that rank
// Points: mid_shard_write (after half of the shard's bytes, any rank),
// before_manifest_rename and before_latest_update (rank 0, which commits). At the point
// the process raises SIGKILL on itself, as `kill -9` would.
bool fault_requested(const char* point, int rank);
void maybe_fault(const char* point, int rank);  // raise(SIGKILL) when requested

}  // namespace coconut::parallel::ckpt_io
