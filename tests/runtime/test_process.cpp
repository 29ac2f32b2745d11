// Child processes (runtime/process.h): run_to_log's exit codes and log, and LineChild's
// line-by-line exchange, end of output, a child that has gone, and a command that
// cannot start.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/check.h"
#include "runtime/process.h"

namespace coconut {
namespace {

TEST(Process, RunToLogReturnsTheExitCodeAndAppendsOutput) {
  const std::string log = (std::filesystem::temp_directory_path() / "coconut_test_process.log").string();
  std::filesystem::remove(log);
  EXPECT_EQ(run_to_log({"sh", "-c", "echo one; echo two >&2; exit 3"}, log), 3);
  EXPECT_EQ(run_to_log({"sh", "-c", "echo three"}, log), 0);
  EXPECT_EQ(run_to_log({"sh", "-c", "kill -9 $$"}, log), 128 + 9);
  std::stringstream text;
  text << std::ifstream(log).rdbuf();
  EXPECT_EQ(text.str(), "one\ntwo\nthree\n");
  EXPECT_THROW(run_to_log({"/nonexistent/coconut-no-such-binary"}, log), Error);
  std::filesystem::remove(log);
}

TEST(Process, LineChildAnswersLineByLine) {
  LineChild child({"sh", "-c", "echo ready; while read l; do echo \"got $l\"; done; exit 5"});
  std::string line;
  ASSERT_TRUE(child.receive(&line));
  EXPECT_EQ(line, "ready");
  for (const char* word : {"step", "two words", ""}) {
    ASSERT_TRUE(child.send(word));
    ASSERT_TRUE(child.receive(&line));
    EXPECT_EQ(line, std::string("got ") + word);
  }
  EXPECT_EQ(child.finish(), 5);  // its stdin closed: the loop ends
  EXPECT_EQ(child.finish(), 5);  // once; then the same answer
  EXPECT_FALSE(child.send("late"));
  EXPECT_FALSE(child.receive(&line));
}

TEST(Process, LineChildThatHasGoneIsFalseNotASignal) {
  LineChild child({"sh", "-c", "echo bye"});
  std::string line;
  ASSERT_TRUE(child.receive(&line));
  EXPECT_EQ(line, "bye");
  EXPECT_FALSE(child.receive(&line));  // end of its output
  bool sent = true;
  for (int i = 0; i < 1000 && sent; ++i) sent = child.send("anyone?");  // EPIPE once it has exited
  EXPECT_FALSE(sent);
  EXPECT_EQ(child.finish(), 0);
}

TEST(Process, LineChildOfAMissingProgramThrows) {
  EXPECT_THROW(LineChild({"/nonexistent/coconut-no-such-binary"}), Error);
}

}  // namespace
}  // namespace coconut
