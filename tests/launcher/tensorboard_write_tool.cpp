// Writes TensorBoard event files for test_tensorboard_read.py, which reads them back
// with the tensorboard pip package (an independent reader) and checks every value.
//   tensorboard_write_tool raw DIR   TensorBoardWriter directly: two writers, two files
//   tensorboard_write_tool run DIR   RunOutput as the trainer uses it: steps and epochs
// The values are simple formulas that the script recomputes.
#include <fmt/format.h>

#include <cmath>
#include <string>

#include "launcher/run_output.h"
#include "runtime/check.h"
#include "runtime/tensorboard.h"

namespace {

void write_raw(const std::string& dir) {
  {
    coconut::TensorBoardWriter w(dir);
    for (int i = 0; i < 10; ++i) {
      w.scalar("loss", i, 2.5 / (i + 1), 1000.0 + i);
      w.scalar("accuracy", i, 0.1 * i, 1000.0 + i);  // 0.0 at step 0: must still be stored
      w.flush();
    }
    w.scalar("neg", 3, -1.25e-3);
    w.scalar("big", int64_t{1} << 40, 7.0);
    w.flush();
  }
  // A second writer in the same directory (a restart) gets a file of its own.
  coconut::TensorBoardWriter second(dir);
  second.scalar("second_file", 5, 42.0);
  second.flush();
}

void write_run(const std::string& dir) {
  coconut::launcher::RunOutput out(dir, /*fresh=*/true);
  // 2 epochs x 3 steps; stage = epoch; lr and throughput vary per step.
  int64_t step = 0;
  for (int epoch = 0; epoch < 2; ++epoch) {
    for (int k = 0; k < 3; ++k) {
      ++step;
      out.log_step({epoch, epoch, step, 3.0 - 0.25 * step, 1e-4 * step, 1000.0 * step});
    }
    out.log_epoch({{"epoch", epoch}, {"stage", epoch}, {"step", step}, {"loss", 2.0 - 0.5 * epoch},
                   {"tokens_per_s", 1500.0 + epoch}, {"valid_accuracy", 0.25 * (epoch + 1)},
                   {"bubble_measured", {0.5, 0.25}}, {"note", "text fields are not scalars"}});
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    fmt::print(stderr, "usage: tensorboard_write_tool raw|run DIR\n");
    return 2;
  }
  try {
    const std::string mode = argv[1];
    if (mode == "raw") write_raw(argv[2]);
    else if (mode == "run") write_run(argv[2]);
    else COCONUT_FAIL("unknown mode '{}'", mode);
  } catch (const std::exception& e) {
    fmt::print(stderr, "tensorboard_write_tool: {}\n", e.what());
    return 1;
  }
  return 0;
}
