// RunOutput and the progress line: the ETA arithmetic, hh:mm:ss formatting, the exact
// progress line, and the run directory's files (fresh start, resume, step rows).
// The TensorBoard contents are read back by test_tensorboard_read.py.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "launcher/run_output.h"
#include "runtime/check.h"

namespace coconut::launcher {
namespace {

namespace fs = std::filesystem;

TEST(Progress, EtaExtrapolatesThisProcessSteps) {
  EXPECT_DOUBLE_EQ(eta_seconds(10, 100, 20.0), 180.0);        // 2 s per step, 90 steps left
  EXPECT_DOUBLE_EQ(eta_seconds(60, 100, 20.0, 50), 80.0);     // resumed at 50: 10 steps in 20 s
  EXPECT_DOUBLE_EQ(eta_seconds(100, 100, 50.0), 0.0);         // done
  EXPECT_DOUBLE_EQ(eta_seconds(120, 100, 50.0), 0.0);         // past the plan: never negative
  EXPECT_LT(eta_seconds(0, 100, 5.0), 0.0);                   // unknown before the first step
  EXPECT_LT(eta_seconds(50, 100, 5.0, 50), 0.0);              // nor right after a resume
}

TEST(Progress, DurationFormat) {
  EXPECT_EQ(format_duration(0), "00:00:00");
  EXPECT_EQ(format_duration(59.4), "00:00:59");
  EXPECT_EQ(format_duration(59.6), "00:01:00");
  EXPECT_EQ(format_duration(3661), "01:01:01");
  EXPECT_EQ(format_duration(360000 + 125), "100:02:05");
  EXPECT_EQ(format_duration(-1), "--:--:--");
  EXPECT_EQ(format_duration(std::nan("")), "--:--:--");
  EXPECT_EQ(format_duration(INFINITY), "--:--:--");
}

TEST(Progress, Line) {
  Progress p;
  p.epoch = 1, p.epochs = 3, p.stage = 1, p.step = 40, p.total_steps = 90;
  p.loss = 1.23456, p.tokens_per_s = 5321.4, p.elapsed_seconds = 80;  // 2 s/step, 50 left
  p.grad_norm = 0.81234;
  EXPECT_EQ(format_progress(p),
            "epoch 1 (3 epochs) stage 1 step 40/90 loss 1.2346 grad norm 0.812  5321 tok/s ETA 00:01:40");
  p.step = 0;
  p.grad_norm = 12345.6;
  EXPECT_EQ(format_progress(p),
            "epoch 1 (3 epochs) stage 1 step 0/90 loss 1.2346 grad norm 1.23e+04  5321 tok/s ETA --:--:--");
  p.grad_norm = std::nan("");  // a step that was not applied
  EXPECT_EQ(format_progress(p),
            "epoch 1 (3 epochs) stage 1 step 0/90 loss 1.2346 grad norm nan  5321 tok/s ETA --:--:--");
}

class RunOutputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ = fs::temp_directory_path() / fmt::format("coconut_test_run_output.{}.{}", name, getpid());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<nlohmann::json> rows() const {
    std::vector<nlohmann::json> out;
    std::ifstream in(dir_ / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
    return out;
  }
  int event_files() const {
    int n = 0;
    for (const auto& e : fs::directory_iterator(dir_)) n += e.path().filename().string().starts_with("events.out.tfevents.");
    return n;
  }

  fs::path dir_;
};

TEST_F(RunOutputTest, FreshRunReplacesResumedRunAppends) {
  {
    RunOutput out(dir_.string(), true);
    EXPECT_EQ(out.metrics_path(), (dir_ / "metrics.jsonl").string());
    EXPECT_TRUE(fs::exists(out.tensorboard_path()));
    out.log_step({0, 0, 1, 2.0, 1e-4, 100});  // no step rows by default
    out.log_epoch({{"epoch", 0}, {"stage", 0}, {"step", 1}, {"loss", 2.0}});
  }
  ASSERT_EQ(rows().size(), 1u);
  EXPECT_EQ(rows()[0]["loss"], 2.0);
  EXPECT_EQ(event_files(), 1);
  {
    RunOutput out(dir_.string(), false);  // resume: keeps the rows and the old event file
    out.log_epoch({{"epoch", 1}, {"stage", 1}, {"step", 2}, {"loss", 1.5}});
  }
  ASSERT_EQ(rows().size(), 2u);
  EXPECT_EQ(rows()[1]["epoch"], 1);
  EXPECT_EQ(event_files(), 2);
  {
    RunOutput out(dir_.string(), true);  // a new run in the same directory starts clean
  }
  EXPECT_FALSE(fs::exists(dir_ / "metrics.jsonl"));
  EXPECT_EQ(event_files(), 1);
}

TEST_F(RunOutputTest, StepRowsAndNoTensorBoard) {
  RunOutputOptions o;
  o.tensorboard = false;
  o.step_rows = true;
  RunOutput out(dir_.string(), true, o);
  EXPECT_EQ(out.tensorboard_path(), "");
  out.log_step({0, 2, 7, 0.5, 3e-4, 1234.5});
  out.log_epoch({{"epoch", 0}, {"stage", 2}, {"step", 7}, {"loss", 0.5}});
  const auto r = rows();
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0]["kind"], "step");
  EXPECT_EQ(r[0]["step"], 7);
  EXPECT_EQ(r[0]["stage"], 2);
  EXPECT_EQ(r[0]["learning_rate"], 3e-4);
  EXPECT_EQ(r[0]["tokens_per_s"], 1234.5);
  EXPECT_FALSE(r[1].contains("kind"));
  EXPECT_EQ(event_files(), 0);
}

TEST_F(RunOutputTest, EpochRowNeedsAnEpoch) {
  RunOutput out(dir_.string(), true);
  EXPECT_THROW(out.log_epoch({{"stage", 0}, {"loss", 1.0}}), coconut::Error);
  EXPECT_THROW(out.log_epoch({{"epoch", "zero"}}), coconut::Error);
}

}  // namespace
}  // namespace coconut::launcher
