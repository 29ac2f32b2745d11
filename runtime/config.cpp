// Strict YAML configuration (see config.h). yaml-cpp parses the text once; we copy it
// into our own small tree that remembers where each value came from (file:line or the
// --set text), so that every later error can point at it, and so that overrides and
// the unknown-key walk never touch yaml-cpp's reference-counted nodes.
#include "runtime/config.h"

#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "runtime/check.h"
#include "runtime/hash.h"

namespace coconut {

struct Config::Node {
  enum class Kind { Null, Scalar, List, Map };
  Kind kind = Kind::Null;
  std::string text;    // Scalar: the text as written, without quotes
  bool quoted = false; // Scalar: quoted, block literal or explicitly tagged: always a string
  std::vector<Node> items;         // List
  std::vector<std::string> names;  // Map: keys, in file order
  std::vector<Node> values;        // Map: values, parallel to names
  std::string where;               // "configs/x.yaml:12" or "command line '--set a=b'"

  const Node* field(const std::string& name) const {
    auto it = std::find(names.begin(), names.end(), name);
    return it == names.end() ? nullptr : &values[it - names.begin()];
  }
};

namespace {

using Node = Config::Node;
using Kind = Config::Node::Kind;

// ---- paths ----

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    parts.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

bool valid_path(const std::string& path) {
  for (const std::string& p : split_path(path))
    if (p.empty()) return false;
  return true;
}

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// A path component of digits indexes a list; returns -1 for anything else.
long list_index(const std::string& part) {
  if (part.empty() || part.size() > 9) return -1;
  for (char c : part)
    if (c < '0' || c > '9') return -1;
  return std::stol(part);
}

// ---- from yaml-cpp to our tree ----

std::string where_of(const std::string& file, const YAML::Mark& mark, const std::string& fallback) {
  if (mark.line < 0) return fallback;
  return fmt::format("{}:{}", file, mark.line + 1);
}

// file: name for file:line locations; fixed_where non-empty: every node gets it (overrides).
struct Converter {
  std::string file;
  std::string fixed_where;

  Node convert(const YAML::Node& y, const std::string& path, const std::string& where) const {
    Node n;
    n.where = fixed_where.empty() ? where : fixed_where;
    switch (y.Type()) {
      case YAML::NodeType::Null:
      case YAML::NodeType::Undefined:
        n.kind = Kind::Null;
        break;
      case YAML::NodeType::Scalar:
        n.kind = Kind::Scalar;
        n.text = y.Scalar();
        n.quoted = y.Tag() != "?";  // yaml-cpp tags plain scalars "?" and quoted ones "!"
        break;
      case YAML::NodeType::Sequence: {
        n.kind = Kind::List;
        size_t i = 0;
        for (const YAML::Node& item : y) {
          n.items.push_back(convert(item, join(path, std::to_string(i)),
                                    where_of(file, item.Mark(), n.where)));
          ++i;
        }
        break;
      }
      case YAML::NodeType::Map:
        n.kind = Kind::Map;
        for (const auto& kv : y) {
          std::string key_where =
              fixed_where.empty() ? where_of(file, kv.first.Mark(), n.where) : fixed_where;
          COCONUT_CHECK(kv.first.IsScalar() && !kv.first.Scalar().empty(),
                        "{}: a key under '{}' is not a plain name (keys must be non-empty scalars)",
                        key_where, path.empty() ? "<top level>" : path);
          const std::string& name = kv.first.Scalar();
          std::string child = join(path, name);
          COCONUT_CHECK(name.find('.') == std::string::npos,
                        "{}: key '{}' contains '.', which separates nested keys; write nested "
                        "mappings instead", key_where, child);
          auto dup = std::find(n.names.begin(), n.names.end(), name);
          COCONUT_CHECK(dup == n.names.end(), "{}: duplicate key '{}' (first at {})", key_where,
                        child, n.values[dup - n.names.begin()].where);
          n.names.push_back(name);
          // The key's line reads better than the value's (a nested mapping starts below it).
          n.values.push_back(convert(kv.second, child, key_where));
        }
        break;
    }
    return n;
  }
};

// ---- describing values in messages ----

std::string describe(const Node& n) {
  switch (n.kind) {
    case Kind::Null: return "an empty value";
    case Kind::List: return "a list";
    case Kind::Map: return "a mapping";
    case Kind::Scalar: break;
  }
  return n.quoted ? fmt::format("the quoted string \"{}\"", n.text) : fmt::format("'{}'", n.text);
}

[[noreturn]] void type_error(const Node& n, const std::string& path, const std::string& expected) {
  COCONUT_FAIL("{}: key '{}' expects {}, got {}", n.where, path, expected, describe(n));
}

// ---- typed scalar parsing: strict, locale-independent ----

bool parse_int64(const Node& n, int64_t* out) {
  if (n.kind != Kind::Scalar || n.quoted) return false;
  std::string_view s = n.text;
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  if (s.empty() || s[0] == '+' || (s[0] == '-' && s.size() == 1)) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

bool parse_double(const Node& n, double* out) {
  if (n.kind != Kind::Scalar || n.quoted) return false;
  std::string_view s = n.text;
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  if (s.empty() || s[0] == '+') return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size() && std::isfinite(*out);
}

bool parse_bool(const Node& n, bool* out) {
  if (n.kind != Kind::Scalar || n.quoted) return false;
  std::string lower = n.text;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "true") *out = true;
  else if (lower == "false") *out = false;
  else return false;
  return true;
}

// What each getter expects, for messages.
std::string int_range(int64_t min, int64_t max) {
  return fmt::format("an integer in [{}, {}]", min, max);
}
std::string number_range(double min, double max) {
  return fmt::format("a finite number in [{}, {}]", min, max);
}
std::string one_of(const std::vector<std::string>& allowed) {
  return allowed.empty() ? "a string" : fmt::format("one of [{}]", fmt::join(allowed, ", "));
}

int64_t read_int(const Node& n, const std::string& path, int64_t min, int64_t max) {
  int64_t v = 0;
  if (!parse_int64(n, &v) || v < min || v > max) type_error(n, path, int_range(min, max));
  return v;
}

double read_double(const Node& n, const std::string& path, double min, double max) {
  double v = 0;
  if (!parse_double(n, &v) || v < min || v > max) type_error(n, path, number_range(min, max));
  return v;
}

bool read_bool(const Node& n, const std::string& path) {
  bool v = false;
  if (!parse_bool(n, &v)) type_error(n, path, "true or false");
  return v;
}

std::string read_string(const Node& n, const std::string& path, const std::vector<std::string>& allowed) {
  // YAML reads `key:` (and `--set key=`) as null, not as an empty string: say how to write one.
  if (n.kind == Kind::Null && allowed.empty()) type_error(n, path, "a string (an empty one is written '')");
  if (n.kind != Kind::Scalar ||
      (!allowed.empty() && std::find(allowed.begin(), allowed.end(), n.text) == allowed.end()))
    type_error(n, path, one_of(allowed));
  return n.text;
}

// Reads every item of a list with read_item(item, "path.i").
template <typename T, typename F>
std::vector<T> read_list(const Node& n, const std::string& path, const std::string& what, F read_item) {
  if (n.kind != Kind::List) type_error(n, path, "a list of " + what);
  std::vector<T> out;
  for (size_t i = 0; i < n.items.size(); ++i)
    out.push_back(read_item(n.items[i], join(path, std::to_string(i))));
  return out;
}

std::vector<int> read_int_list(const Node& n, const std::string& path, int min, int max) {
  return read_list<int>(n, path, fmt::format("integers in [{}, {}]", min, max),
                        [&](const Node& item, const std::string& p) {
                          return static_cast<int>(read_int(item, p, min, max));
                        });
}

std::vector<std::string> read_string_list(const Node& n, const std::string& path) {
  return read_list<std::string>(n, path, "strings", [](const Node& item, const std::string& p) {
    return read_string(item, p, {});
  });
}

// ---- unknown keys ----

bool read_under(const std::set<std::string>& read, const std::string& path) {
  std::string prefix = path + ".";
  auto it = read.lower_bound(prefix);
  return it != read.end() && it->compare(0, prefix.size(), prefix) == 0;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// A read key (or a section holding one) close to an unknown key, as a typo hint; ""
// when none is close.
std::string closest(const std::set<std::string>& read, const std::string& path) {
  std::string best;
  size_t best_d = std::max<size_t>(2, path.size() / 4) + 1;
  for (const std::string& r : read) {
    for (size_t end = r.find('.');; end = r.find('.', end + 1)) {
      std::string candidate = r.substr(0, end);
      size_t d = edit_distance(candidate, path);
      if (d < best_d) best_d = d, best = candidate;
      if (end == std::string::npos) break;
    }
  }
  return best;
}

void collect_unknown(const Node& n, const std::string& path, const std::set<std::string>& read,
                     std::vector<std::string>* out) {
  if (!path.empty()) {
    if (read.count(path)) return;
    if (!read_under(read, path) || (n.kind != Kind::Map && n.kind != Kind::List)) {
      std::string hint = closest(read, path);
      out->push_back(fmt::format("{}: unknown key '{}'{}", n.where, path,
                                 hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint)));
      return;
    }
  }
  for (size_t i = 0; i < n.values.size(); ++i)
    collect_unknown(n.values[i], join(path, n.names[i]), read, out);
  for (size_t i = 0; i < n.items.size(); ++i)
    collect_unknown(n.items[i], join(path, std::to_string(i)), read, out);
}

// ---- canonical form ----

nlohmann::json to_json(const Node& n) {
  switch (n.kind) {
    case Kind::Null: return nullptr;
    case Kind::List: {
      nlohmann::json a = nlohmann::json::array();
      for (const Node& item : n.items) a.push_back(to_json(item));
      return a;
    }
    case Kind::Map: {
      nlohmann::json o = nlohmann::json::object();  // std::map: keys come out sorted
      for (size_t i = 0; i < n.names.size(); ++i) o[n.names[i]] = to_json(n.values[i]);
      return o;
    }
    case Kind::Scalar: break;
  }
  bool b = false;
  int64_t i = 0;
  double d = 0;
  if (parse_bool(n, &b)) return b;
  if (parse_int64(n, &i)) return i;
  if (parse_double(n, &d)) return d;
  return n.text;
}

}  // namespace

// ---- loading ----

Config::Config() : root_(std::make_unique<Node>()) { root_->kind = Kind::Map; }
Config::~Config() = default;
Config::Config(Config&&) noexcept = default;
Config& Config::operator=(Config&&) noexcept = default;

Config Config::load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  COCONUT_CHECK(in, "{}: cannot open config file: {}", path, std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  COCONUT_CHECK(!in.bad(), "{}: cannot read config file", path);
  return from_string(text.str(), path);
}

Config Config::from_string(const std::string& text, const std::string& display_name) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(text);
  } catch (const YAML::Exception& e) {
    if (e.mark.line < 0) COCONUT_FAIL("{}: malformed YAML: {}", display_name, e.msg);
    COCONUT_FAIL("{}:{}:{}: malformed YAML: {}", display_name, e.mark.line + 1, e.mark.column + 1, e.msg);
  }
  COCONUT_CHECK(docs.size() <= 1, "{}: holds {} YAML documents ('---'), expected one", display_name,
                docs.size());
  Config cfg;
  cfg.source_ = display_name;
  std::string top = display_name + ":1";
  if (docs.empty() || docs[0].IsNull()) return cfg;  // empty file: no keys
  Converter conv{display_name, ""};
  Node root = conv.convert(docs[0], "", top);
  if (root.kind != Kind::Map)
    COCONUT_FAIL("{}: the top level expects a mapping of keys, got {}", top, describe(root));
  *cfg.root_ = std::move(root);
  return cfg;
}

void Config::apply_override(const std::string& key_eq_value) {
  std::string where = fmt::format("command line '--set {}'", key_eq_value);
  size_t eq = key_eq_value.find('=');
  COCONUT_CHECK(eq != std::string::npos, "{}: expected key=value, e.g. --set train.lr=3e-4", where);
  std::string key = key_eq_value.substr(0, eq);
  while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
  while (!key.empty() && std::isspace(static_cast<unsigned char>(key.front()))) key.erase(0, 1);
  std::string value = key_eq_value.substr(eq + 1);
  COCONUT_CHECK(!key.empty() && valid_path(key),
                "{}: bad key '{}' (expected names joined by '.', e.g. train.lr)", where, key);

  YAML::Node y;
  try {
    y = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    COCONUT_FAIL("{}: malformed value '{}': {}", where, value, e.msg);
  }
  Node v = Converter{"", where}.convert(y, key, where);

  // Walk down, creating mappings that do not exist yet; the last part receives v.
  std::vector<std::string> parts = split_path(key);
  Node* cur = root_.get();
  std::string prefix;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    bool last = i + 1 == parts.size();
    if (cur->kind == Kind::Null) cur->kind = Kind::Map;  // an empty section `train:` may be filled
    Node* next = nullptr;
    if (cur->kind == Kind::Map) {
      auto it = std::find(cur->names.begin(), cur->names.end(), part);
      if (it != cur->names.end()) {
        next = &cur->values[it - cur->names.begin()];
      } else {
        cur->names.push_back(part);
        cur->values.emplace_back();
        next = &cur->values.back();
        next->where = where;
        if (!last) next->kind = Kind::Map;
      }
    } else if (cur->kind == Kind::List) {
      long idx = list_index(part);
      COCONUT_CHECK(idx >= 0 && static_cast<size_t>(idx) < cur->items.size(),
                    "{}: cannot set '{}': '{}' ({}) is a list of {} items, '{}' is not an index into it",
                    where, key, prefix, cur->where, cur->items.size(), part);
      next = &cur->items[idx];
    } else {
      COCONUT_FAIL("{}: cannot set '{}': '{}' ({}) holds {}, not a mapping", where, key, prefix,
                   cur->where, describe(*cur));
    }
    prefix = join(prefix, part);
    cur = next;
  }
  *cur = std::move(v);
}

// ---- lookup ----

// Finds the node at path; nullptr when absent. A non-mapping on the way is an error.
static const Node* find_node(const Node& root, const std::string& path) {
  COCONUT_CHECK(!path.empty() && valid_path(path), "config: bad key path '{}'", path);
  const Node* cur = &root;
  std::string prefix;
  for (const std::string& part : split_path(path)) {
    if (cur->kind == Kind::Map) {
      cur = cur->field(part);
    } else if (cur->kind == Kind::List && list_index(part) >= 0) {
      size_t idx = static_cast<size_t>(list_index(part));
      cur = idx < cur->items.size() ? &cur->items[idx] : nullptr;
    } else {
      COCONUT_FAIL("{}: key '{}' expects a mapping (holding '{}'), got {}", cur->where, prefix, path,
                   describe(*cur));
    }
    if (cur == nullptr) return nullptr;
    prefix = join(prefix, part);
  }
  return cur;
}

const Node* Config::lookup(const std::string& path, bool mark) {
  if (mark) read_.insert(path);
  return find_node(*root_, path);
}

bool Config::has(const std::string& path) const { return find_node(*root_, path) != nullptr; }

std::vector<std::string> Config::keys(const std::string& path) const {
  const Node* n = find_node(*root_, path);
  if (n == nullptr || n->kind == Kind::Null) return {};
  if (n->kind != Kind::Map) type_error(*n, path, "a mapping");
  return n->names;
}

void Config::ignore(const std::string& path) { read_.insert(path); }

// ---- getters ----

const Node& Config::required(const std::string& path, const std::string& expected) {
  const Node* n = lookup(path, true);
  COCONUT_CHECK(n != nullptr, "{}: missing required key '{}' (expects {})", source_, path, expected);
  return *n;
}

// Absent: the default, which must itself be in range (a wrong default is our bug).
#define COCONUT_CHECK_DEFAULT(def, min, max)                                                   \
  COCONUT_CHECK((def) >= (min) && (def) <= (max),                                              \
                "config: default {} of key '{}' is outside [{}, {}]", def, path, min, max)

int Config::get_int(const std::string& path, int def, int min, int max) {
  COCONUT_CHECK_DEFAULT(def, min, max);
  const Node* n = lookup(path, true);
  return n ? static_cast<int>(read_int(*n, path, min, max)) : def;
}

int64_t Config::get_int64(const std::string& path, int64_t def, int64_t min, int64_t max) {
  COCONUT_CHECK_DEFAULT(def, min, max);
  const Node* n = lookup(path, true);
  return n ? read_int(*n, path, min, max) : def;
}

double Config::get_double(const std::string& path, double def, double min, double max) {
  COCONUT_CHECK_DEFAULT(def, min, max);
  const Node* n = lookup(path, true);
  return n ? read_double(*n, path, min, max) : def;
}

bool Config::get_bool(const std::string& path, bool def) {
  const Node* n = lookup(path, true);
  return n ? read_bool(*n, path) : def;
}

std::string Config::get_string(const std::string& path, const std::string& def,
                               const std::vector<std::string>& allowed) {
  const Node* n = lookup(path, true);
  return n ? read_string(*n, path, allowed) : def;
}

std::vector<int> Config::get_int_list(const std::string& path, const std::vector<int>& def, int min,
                                      int max) {
  const Node* n = lookup(path, true);
  return n ? read_int_list(*n, path, min, max) : def;
}

std::vector<double> Config::get_double_list(const std::string& path, const std::vector<double>& def,
                                            double min, double max) {
  const Node* n = lookup(path, true);
  if (!n) return def;
  return read_list<double>(*n, path, fmt::format("finite numbers in [{}, {}]", min, max),
                           [&](const Node& item, const std::string& p) {
                             return read_double(item, p, min, max);
                           });
}

std::vector<std::string> Config::get_string_list(const std::string& path,
                                                 const std::vector<std::string>& def) {
  const Node* n = lookup(path, true);
  return n ? read_string_list(*n, path) : def;
}

int Config::require_int(const std::string& path, int min, int max) {
  return static_cast<int>(read_int(required(path, int_range(min, max)), path, min, max));
}

int64_t Config::require_int64(const std::string& path, int64_t min, int64_t max) {
  return read_int(required(path, int_range(min, max)), path, min, max);
}

double Config::require_double(const std::string& path, double min, double max) {
  return read_double(required(path, number_range(min, max)), path, min, max);
}

bool Config::require_bool(const std::string& path) {
  return read_bool(required(path, "true or false"), path);
}

std::string Config::require_string(const std::string& path, const std::vector<std::string>& allowed) {
  return read_string(required(path, one_of(allowed)), path, allowed);
}

std::vector<int> Config::require_int_list(const std::string& path, int min, int max) {
  const Node& n = required(path, fmt::format("a list of integers in [{}, {}]", min, max));
  return read_int_list(n, path, min, max);
}

std::vector<std::string> Config::require_string_list(const std::string& path) {
  return read_string_list(required(path, "a list of strings"), path);
}

// ---- final check and digest ----

void Config::finish() const {
  std::vector<std::string> unknown;
  collect_unknown(*root_, "", read_, &unknown);
  COCONUT_CHECK(unknown.empty(), "{}", fmt::join(unknown, "\n"));
}

std::string Config::canonical_json() const { return to_json(*root_).dump(); }

std::string Config::digest() const { return hex_digest(fnv1a64(canonical_json())); }

}  // namespace coconut
