// Test helper: compares tensors of two committed checkpoints bit for bit, whatever
// topologies wrote them (each tensor is read whole through the resharding reader).
// usage: ckpt_compare DIR_A DIR_B TENSOR [TENSOR ...]
// Prints one line per tensor; exit 0 when every tensor is bit-identical, 1 otherwise
// (or when a checkpoint or tensor is missing or corrupt).
#include <fmt/format.h>

#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "parallel/checkpoint.h"

namespace {

std::vector<float> read_whole(const std::string& dir, const coconut::parallel::Manifest& m, const std::string& name) {
  const coconut::parallel::TensorInfo& t = m.tensor(name);
  std::vector<float> out(t.global_size);
  coconut::parallel::read_tensor_range(dir, m, name, 0, t.global_size, out.data());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    fmt::print(stderr, "usage: ckpt_compare DIR_A DIR_B TENSOR [TENSOR ...]\n");
    return 2;
  }
  try {
    const std::string a = argv[1], b = argv[2];
    const auto ma = coconut::parallel::read_manifest(a), mb = coconut::parallel::read_manifest(b);
    fmt::print("A: {} (step {}, pp {} x dp {}), B: {} (step {}, pp {} x dp {})\n", a, ma.meta.step, ma.meta.pp,
               ma.meta.dp, b, mb.meta.step, mb.meta.pp, mb.meta.dp);
    bool same = true;
    for (int i = 3; i < argc; ++i) {
      const std::vector<float> x = read_whole(a, ma, argv[i]), y = read_whole(b, mb, argv[i]);
      size_t differ = 0;
      if (x.size() == y.size())
        for (size_t k = 0; k < x.size(); ++k) differ += std::memcmp(&x[k], &y[k], sizeof(float)) != 0;
      const bool ok = x.size() == y.size() && differ == 0;
      fmt::print("{}: {} vs {} elements, {} differ in bits: {}\n", argv[i], x.size(), y.size(), differ,
                 ok ? "identical" : "DIFFERENT");
      same &= ok;
    }
    return same ? 0 : 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "ckpt_compare: {}\n", e.what());
    return 1;
  }
}
