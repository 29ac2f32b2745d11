// Subcommands of the `coconut` command and the small argument helpers they share.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace coconut::launcher {

// A usage or configuration error: the command prints it and exits with code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

int cmd_bench(const std::vector<std::string>& args);
int cmd_train(const std::vector<std::string>& args);
int cmd_data(const std::vector<std::string>& args);

// "--name value" options: takes the value after args[i] (advancing i) or throws UsageError.
std::string option_value(const std::vector<std::string>& args, size_t& i);
int option_int(const std::vector<std::string>& args, size_t& i, int min, int max);

}  // namespace coconut::launcher
