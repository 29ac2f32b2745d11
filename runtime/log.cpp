// Sets up spdlog's default logger with a rank prefix (see log.h).
#include "runtime/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "runtime/check.h"

namespace coconut {

std::string log_file_for_rank(const std::string& file_path, int rank, int world_size) {
  if (file_path.empty()) return "";
  std::string out = file_path;
  size_t at = out.find("{rank}");
  if (at != std::string::npos) return out.replace(at, 6, std::to_string(rank));
  return world_size > 1 ? fmt::format("{}.rank{}", out, rank) : out;
}

void init_logging(int rank, int world_size, const std::string& level, const std::string& file_path) {
  COCONUT_CHECK(world_size >= 1 && rank >= 0 && rank < world_size,
                "init_logging: rank {} is not in a world of size {}", rank, world_size);
  static const std::vector<std::string> kLevels = {"trace", "debug", "info", "warn",
                                                   "error", "critical", "off"};
  COCONUT_CHECK(std::find(kLevels.begin(), kLevels.end(), level) != kLevels.end(),
                "log level expects one of [{}], got '{}'", fmt::join(kLevels, ", "), level);
  spdlog::level::level_enum lvl = spdlog::level::from_str(level);

  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  bool all_ranks_verbose = lvl <= spdlog::level::debug;
  console->set_level(rank == 0 || all_ranks_verbose ? lvl : std::max(lvl, spdlog::level::warn));
  std::vector<spdlog::sink_ptr> sinks = {console};

  std::string path = log_file_for_rank(file_path, rank, world_size);
  if (!path.empty()) {
    try {
      auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/false);
      file->set_level(lvl);
      sinks.push_back(file);
    } catch (const spdlog::spdlog_ex& e) {
      COCONUT_FAIL("{}: cannot open log file: {}", path, e.what());
    }
  }

  auto logger = std::make_shared<spdlog::logger>("coconut", sinks.begin(), sinks.end());
  logger->set_level(lvl);  // the sinks filter further, per rank
  logger->set_pattern(fmt::format("[%H:%M:%S.%e] [rank {}/{}] [%l] %v", rank, world_size));
  // Flush every line at info and above: a crashed or killed rank must not lose its last words.
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace coconut
