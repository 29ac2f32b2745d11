// Command-line helpers shared by the benchmarks' option parsers (`coconut bench ...` in
// launcher/cmd_bench.cpp, coconut_gpu_bench in bench/gpu_train.cpp).
#pragma once

#include <string>
#include <vector>

namespace coconut::bench {

// "a,b,c" -> {a, b, c} (an empty item stays, for the caller's check to name).
inline std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t comma; (comma = text.find(',', start)) != std::string::npos; start = comma + 1)
    out.push_back(text.substr(start, comma - start));
  out.push_back(text.substr(start));
  return out;
}

}  // namespace coconut::bench
