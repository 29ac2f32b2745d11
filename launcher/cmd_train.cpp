// `coconut train CONFIG.yaml`: placeholder until the trainer lands (see README).
#include "launcher/commands.h"

namespace coconut::launcher {

int cmd_train(const std::vector<std::string>& args) {
  throw UsageError("train is not available in this build yet");
}

}  // namespace coconut::launcher
