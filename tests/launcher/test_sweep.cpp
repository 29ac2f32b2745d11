// Unit tests of the sweep logic (launcher/sweep.h): reading the sweep file, the grid's
// order and run names, run states, the command line of a run and the results table.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "launcher/run_output.h"
#include "launcher/sweep.h"
#include "runtime/check.h"

namespace coconut::launcher {
namespace {

namespace fs = std::filesystem;

SweepSpec parse(const std::string& text) {
  Config c = Config::from_string(text, "sweep.yaml");
  return read_sweep(c);
}

// A fresh temporary folder per test.
fs::path temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("coconut_test_sweep_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const char* kSweep =
    "base: ../tiny.yaml\n"
    "out: runs/s\n"
    "grid:\n"
    "  - key: curriculum.c_thought\n"
    "    values: [0, 1, 2]\n"
    "  - key: run.seed\n"
    "    values: [7, 8]\n"
    "set: [train.epochs=2]\n"
    "launch:\n"
    "  np: 2\n"
    "  mpirun_args: [--oversubscribe]\n";

TEST(Sweep, ReadsTheFileAndExpandsTheGridFirstKeySlowest) {
  const SweepSpec s = parse(kSweep);
  EXPECT_EQ(s.base_config, "../tiny.yaml");  // the file "sweep.yaml" has no folder
  EXPECT_EQ(s.np, 2);
  ASSERT_EQ(s.grid.size(), 2u);
  const std::vector<SweepRun> runs = expand_grid(s);
  const std::vector<std::string> names = {"c_thought-0_seed-7", "c_thought-0_seed-8", "c_thought-1_seed-7",
                                          "c_thought-1_seed-8", "c_thought-2_seed-7", "c_thought-2_seed-8"};
  ASSERT_EQ(runs.size(), names.size());
  for (size_t i = 0; i < runs.size(); ++i) {
    EXPECT_EQ(runs[i].name, names[i]);
    EXPECT_EQ(runs[i].dir, "runs/s/" + names[i]);
  }
  EXPECT_EQ(runs[3].point, (std::vector<std::pair<std::string, std::string>>{{"curriculum.c_thought", "1"},
                                                                             {"run.seed", "8"}}));
}

TEST(Sweep, BaseConfigIsRelativeToTheSweepFile) {
  Config c = Config::from_string(kSweep, "configs/sweeps/x.yaml");
  EXPECT_EQ(read_sweep(c).base_config, "configs/tiny.yaml");
}

TEST(Sweep, NamesUseTheWholeKeyWhenLastComponentsClashAndSanitizeValues) {
  const SweepSpec s = parse(
      "base: b.yaml\nout: o\ngrid:\n  - key: a.x\n    values: [p/q]\n  - key: b.x\n    values: ['1 2']\n");
  const std::vector<SweepRun> runs = expand_grid(s);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].name, "a.x-p_q_b.x-1_2");
}

TEST(Sweep, TwoPointsWithTheSameNameAreAnError) {
  const SweepSpec s = parse("base: b.yaml\nout: o\ngrid:\n  - key: data.x\n    values: [a/b, a_b]\n");
  EXPECT_THROW(expand_grid(s), Error);
}

TEST(Sweep, BadFilesNameTheKey) {
  auto message = [](const std::string& text) {
    try {
      parse(text);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(message("out: o\ngrid:\n  - key: a\n    values: [1]\n").find("missing required key 'base'"),
            std::string::npos);
  EXPECT_NE(message("base: b\nout: o\ngrid: []\n").find("'grid' expects a non-empty list"), std::string::npos);
  EXPECT_NE(message("base: b\nout: o\ngrid:\n  - key: a\n    values: []\n").find("grid.0.values"),
            std::string::npos);
  EXPECT_NE(message("base: b\nout: o\ngrid:\n  - key: a\n    values: [1]\n  - key: a\n    values: [2]\n")
                .find("'a' is already a grid key"),
            std::string::npos);
  EXPECT_NE(message("base: b\nout: o\ngrid:\n  - key: run.dir\n    values: [x]\n").find("run.dir is set by the sweep"),
            std::string::npos);
  EXPECT_NE(message("base: b\nout: o\ngrid:\n  - key: a\n    values: [1]\nset: [nokey]\n").find("key=value"),
            std::string::npos);
  EXPECT_NE(message("base: b\nout: o\ngrid:\n  - key: a\n    values: [1]\nlaunch:\n  np: two\n").find("launch.np"),
            std::string::npos);
  EXPECT_NE(message("base: b\nout: o\ngrid:\n  - key: a\n    values: [1]\nextra: 1\n").find("unknown key 'extra'"),
            std::string::npos);
}

TEST(Sweep, CommandLineUnderMpirunAndAlone) {
  SweepSpec s = parse(kSweep);
  const SweepRun run = expand_grid(s)[1];
  const std::vector<std::string> mpi = train_command(s, run, "/bin/coconut", /*resume=*/true);
  const std::vector<std::string> expected = {
      "mpirun", "-np", "2", "--oversubscribe", "/bin/coconut", "train", "../tiny.yaml",
      "--set", "train.epochs=2", "--set", "curriculum.c_thought=0", "--set", "run.seed=8",
      "--set", "run.dir=runs/s/c_thought-0_seed-8", "--resume", "auto"};
  EXPECT_EQ(mpi, expected);
  s.np = 1;
  const std::vector<std::string> alone = train_command(s, run, "/bin/coconut", /*resume=*/false);
  EXPECT_EQ(alone.front(), "/bin/coconut");
  EXPECT_EQ(alone.back(), "run.dir=runs/s/c_thought-0_seed-8");
}

TEST(Sweep, RunStateFollowsTheDirectoryAndTheMarker) {
  const fs::path dir = temp_dir("state");
  const std::string run = (dir / "r").string();
  EXPECT_EQ(run_state(run), RunState::New);
  fs::create_directories(run);
  EXPECT_EQ(run_state(run), RunState::Interrupted);
  write_done_marker(run, 12.5, false, {"coconut", "train"});
  EXPECT_EQ(run_state(run), RunState::Finished);
  EXPECT_FALSE(fs::exists(fs::path(run) / (std::string(kSweepDoneFile) + ".tmp")));
  fs::remove_all(dir);
}

TEST(Sweep, StatusOnDiskNamesWhatTheDirectoryHolds) {
  const fs::path dir = temp_dir("status");
  const std::string run = (dir / "r").string();
  EXPECT_EQ(status_on_disk(run), "pending");
  fs::create_directories(run);
  EXPECT_EQ(status_on_disk(run), "interrupted");
  note_attempt_start(run);
  EXPECT_EQ(status_on_disk(run), "interrupted") << "an attempt in progress";
  note_attempt_end(run, 2.0, 1);
  EXPECT_EQ(status_on_disk(run), "failed (exit 1)");
  note_attempt_start(run);
  note_attempt_end(run, 2.0, 75);
  EXPECT_EQ(status_on_disk(run), "stopped by a signal");
  std::ofstream(fs::path(run) / kSweepAttemptsFile, std::ios::app) << R"({"start": 1)";  // being written
  EXPECT_EQ(status_on_disk(run), "interrupted");
  write_done_marker(run, 1.0, true, {"coconut", "train"});
  EXPECT_EQ(status_on_disk(run), "resumed");
  write_done_marker(run, 1.0, false, {"coconut", "train"});
  EXPECT_EQ(status_on_disk(run), "trained");
  const std::string diverged = (dir / "d").string();
  fs::create_directories(diverged);
  std::ofstream(fs::path(diverged) / kDivergedFile) << R"({"step": 6, "loss": "nan"})";
  EXPECT_EQ(status_on_disk(diverged), "diverged (step 6, loss nan)");
  fs::remove_all(dir);
}

TEST(Sweep, ShardsSplitTheGridByIndexModuloTheTaskCount) {
  const SweepShard shard = parse_shard("1/3");
  EXPECT_EQ(shard.index, 1);
  EXPECT_EQ(shard.count, 3);
  std::vector<size_t> mine;
  for (size_t run = 0; run < 8; ++run)
    if (shard.mine(run)) mine.push_back(run);
  EXPECT_EQ(mine, (std::vector<size_t>{1, 4, 7}));
  EXPECT_TRUE(parse_shard("0/1").mine(5));
  for (const char* bad : {"3/3", "-1/2", "1/0", "1/", "/2", "1of2", "1/2x", "a/b", ""})
    EXPECT_THROW(parse_shard(bad), Error) << bad;
}

TEST(Sweep, WallTimeAddsEveryAttemptAndEstimatesAKilledOne) {
  const fs::path dir = temp_dir("attempts");
  fs::create_directories(dir);
  EXPECT_LT(attempts_seconds(dir.string()), 0);  // nothing recorded
  note_attempt_start(dir.string());
  note_attempt_end(dir.string(), 3.5, 1);
  EXPECT_DOUBLE_EQ(attempts_seconds(dir.string()), 3.5);
  // A sweep killed during the second attempt: its training last wrote the log about 10 s
  // after the start; the third attempt's start closes it there.
  note_attempt_start(dir.string());
  std::ofstream(dir / "train.log") << "training\n";
  fs::last_write_time(dir / "train.log", fs::file_time_type::clock::now() + std::chrono::seconds(10));
  note_attempt_start(dir.string());
  EXPECT_NEAR(attempts_seconds(dir.string()), 3.5 + 10, 0.5);
  note_attempt_end(dir.string(), 2.0, 0);
  EXPECT_NEAR(attempts_seconds(dir.string()), 3.5 + 10 + 2, 0.5);
  write_done_marker(dir.string(), 2.0, true, {});
  EXPECT_NEAR(read_run_result(dir.string(), "resumed").wall_seconds, 15.5, 0.5);  // not the marker's 2.0
  const std::string lines = read_text(dir / kSweepAttemptsFile);
  EXPECT_EQ(std::count(lines.begin(), lines.end(), '\n'), 6);
  EXPECT_NE(lines.find("\"estimated\":true"), std::string::npos) << lines;
  std::ofstream(dir / kSweepAttemptsFile, std::ios::app) << "{not json\n";
  EXPECT_THROW(attempts_seconds(dir.string()), Error);
  fs::remove_all(dir);
}

TEST(Sweep, ResultsTableReadsEachRunsReport) {
  const fs::path dir = temp_dir("results");
  SweepSpec s = parse(kSweep);
  s.out_dir = dir.string();
  const std::vector<SweepRun> runs = expand_grid(s);
  std::vector<RunResult> results;
  for (size_t i = 0; i < runs.size(); ++i) {
    fs::create_directories(runs[i].dir);
    if (i != 1) {  // run 1 never evaluated: empty cells
      std::ofstream(fs::path(runs[i].dir) / "eval_valid.json")
          << "{\"accuracy\": " << 0.125 * i << ", \"mean_generated_tokens\": " << 10 + i << "}";
      write_done_marker(runs[i].dir, 2.0 + i, false, {});
    }
    if (i == 2) {  // a test split, and eval.keep_best's model and its test report
      std::ofstream(fs::path(runs[i].dir) / "eval_test.json") << "{\"accuracy\": 0.5}";
      fs::create_directories(fs::path(runs[i].dir) / kBestModelDir);
      std::ofstream(fs::path(runs[i].dir) / kBestModelDir / kBestModelFile) << "{\"valid_accuracy\": 0.75}";
      std::ofstream(fs::path(runs[i].dir) / "eval_test_best.json") << "{\"accuracy\": 0.625}";
      // Stage 0 evaluated twice (its end: the later row), stage 1 never, stage 2 once;
      // step rows do not count.
      std::ofstream(fs::path(runs[i].dir) / kMetricsFile)
          << "{\"epoch\": 0, \"stage\": 0, \"valid_accuracy\": 0.5}\n"
          << "{\"kind\": \"step\", \"stage\": 1, \"valid_accuracy\": 0.0}\n"
          << "{\"epoch\": 1, \"stage\": 0, \"valid_accuracy\": 1.0}\n"
          << "{\"epoch\": 2, \"stage\": 1, \"loss\": 0.5}\n"
          << "{\"epoch\": 3, \"stage\": 2, \"valid_accuracy\": 0.25}\n";
    }
    if (i == 0)  // a run killed while appending: no stage figures, the table still written
      std::ofstream(fs::path(runs[i].dir) / kMetricsFile) << "{\"epoch\": 0, \"stage\": 0, \"valid_acc";
    results.push_back(read_run_result(runs[i].dir, i == 1 ? "failed (exit 1)" : "trained"));
  }
  EXPECT_DOUBLE_EQ(results[2].valid_accuracy, 0.25);
  EXPECT_DOUBLE_EQ(results[2].mean_generated_tokens, 12);
  EXPECT_DOUBLE_EQ(results[2].wall_seconds, 4.0);
  EXPECT_LT(results[1].valid_accuracy, 0);
  EXPECT_DOUBLE_EQ(results[2].test_accuracy, 0.5);
  EXPECT_DOUBLE_EQ(results[2].best_valid_accuracy, 0.75);
  EXPECT_DOUBLE_EQ(results[2].best_test_accuracy, 0.625);
  EXPECT_LT(results[3].best_valid_accuracy, 0);
  EXPECT_EQ(results[2].stage_end_accuracy, (std::vector<double>{1.0, -1.0, 0.25}));
  EXPECT_TRUE(results[0].stage_end_accuracy.empty());
  EXPECT_TRUE(results[3].stage_end_accuracy.empty());
  write_results(s, runs, results);
  const std::string csv = read_text(dir / "results.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "run,curriculum.c_thought,run.seed,status,valid_accuracy,mean_generated_tokens,wall_seconds,test_accuracy,"
            "best_valid_accuracy,best_test_accuracy,stage_end_valid_accuracy");
  EXPECT_NE(csv.find("c_thought-1_seed-7,1,7,trained,0.250000,12.0000,4.000,0.500000,0.750000,0.625000,1.000000 - 0.250000\n"),
            std::string::npos) << csv;
  EXPECT_NE(csv.find("c_thought-0_seed-8,0,8,failed (exit 1),,,,,,,\n"), std::string::npos) << csv;
  const std::string md = read_text(dir / "results.md");
  EXPECT_NE(md.find("| c_thought-1_seed-7 | 1 | 7 | trained | 0.2500 | 12.00 | 4.0 | 0.5000 | 0.7500 | 0.6250 | 100.0 / - / 25.0 |"),
            std::string::npos) << md;
  // Seeds averaged: c=1 has runs 2 and 3 (accuracy 0.25 and 0.375); c=0 only run 0.
  EXPECT_NE(md.find("| curriculum.c_thought=1 | 2 | 0.3125 | 0.2500 | 0.3750 | 100.0 / - / 25.0 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| curriculum.c_thought=0 | 1 | 0.0000 |"), std::string::npos) << md;
  const std::string png = plot_accuracy_vs_c(s, runs, results);
  EXPECT_EQ(png, (dir / "accuracy_vs_c.png").string());
  EXPECT_TRUE(fs::file_size(png) > 0);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace coconut::launcher
