// Stop signals (runtime/stop_signals.h): the handlers record the first SIGTERM / SIGUSR1
// (the process carries on), give the previous handlers back when destroyed, refuse a
// second installation, and pass the signals on to the child that run_to_log runs with
// forward_stop_signals (also one that came before the child started).
#include <gtest/gtest.h>
#include <signal.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/check.h"
#include "runtime/process.h"
#include "runtime/stop_signals.h"

namespace coconut {
namespace {

using Handler = void (*)(int);

Handler current_handler(int signal) {
  struct sigaction now {};
  ::sigaction(signal, nullptr, &now);
  return now.sa_handler;
}

TEST(StopSignals, RecordTheFirstSignalAndRestoreTheHandlers) {
  const Handler term_before = current_handler(SIGTERM), usr1_before = current_handler(SIGUSR1);
  {
    StopSignals signals;
    EXPECT_EQ(StopSignals::received(), 0);
    EXPECT_NE(current_handler(SIGTERM), term_before);
    EXPECT_THROW(StopSignals second, Error);  // one at a time
    ASSERT_EQ(std::raise(SIGUSR1), 0);        // would end the process without the handler
    EXPECT_EQ(StopSignals::received(), SIGUSR1);
    ASSERT_EQ(std::raise(SIGTERM), 0);
    EXPECT_EQ(StopSignals::received(), SIGUSR1);  // the first one counts
    EXPECT_STREQ(stop_signal_name(StopSignals::received()), "SIGUSR1");
  }
  EXPECT_EQ(current_handler(SIGTERM), term_before);
  EXPECT_EQ(current_handler(SIGUSR1), usr1_before);
  StopSignals again;  // a fresh installation starts with nothing received
  EXPECT_EQ(StopSignals::received(), 0);
  EXPECT_STREQ(stop_signal_name(SIGTERM), "SIGTERM");
}

// Restore::never (`coconut train`): the handlers outlive the object, so a signal while
// the process ends is recorded, not fatal. In a child process (a death test), which keeps
// the handlers installed for good.
TEST(StopSignals, NeverRestoredHandlersOutliveTheObject) {
  EXPECT_EXIT(
      {
        { const StopSignals signals(StopSignals::Restore::never); }
        std::raise(SIGTERM);  // the default action would end the child with SIGTERM
        std::exit(StopSignals::received() == SIGTERM ? 0 : 1);
      },
      testing::ExitedWithCode(0), "");
}

TEST(StopSignals, GoOnToTheChildOfRunToLog) {
  const std::string log = (std::filesystem::temp_directory_path() / "coconut_test_stop_signals.log").string();
  std::filesystem::remove(log);
  StopSignals signals;
  // The child sends this process SIGTERM, which the handler records and sends back to
  // the child: its trap prints and exits 7. Without forwarding it would sleep on.
  const std::string script = "trap 'echo got TERM; exit 7' TERM; kill -TERM $PPID; for i in $(seq 100); do sleep 0.1; done";
  EXPECT_EQ(run_to_log({"sh", "-c", script}, log, /*forward_stop_signals=*/true), 7);
  EXPECT_EQ(StopSignals::received(), SIGTERM);
  // A signal received before the child started is sent to it as soon as it runs.
  EXPECT_EQ(run_to_log({"sh", "-c", "sleep 10; echo not stopped"}, log, true), 128 + SIGTERM);
  // Without forwarding the child is left alone.
  EXPECT_EQ(run_to_log({"sh", "-c", "echo alone"}, log, false), 0);
  std::stringstream text;
  text << std::ifstream(log).rdbuf();
  EXPECT_EQ(text.str(), "got TERM\nalone\n");
  std::filesystem::remove(log);
}

}  // namespace
}  // namespace coconut
