// Logging: spdlog with a rank prefix on every line, so the interleaved output of an
// MPI job stays readable. After init_logging(), log through spdlog's default logger
// (spdlog::info(...), spdlog::warn(...), SPDLOG_DEBUG(...)); there is no wrapper.
//
// Line format:  [12:00:01.123] [rank 1/4] [info] message
//
// Console (stderr): rank 0 logs at `level`; the other ranks log only warnings and
// errors, so N ranks do not print N copies of every progress line, unless `level` is
// "debug" or "trace", when every rank logs at that level (debugging a distributed run
// needs all ranks). The optional file gets every message at `level` from its rank.
#pragma once

#include <string>

namespace coconut {

// level: one of trace, debug, info, warn, error, critical, off (else an error).
// file_path: "" for no file; "{rank}" in it is replaced by the rank, otherwise, when
// world_size > 1, ".rank<r>" is appended so that ranks never share a file. Parent
// directories are created. Safe to call again (replaces the previous setup).
void init_logging(int rank, int world_size, const std::string& level = "info",
                  const std::string& file_path = "");

// The file init_logging() writes for this rank ("" when none): the rule above, applied.
std::string log_file_for_rank(const std::string& file_path, int rank, int world_size);

}  // namespace coconut
