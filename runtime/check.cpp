// Formats and throws coconut::Error for the check macros in check.h.
#include "runtime/check.h"

namespace coconut {

void throw_error(const char* file, int line, const std::string& message) {
  throw Error(fmt::format("{} ({}:{})", message, file, line));
}

}  // namespace coconut
