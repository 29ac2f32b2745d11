// Tests of runtime/log: the rank prefix and line format, per-rank console filtering,
// per-rank log files, and rejection of a bad level.
#include "runtime/log.h"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "runtime/check.h"

namespace coconut {
namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Initialises logging, logs one line per level, returns what reached stderr.
std::string console_output(int rank, int world, const std::string& level) {
  testing::internal::CaptureStderr();
  init_logging(rank, world, level);
  spdlog::debug("dbg-line");
  spdlog::info("info-line");
  spdlog::warn("warn-line");
  spdlog::default_logger()->flush();
  return testing::internal::GetCapturedStderr();
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(Log, ConsoleRankZeroLogsAtLevel) {
  std::string out = console_output(0, 4, "info");
  EXPECT_TRUE(has(out, "[rank 0/4]")) << out;
  EXPECT_TRUE(has(out, "info-line")) << out;
  EXPECT_TRUE(has(out, "warn-line")) << out;
  EXPECT_FALSE(has(out, "dbg-line")) << out;
}

TEST(Log, ConsoleOtherRanksOnlyWarnUnlessDebug) {
  std::string out = console_output(2, 4, "info");
  EXPECT_FALSE(has(out, "info-line")) << out;
  EXPECT_TRUE(has(out, "[rank 2/4]")) << out;
  EXPECT_TRUE(has(out, "warn-line")) << out;
  out = console_output(2, 4, "debug");
  EXPECT_TRUE(has(out, "dbg-line")) << out;
  EXPECT_TRUE(has(out, "info-line")) << out;
}

TEST(Log, FilePerRankWithExactFormat) {
  auto dir = std::filesystem::temp_directory_path() / "coconut_test_log";
  std::filesystem::remove_all(dir);
  std::string base = (dir / "sub" / "train.log").string();
  EXPECT_EQ(log_file_for_rank(base, 1, 4), base + ".rank1");
  EXPECT_EQ(log_file_for_rank(base, 0, 1), base);
  EXPECT_EQ(log_file_for_rank("logs/r{rank}.txt", 3, 4), "logs/r3.txt");
  EXPECT_EQ(log_file_for_rank("", 3, 4), "");

  testing::internal::CaptureStderr();
  init_logging(1, 4, "info", base);
  spdlog::debug("not in file");
  spdlog::info("hello {}", 42);
  spdlog::default_logger()->flush();
  testing::internal::GetCapturedStderr();
  init_logging(0, 1, "warn");  // replaces the logger, which closes the file

  std::string text = read_all(base + ".rank1");
  std::regex line(R"(^\[\d\d:\d\d:\d\d\.\d{3}\] \[rank 1/4\] \[info\] hello 42\n$)");
  EXPECT_TRUE(std::regex_match(text, line)) << "file: '" << text << "'";
  std::filesystem::remove_all(dir);
}

TEST(Log, BadArguments) {
  try {
    init_logging(0, 1, "verbose");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "log level expects one of [trace, debug, info, warn, error, critical, off], got 'verbose'"))
        << e.what();
  }
  EXPECT_THROW(init_logging(4, 4), Error);
  EXPECT_THROW(init_logging(-1, 4), Error);
}

}  // namespace
}  // namespace coconut
