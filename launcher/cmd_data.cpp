// `coconut data`: placeholder, being written.
#include "launcher/commands.h"

namespace coconut::launcher {

int cmd_data(const std::vector<std::string>& args) { throw UsageError("data: not available yet"); }

}  // namespace coconut::launcher
