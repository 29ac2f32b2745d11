// Strict YAML configuration: typed reads by dotted path, with ranges, and a final check
// that rejects every key nobody asked for (a typo must never be silently ignored).
//
// Usage:
//   Config cfg = Config::load_file("configs/tiny.yaml");
//   for (auto& s : cli_sets) cfg.apply_override(s);        // --set train.lr=3e-4
//   int n_layer = cfg.get_int("model.n_layer", 12, 1, 1024);
//   double lr = cfg.require_double("train.lr", 0.0, 1.0);
//   ...every module reads its keys...
//   cfg.finish();                                          // unknown keys -> one error
//
// Paths are keys joined by '.'; a component of digits indexes a list ("stages.0.lr").
// Every error names where the value came from ("configs/x.yaml:12" or the --set text),
// the dotted key, and what was expected, e.g.
//   configs/x.yaml:7: key 'model.n_layer' expects an integer in [1, 1024], got 'abc'
//
// Scalars are typed strictly: integers are decimal ("1e3" is not an integer), numbers
// must be finite, booleans are true/false (any case), and a quoted scalar ("12") is a
// string, never a number (while get_string accepts any scalar: `name: 123` is "123").
// An empty value (`lr:` or `~`) is an error for every getter,
// not "use the default": omit the key to get the default.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace coconut {

class Config {
 public:
  // One node of the parsed tree (defined in config.cpp).
  struct Node;

  // Parses a YAML file; malformed YAML, duplicate keys, non-scalar keys, keys containing
  // '.' and a top level that is not a mapping are errors naming the file and line.
  static Config load_file(const std::string& path);
  // Same from text; display_name stands in for the file name in messages.
  static Config from_string(const std::string& text, const std::string& display_name = "<string>");

  Config();
  ~Config();
  Config(Config&&) noexcept;
  Config& operator=(Config&&) noexcept;

  // "a.b.c=value": value is parsed as a YAML node (scalar, or flow list/map such as
  // [1,2] or {x: 1}) and replaces whatever the key held (a whole mapping for {x: 1});
  // an empty value is an empty (null) value. Missing mappings on the
  // way are created, so an override may add keys the file lacks; finish() reports an
  // added key that nobody reads as coming from the command line.
  void apply_override(const std::string& key_eq_value);

  // True when the key is present (even with an empty value). Does not mark it as known.
  bool has(const std::string& path) const;
  // Keys of the mapping at path (in file order), empty when absent. Does not mark
  // them as known: each still has to be read (or ignored).
  std::vector<std::string> keys(const std::string& path) const;
  // Marks path and everything under it as known without reading it.
  void ignore(const std::string& path);

  // Getters: absent key -> def; present key of the wrong type or out of [min, max] ->
  // error. Every call marks the key as known.
  int get_int(const std::string& path, int def, int min, int max);
  int64_t get_int64(const std::string& path, int64_t def, int64_t min, int64_t max);
  double get_double(const std::string& path, double def, double min, double max);
  bool get_bool(const std::string& path, bool def);
  // allowed empty: any string; otherwise the value must be one of them.
  std::string get_string(const std::string& path, const std::string& def,
                         const std::vector<std::string>& allowed = {});
  std::vector<int> get_int_list(const std::string& path, const std::vector<int>& def, int min,
                                int max);
  std::vector<double> get_double_list(const std::string& path, const std::vector<double>& def,
                                      double min, double max);
  std::vector<std::string> get_string_list(const std::string& path,
                                           const std::vector<std::string>& def);

  // Required variants: an absent key is an error.
  int require_int(const std::string& path, int min, int max);
  int64_t require_int64(const std::string& path, int64_t min, int64_t max);
  double require_double(const std::string& path, double min, double max);
  bool require_bool(const std::string& path);
  std::string require_string(const std::string& path, const std::vector<std::string>& allowed = {});
  std::vector<int> require_int_list(const std::string& path, int min, int max);
  std::vector<std::string> require_string_list(const std::string& path);

  // Call after every module has read its keys: one error listing every key present in
  // the file or the overrides that no getter asked for (a whole unread section is
  // reported once, at its own key).
  void finish() const;

  // The effective configuration (file + overrides, defaults not included) as canonical
  // JSON: keys sorted, plain scalars typed (null, bool, integer, number, string),
  // quoted scalars strings, no whitespace. Formatting and key order do not change it.
  std::string canonical_json() const;
  // FNV-1a 64 of canonical_json(), as 16 lower-case hex digits; stored in checkpoints.
  std::string digest() const;

  // The file name (or display name) given at load.
  const std::string& source() const { return source_; }

 private:
  // Finds the node at path (nullptr when absent) and marks path as read.
  const Node* lookup(const std::string& path, bool mark);
  // The node at path (marked as read); absent -> "missing required key" error.
  const Node& required(const std::string& path, const std::string& expected);

  std::string source_;
  std::unique_ptr<Node> root_;
  std::set<std::string> read_;  // dotted paths asked for by a getter or ignore()
};

}  // namespace coconut
