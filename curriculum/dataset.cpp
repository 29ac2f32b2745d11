// Reading and writing datasets: the official JSON format and the iCoT GSM8k text format.
// See dataset.h for the formats.
#include "curriculum/dataset.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "runtime/check.h"

namespace coconut::curriculum {

namespace {

using nlohmann::json;

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  COCONUT_CHECK(in.good(), "{}: cannot open dataset file", path);
  std::ostringstream buf;
  buf << in.rdbuf();
  COCONUT_CHECK(!in.bad(), "{}: read error", path);
  return buf.str();
}

// The graph fields come all together or not at all.
constexpr const char* kGraphKeys[] = {"idx_to_symbol", "edges", "root", "target", "neg_target"};

std::string get_string(const json& item, const char* key, const std::string& where) {
  auto it = item.find(key);
  COCONUT_CHECK(it != item.end(), "{}: missing field '{}' (expected a string)", where, key);
  COCONUT_CHECK(it->is_string(), "{}: field '{}' must be a string, got a {}", where, key,
                it->type_name());
  return it->get<std::string>();
}

std::vector<std::string> get_string_list(const json& item, const char* key,
                                         const std::string& where) {
  auto it = item.find(key);
  COCONUT_CHECK(it != item.end(), "{}: missing field '{}' (expected a list of strings)", where,
                key);
  COCONUT_CHECK(it->is_array(), "{}: field '{}' must be a list of strings, got a {}", where, key,
                it->type_name());
  std::vector<std::string> out;
  out.reserve(it->size());
  for (size_t j = 0; j < it->size(); ++j) {
    const json& e = (*it)[j];
    COCONUT_CHECK(e.is_string(), "{}: field '{}' must be a list of strings, element {} is a {}",
                  where, key, j, e.type_name());
    out.push_back(e.get<std::string>());
  }
  return out;
}

int get_node_index(const json& item, const char* key, int num_nodes, const std::string& where) {
  auto it = item.find(key);
  COCONUT_CHECK(it != item.end(), "{}: missing field '{}' (expected a node index)", where, key);
  COCONUT_CHECK(it->is_number_integer(), "{}: field '{}' must be an integer node index, got a {}",
                where, key, it->type_name());
  const int64_t v = it->get<int64_t>();
  COCONUT_CHECK(v >= 0 && v < num_nodes,
                "{}: field '{}' = {} is out of range (expected 0..{}, the graph has {} nodes)",
                where, key, v, num_nodes - 1, num_nodes);
  return static_cast<int>(v);
}

ProsQAGraph parse_graph(const json& item, const std::string& where) {
  ProsQAGraph g;
  g.idx_to_symbol = get_string_list(item, "idx_to_symbol", where);
  const int n = static_cast<int>(g.idx_to_symbol.size());
  COCONUT_CHECK(n >= 2, "{}: field 'idx_to_symbol' has {} nodes (expected at least 2)", where, n);

  const json& edges = item.at("edges");
  COCONUT_CHECK(edges.is_array(), "{}: field 'edges' must be a list of [parent, child] pairs, got a {}",
                where, edges.type_name());
  g.edges.reserve(edges.size());
  for (size_t j = 0; j < edges.size(); ++j) {
    const json& e = edges[j];
    COCONUT_CHECK(e.is_array() && e.size() == 2 && e[0].is_number_integer() &&
                      e[1].is_number_integer(),
                  "{}: field 'edges', element {}: expected a [parent, child] pair of integers, got {}",
                  where, j, e.dump());
    const int64_t a = e[0].get<int64_t>(), b = e[1].get<int64_t>();
    COCONUT_CHECK(a >= 0 && a < n && b >= 0 && b < n,
                  "{}: field 'edges', element {}: [{}, {}] is out of range (expected indices 0..{})",
                  where, j, a, b, n - 1);
    g.edges.emplace_back(static_cast<int>(a), static_cast<int>(b));
  }
  g.root = get_node_index(item, "root", n, where);
  g.target = get_node_index(item, "target", n, where);
  g.neg_target = get_node_index(item, "neg_target", n, where);
  return g;
}

Sample parse_item(const json& item, const std::string& where) {
  COCONUT_CHECK(item.is_object(), "{}: expected an object with question, steps and answer, got a {}",
                where, item.type_name());
  Sample s;
  s.question = get_string(item, "question", where);
  s.steps = get_string_list(item, "steps", where);
  s.answer = get_string(item, "answer", where);

  int graph_keys = 0;
  for (const char* k : kGraphKeys) graph_keys += item.contains(k) ? 1 : 0;
  if (graph_keys > 0) {
    for (const char* k : kGraphKeys) {
      COCONUT_CHECK(item.contains(k),
                    "{}: has ProsQA graph fields but misses '{}' (a graph needs idx_to_symbol, "
                    "edges, root, target and neg_target)",
                    where, k);
    }
    s.graph = parse_graph(item, where);
  }
  return s;
}

nlohmann::ordered_json sample_to_json(const Sample& s) {
  // Same key order as the official release, so a round trip diffs cleanly.
  nlohmann::ordered_json o;
  o["question"] = s.question;
  o["answer"] = s.answer;
  o["steps"] = s.steps;
  if (s.graph) {
    const ProsQAGraph& g = *s.graph;
    o["idx_to_symbol"] = g.idx_to_symbol;
    auto edges = nlohmann::ordered_json::array();
    for (const auto& [a, b] : g.edges) edges.push_back({a, b});
    o["edges"] = std::move(edges);
    o["root"] = g.root;
    o["target"] = g.target;
    o["neg_target"] = g.neg_target;
  }
  return o;
}

// Strips ASCII whitespace at both ends.
std::string strip(const std::string& s) {
  const char* ws = " \t\r\n\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

Sample parse_icot_line(const std::string& line, const std::string& where) {
  const size_t bar = line.find("||");
  COCONUT_CHECK(bar != std::string::npos,
                "{}: expected 'question||<<a=b>> ... #### answer', found no '||'", where);
  COCONUT_CHECK(line.find("||", bar + 2) == std::string::npos,
                "{}: expected exactly one '||' between question and reasoning, found several",
                where);
  const size_t hashes = line.find("####", bar + 2);
  COCONUT_CHECK(hashes != std::string::npos,
                "{}: expected '#### answer' after the reasoning steps, found no '####'", where);
  COCONUT_CHECK(line.find("####", hashes + 4) == std::string::npos,
                "{}: expected one '####' before the answer, found several", where);

  Sample s;
  s.question = line.substr(0, bar);
  COCONUT_CHECK(!strip(s.question).empty(), "{}: the question before '||' is empty", where);
  s.answer = strip(line.substr(hashes + 4));
  COCONUT_CHECK(!s.answer.empty(), "{}: the answer after '####' is empty", where);

  // The reasoning is a whitespace-separated sequence of <<...>> groups (possibly none).
  const std::string cot = line.substr(bar + 2, hashes - bar - 2);
  size_t pos = 0;
  while (true) {
    pos = cot.find_first_not_of(" \t", pos);
    if (pos == std::string::npos) break;
    COCONUT_CHECK(cot.compare(pos, 2, "<<") == 0,
                  "{}: expected reasoning steps of the form '<<a=b>>' before '####', found '{}'",
                  where, cot.substr(pos, 20));
    const size_t close = cot.find(">>", pos + 2);
    COCONUT_CHECK(close != std::string::npos, "{}: reasoning step '{}' has no closing '>>'", where,
                  cot.substr(pos, 20));
    s.steps.push_back(cot.substr(pos, close + 2 - pos));
    pos = close + 2;
  }
  return s;
}

}  // namespace

std::vector<Sample> parse_dataset_json(const std::string& text, const std::string& source) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& e) {
    COCONUT_FAIL("{}: not valid JSON (byte {}): {}", source, e.byte, e.what());
  }
  COCONUT_CHECK(root.is_array(), "{}: expected a JSON list of items, got a {}", source,
                root.type_name());
  std::vector<Sample> out;
  out.reserve(root.size());
  for (size_t i = 0; i < root.size(); ++i) {
    out.push_back(parse_item(root[i], fmt::format("{}: item {}", source, i)));
  }
  return out;
}

std::vector<Sample> load_dataset_json(const std::string& path) {
  return parse_dataset_json(read_whole_file(path), path);
}

std::string dataset_to_json_text(const std::vector<Sample>& samples) {
  auto list = nlohmann::ordered_json::array();
  for (const Sample& s : samples) list.push_back(sample_to_json(s));
  return list.dump();
}

void save_dataset_json(const std::string& path, const std::vector<Sample>& samples) {
  const std::string text = dataset_to_json_text(samples);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    COCONUT_CHECK(out.good(), "{}: cannot open for writing", tmp);
    out << text << '\n';
    out.flush();
    COCONUT_CHECK(out.good(), "{}: write failed (disk full?)", tmp);
  }
  COCONUT_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename {} to {}", tmp, path);
}

std::vector<Sample> parse_icot_text(const std::string& text, const std::string& source) {
  std::vector<Sample> out;
  std::istringstream in(text);
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF files
    if (strip(line).empty()) continue;
    out.push_back(parse_icot_line(line, fmt::format("{}: line {}", source, line_no)));
  }
  return out;
}

std::vector<Sample> convert_icot_text(const std::string& path) {
  return parse_icot_text(read_whole_file(path), path);
}

void shortest_paths(const std::vector<std::vector<int>>& children, int source, std::vector<int>& dist,
                    std::vector<double>& paths) {
  const int n = static_cast<int>(children.size());
  dist.assign(n, -1);
  paths.assign(n, 0.0);
  dist[source] = 0;
  paths[source] = 1.0;
  std::vector<int> queue = {source};
  for (size_t h = 0; h < queue.size(); ++h) {
    const int u = queue[h];
    for (int v : children[u]) {
      if (dist[v] < 0) {
        dist[v] = dist[u] + 1;
        queue.push_back(v);
      }
      if (dist[v] == dist[u] + 1) paths[v] += paths[u];
    }
  }
}

}  // namespace coconut::curriculum
