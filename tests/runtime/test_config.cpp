// Tests of runtime/config: typed reads, every error kind (with file, line, key and
// expectation in the message), unknown keys, command-line overrides and the digest.
#include "runtime/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "runtime/check.h"

namespace coconut {
namespace {

// Substring checks that print the whole message when they fail.
#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "message: " << (text)
#define EXPECT_LACKS(text, part) \
  EXPECT_EQ(std::string(text).find(part), std::string::npos) << "message: " << (text)

// Runs fn, expects a coconut::Error, returns its message.
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a coconut::Error";
  return "";
}

Config parse(const std::string& text) { return Config::from_string(text, "configs/x.yaml"); }

const char* kExample = R"(model:
  n_layer: 12
  name: gpt2
  dropout: 0.1
train:
  lr: 1e-4
  fused: true
  stages: [1, 2, 3]
  names: [a, "b c"]
  big: 5000000000
  schedule:
    - {epochs: 3, lr: 0.5}
    - {epochs: 4, lr: 0.25}
)";

TEST(Config, TypedReadsAndDefaults) {
  Config c = parse(kExample);
  EXPECT_EQ(c.get_int("model.n_layer", 1, 1, 1024), 12);
  EXPECT_EQ(c.get_string("model.name", "", {"gpt2", "llama"}), "gpt2");
  EXPECT_DOUBLE_EQ(c.get_double("model.dropout", 0, 0, 1), 0.1);
  EXPECT_DOUBLE_EQ(c.require_double("train.lr", 0, 1), 1e-4);
  EXPECT_TRUE(c.require_bool("train.fused"));
  EXPECT_EQ(c.get_int_list("train.stages", {}, 0, 10), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(c.get_string_list("train.names", {}), (std::vector<std::string>{"a", "b c"}));
  EXPECT_EQ(c.require_int64("train.big", 0, INT64_MAX), 5000000000LL);
  // List items by index.
  EXPECT_EQ(c.require_int("train.schedule.1.epochs", 1, 100), 4);
  EXPECT_DOUBLE_EQ(c.get_double("train.schedule.0.lr", 0, 0, 1), 0.5);
  c.ignore("train.schedule");
  // Absent keys give the default.
  EXPECT_EQ(c.get_int("model.n_head", 8, 1, 64), 8);
  EXPECT_EQ(c.get_string("train.method", "coconut"), "coconut");
  EXPECT_FALSE(c.get_bool("train.missing", false));
  EXPECT_EQ(c.get_int_list("train.absent", {4, 5}, 0, 9), (std::vector<int>{4, 5}));
  EXPECT_FALSE(c.has("train.schedule.2"));
  EXPECT_NO_THROW(c.finish());
}

TEST(Config, HasKeysIgnore) {
  Config c = parse("a:\n  x: 1\n  y: ~\nb: 2\n");
  EXPECT_TRUE(c.has("a.x"));
  EXPECT_TRUE(c.has("a.y"));  // present, even though empty
  EXPECT_FALSE(c.has("a.z"));
  EXPECT_EQ(c.keys("a"), (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(c.keys("nothing").empty());
  // has() and keys() do not mark keys as known.
  EXPECT_CONTAINS(error_of([&] { c.finish(); }), "unknown key 'a'");
  c.ignore("a");
  c.ignore("b");
  EXPECT_NO_THROW(c.finish());
}

TEST(Config, EmptyFileHasNoKeys) {
  Config c = parse("");
  EXPECT_EQ(c.get_int("a", 3, 0, 5), 3);
  EXPECT_NO_THROW(c.finish());
  EXPECT_EQ(c.canonical_json(), "{}");
}

TEST(Config, UnknownKeyNamesFileLineAndSuggests) {
  Config c = parse("train:\n  lr: 1e-4\n  lerning_rate: 3\n");
  c.get_double("train.lr", 0, 0, 1);
  c.get_double("train.learning_rate", 0, 0, 10);
  std::string msg = error_of([&] { c.finish(); });
  EXPECT_CONTAINS(msg, "configs/x.yaml:3: unknown key 'train.lerning_rate'");
  EXPECT_CONTAINS(msg, "did you mean 'train.learning_rate'?");
}

TEST(Config, EveryUnknownKeyIsListedAndUnreadSectionOnce) {
  Config c = parse("model:\n  n_layer: 2\n  n_embd: 8\ntrian:\n  lr: 1\n  bs: 2\nextra: 5\n");
  c.get_int("model.n_layer", 1, 1, 8);
  c.get_double("train.lr", 0.1, 0, 1);
  std::string msg = error_of([&] { c.finish(); });
  EXPECT_CONTAINS(msg, "configs/x.yaml:3: unknown key 'model.n_embd'");
  EXPECT_CONTAINS(msg, "configs/x.yaml:4: unknown key 'trian' (did you mean 'train'?)");
  EXPECT_LACKS(msg, "trian.lr");  // a whole unread section is reported once
  EXPECT_CONTAINS(msg, "configs/x.yaml:7: unknown key 'extra'");
}

TEST(Config, WrongTypeNamesFileLineKeyAndExpectation) {
  Config c = parse("model:\n  name: x\n\n  n_layer: abc\n");
  EXPECT_CONTAINS(error_of([&] { c.get_int("model.n_layer", 1, 1, 1024); }),
                  "configs/x.yaml:4: key 'model.n_layer' expects an integer in [1, 1024], got 'abc'");
}

TEST(Config, StrictScalarTypes) {
  Config c = parse(
      "big: 2000\nfrac: 1.5\nsci: 1e3\nquoted: \"12\"\nnan: .nan\ninf: inf\nyes: yes\nflag: True\n"
      "empty:\nlist: [1]\nmap: {a: 1}\nint_as_double: 3\n");
  EXPECT_CONTAINS(error_of([&] { c.get_int("big", 1, 1, 1024); }),
                  "configs/x.yaml:1: key 'big' expects an integer in [1, 1024], got '2000'");
  EXPECT_CONTAINS(error_of([&] { c.get_int("frac", 0, 0, 9); }), "got '1.5'");
  EXPECT_CONTAINS(error_of([&] { c.get_int("sci", 0, 0, 100000); }), "got '1e3'");
  EXPECT_CONTAINS(error_of([&] { c.get_int("quoted", 0, 0, 100); }),
                  "key 'quoted' expects an integer in [0, 100], got the quoted string \"12\"");
  EXPECT_EQ(c.get_string("quoted", ""), "12");
  EXPECT_CONTAINS(error_of([&] { c.get_double("nan", 0, -1e9, 1e9); }), "expects a finite number");
  EXPECT_CONTAINS(error_of([&] { c.get_double("inf", 0, -1e9, 1e9); }), "got 'inf'");
  EXPECT_CONTAINS(error_of([&] { c.get_double("frac", 0, 0, 1); }),
                  "key 'frac' expects a finite number in [0, 1], got '1.5'");
  EXPECT_CONTAINS(error_of([&] { c.get_bool("yes", false); }),
                  "configs/x.yaml:7: key 'yes' expects true or false, got 'yes'");
  EXPECT_TRUE(c.get_bool("flag", false));
  EXPECT_CONTAINS(error_of([&] { c.get_int("empty", 0, 0, 1); }), "got an empty value");
  EXPECT_CONTAINS(error_of([&] { c.get_string("empty", "d"); }), "got an empty value");
  EXPECT_CONTAINS(error_of([&] { c.get_string("empty", "d"); }), "an empty one is written ''");
  EXPECT_CONTAINS(error_of([&] { c.get_string("list", ""); }), "expects a string, got a list");
  EXPECT_CONTAINS(error_of([&] { c.get_int("map", 0, 0, 1); }), "got a mapping");
  EXPECT_DOUBLE_EQ(c.get_double("int_as_double", 0, 0, 10), 3.0);
}

TEST(Config, AllowedStrings) {
  Config c = parse("method: cocunut\n");
  EXPECT_CONTAINS(error_of([&] { c.get_string("method", "cot", {"coconut", "cot", "no_cot"}); }),
                  "configs/x.yaml:1: key 'method' expects one of [coconut, cot, no_cot], got 'cocunut'");
}

TEST(Config, ListItemErrorsNameTheItem) {
  Config c = parse("layers:\n  - 1\n  - x\nnot_list: 3\n");
  EXPECT_CONTAINS(error_of([&] { c.get_int_list("layers", {}, 0, 9); }),
                  "configs/x.yaml:3: key 'layers.1' expects an integer in [0, 9], got 'x'");
  EXPECT_CONTAINS(error_of([&] { c.get_int_list("not_list", {}, 0, 9); }),
                  "key 'not_list' expects a list of integers in [0, 9], got '3'");
}

TEST(Config, MissingRequiredKey) {
  Config c = parse("model: {}\n");
  EXPECT_CONTAINS(error_of([&] { c.require_int("model.n_layer", 1, 1024); }),
                  "configs/x.yaml: missing required key 'model.n_layer' (expects an integer in [1, 1024])");
  EXPECT_CONTAINS(error_of([&] { c.require_string("method", {"a", "b"}); }),
                  "missing required key 'method' (expects one of [a, b])");
  EXPECT_CONTAINS(error_of([&] { c.require_string_list("names"); }),
                  "missing required key 'names'");
}

TEST(Config, NonMappingOnThePath) {
  Config c = parse("a: 1\ntrain: 5\n");
  EXPECT_CONTAINS(error_of([&] { c.get_double("train.lr", 0, 0, 1); }),
                  "configs/x.yaml:2: key 'train' expects a mapping (holding 'train.lr'), got '5'");
}

TEST(Config, MalformedYamlNamesFileAndLine) {
  std::string msg = error_of([] { parse("a: 1\nb: [1, 2\nc: 3\n"); });
  EXPECT_CONTAINS(msg, "configs/x.yaml:");
  EXPECT_CONTAINS(msg, "malformed YAML");
  msg = error_of([] { parse("a: 1\nb: 2\n  c: 3\n"); });
  EXPECT_CONTAINS(msg, "configs/x.yaml:3:");
  EXPECT_CONTAINS(msg, "malformed YAML");
}

TEST(Config, StructuralErrors) {
  EXPECT_CONTAINS(error_of([] { parse("a:\n  b: 1\n  b: 2\n"); }),
                  "configs/x.yaml:3: duplicate key 'a.b' (first at configs/x.yaml:2)");
  EXPECT_CONTAINS(error_of([] { parse("train.lr: 1\n"); }),
                  "configs/x.yaml:1: key 'train.lr' contains '.'");
  EXPECT_CONTAINS(error_of([] { parse("- 1\n- 2\n"); }),
                  "configs/x.yaml:1: the top level expects a mapping of keys, got a list");
  EXPECT_CONTAINS(error_of([] { parse("a: 1\n---\nb: 2\n"); }), "holds 2 YAML documents");
  EXPECT_CONTAINS(error_of([] { parse("? [1, 2]\n: 3\n"); }), "is not a plain name");
}

TEST(Config, LoadFile) {
  auto dir = std::filesystem::temp_directory_path() / "coconut_test_config";
  std::filesystem::create_directories(dir);
  std::string path = (dir / "run.yaml").string();
  {
    std::ofstream(path) << "# comment\nsteps: 10\nstep: 3\n";
  }
  Config c = Config::load_file(path);
  EXPECT_EQ(c.source(), path);
  EXPECT_EQ(c.get_int("steps", 0, 0, 100), 10);
  EXPECT_CONTAINS(error_of([&] { c.finish(); }), path + ":3: unknown key 'step'");
  EXPECT_CONTAINS(error_of([&] { Config::load_file((dir / "nope.yaml").string()); }),
                  "nope.yaml: cannot open config file");
  std::filesystem::remove_all(dir);
}

TEST(Config, OverrideReplacesAndAdds) {
  Config c = parse(kExample);
  c.apply_override("train.lr=3e-4");
  c.apply_override("model.n_head=4");            // key the file lacks
  c.apply_override("train.stages=[5, 6]");       // flow list
  c.apply_override("eval.every = 100");          // new section; spaces around the key
  c.apply_override("train.schedule.1.lr=0.125");  // list index
  EXPECT_DOUBLE_EQ(c.get_double("train.lr", 0, 0, 1), 3e-4);
  EXPECT_EQ(c.get_int("model.n_head", 1, 1, 64), 4);
  EXPECT_EQ(c.get_int_list("train.stages", {}, 0, 10), (std::vector<int>{5, 6}));
  EXPECT_EQ(c.get_int("eval.every", 1, 1, 1000), 100);
  EXPECT_DOUBLE_EQ(c.get_double("train.schedule.1.lr", 0, 0, 1), 0.125);
  // The rest of the file is untouched.
  EXPECT_EQ(c.get_int("model.n_layer", 1, 1, 1024), 12);
}

TEST(Config, OverrideErrorsNameTheCommandLine) {
  Config c = parse(kExample);
  c.apply_override("model.n_layer=abc");
  EXPECT_CONTAINS(error_of([&] { c.get_int("model.n_layer", 1, 1, 1024); }),
                  "command line '--set model.n_layer=abc': key 'model.n_layer' expects an integer "
                        "in [1, 1024], got 'abc'");
  EXPECT_CONTAINS(error_of([&] { c.apply_override("train.lr"); }), "expected key=value");
  EXPECT_CONTAINS(error_of([&] { c.apply_override("train..lr=1"); }), "bad key 'train..lr'");
  EXPECT_CONTAINS(error_of([&] { c.apply_override("x=[1, 2"); }), "malformed value '[1, 2'");
  EXPECT_CONTAINS(error_of([&] { c.apply_override("model.name.x=1"); }),
                  "cannot set 'model.name.x': 'model.name' (configs/x.yaml:3) holds 'gpt2', not a mapping");
  EXPECT_CONTAINS(error_of([&] { c.apply_override("train.stages.7=1"); }), "is a list of 3 items");
}

TEST(Config, UnknownOverrideReportedAsCommandLine) {
  Config c = parse("train:\n  lr: 1\n");
  c.apply_override("train.lerning_rate=3e-4");
  c.get_double("train.lr", 0, 0, 1);
  EXPECT_CONTAINS(error_of([&] { c.finish(); }),
                  "command line '--set train.lerning_rate=3e-4': unknown key 'train.lerning_rate'");
}

TEST(Config, CanonicalJsonAndDigest) {
  Config a = parse("model: {n_layer: 12, name: gpt2}\ntrain:\n  lr: 0.0001\n  betas: [0.9, 0.999]\n");
  // Same content, other order and spelling (1e-4 == 0.0001, block vs flow style).
  Config b = parse("train:\n  betas:\n    - 0.9\n    - 0.999\n  lr: 1e-4\nmodel:\n  name: gpt2\n  n_layer: 12\n");
  const char* canonical = R"({"model":{"n_layer":12,"name":"gpt2"},"train":{"betas":[0.9,0.999],"lr":0.0001}})";
  EXPECT_EQ(a.canonical_json(), canonical);
  EXPECT_EQ(b.canonical_json(), canonical);
  // FNV-1a 64 of the canonical text, computed independently in Python
  // (h = 0xcbf29ce484222325; for byte: h ^= byte; h = h * 0x100000001b3 mod 2^64).
  EXPECT_EQ(a.digest(), "6acdbf6e2fd4c66b");
  EXPECT_EQ(b.digest(), a.digest());
  // Overrides count; an override to an equal value does not change the digest.
  b.apply_override("train.lr=0.0001");
  EXPECT_EQ(b.digest(), a.digest());
  b.apply_override("train.lr=0.0002");
  EXPECT_NE(b.digest(), a.digest());
  // A quoted number is a string, so it is a different config.
  Config q = parse("model: {n_layer: \"12\", name: gpt2}\ntrain:\n  lr: 0.0001\n  betas: [0.9, 0.999]\n");
  EXPECT_NE(q.digest(), a.digest());
}

}  // namespace
}  // namespace coconut
