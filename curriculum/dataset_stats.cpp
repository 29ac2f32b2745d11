// Dataset statistics and ProsQA invariant checks (see dataset_stats.h).
#include "curriculum/dataset_stats.h"

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>

#include <fmt/format.h>

namespace coconut::curriculum {

void Summary::add(double x) {
  if (count == 0) {
    min = max = x;
  } else {
    min = std::min(min, x);
    max = std::max(max, x);
  }
  mean += (x - mean) / static_cast<double>(++count);
}

namespace {

// Nodes reachable from `source` (itself included).
std::vector<char> reachable(const std::vector<std::vector<int>>& children, int source) {
  std::vector<char> seen(children.size(), 0);
  std::vector<int> stack = {source};
  seen[source] = 1;
  while (!stack.empty()) {
    const int u = stack.back();
    stack.pop_back();
    for (int v : children[u]) {
      if (!seen[v]) {
        seen[v] = 1;
        stack.push_back(v);
      }
    }
  }
  return seen;
}

// The word between `prefix` and a final "." of `sentence`, or "" when it does not match.
std::string word_after(const std::string& sentence, const std::string& prefix) {
  if (sentence.size() <= prefix.size() + 1 || sentence.compare(0, prefix.size(), prefix) != 0 ||
      sentence.back() != '.') {
    return "";
  }
  return sentence.substr(prefix.size(), sentence.size() - prefix.size() - 1);
}

// Checks that the steps walk a shortest path root -> target along edges.
void check_steps(const Sample& s, const std::vector<std::vector<int>>& children,
                 const std::unordered_map<std::string, int>& index_of, int shortest,
                 std::vector<std::string>& bad) {
  const ProsQAGraph& g = *s.graph;
  const auto& sym = g.idx_to_symbol;
  if (static_cast<int>(s.steps.size()) != shortest) {
    bad.push_back(fmt::format("{} steps, but the shortest path from root to target has {} edges",
                              s.steps.size(), shortest));
    return;
  }
  int at = g.root;
  for (size_t i = 0; i < s.steps.size(); ++i) {
    const std::string prefix =
        i == 0 ? fmt::format("{} is a ", sym[at]) : fmt::format("Every {} is a ", sym[at]);
    const std::string word = word_after(s.steps[i], prefix);
    auto it = index_of.find(word);
    if (word.empty() || it == index_of.end()) {
      bad.push_back(fmt::format("step {} '{}' is not of the form '{}<concept>.'", i, s.steps[i], prefix));
      return;
    }
    const int next = it->second;
    if (std::find(children[at].begin(), children[at].end(), next) == children[at].end()) {
      bad.push_back(fmt::format("step {} '{}' is not an edge of the graph", i, s.steps[i]));
      return;
    }
    at = next;
  }
  if (at != g.target) {
    bad.push_back(fmt::format("the steps end at {} ({}), not at the target", at, sym[at]));
  }
}

// Checks the question text: every edge stated once, then the two options.
void check_question(const Sample& s, const std::vector<char>& has_parent,
                    std::vector<std::string>& bad) {
  const ProsQAGraph& g = *s.graph;
  const auto& sym = g.idx_to_symbol;
  const std::string ask_a = fmt::format("Is {} a {} or {}?", sym[g.root], sym[g.target], sym[g.neg_target]);
  const std::string ask_b = fmt::format("Is {} a {} or {}?", sym[g.root], sym[g.neg_target], sym[g.target]);
  const std::string& q = s.question;
  std::string body;
  for (const std::string* ask : {&ask_a, &ask_b}) {
    if (q.size() > ask->size() && q.compare(q.size() - ask->size(), ask->size(), *ask) == 0) {
      body = q.substr(0, q.size() - ask->size());
    }
  }
  if (body.empty()) {
    bad.push_back(fmt::format("the question does not end with '{}' (or the options swapped)", ask_a));
    return;
  }
  std::vector<std::string> stated, expected;
  size_t pos = 0;
  while (pos < body.size()) {
    const size_t end = body.find(". ", pos);
    if (end == std::string::npos) break;
    stated.push_back(body.substr(pos, end + 1 - pos));
    pos = end + 2;
  }
  for (const auto& [a, b] : g.edges) {
    expected.push_back(has_parent[a] ? fmt::format("Every {} is a {}.", sym[a], sym[b])
                                     : fmt::format("{} is a {}.", sym[a], sym[b]));
  }
  std::sort(stated.begin(), stated.end());
  std::sort(expected.begin(), expected.end());
  if (pos != body.size() || stated != expected) {
    bad.push_back(fmt::format("the question states {} sentences that are not the {} edges, once each",
                              stated.size(), expected.size()));
  }
}

}  // namespace

ProsQAGraphInfo analyze_prosqa_item(const Sample& s) {
  ProsQAGraphInfo info;
  auto& bad = info.violations;
  if (!s.graph) {
    bad.push_back("no graph");
    return info;
  }
  const ProsQAGraph& g = *s.graph;
  const int n = static_cast<int>(g.idx_to_symbol.size());
  info.nodes = n;
  info.edges = static_cast<int>(g.edges.size());

  std::vector<std::vector<int>> children(n);
  std::vector<char> has_parent(n, 0);
  std::set<std::pair<int, int>> seen_edges;
  for (const auto& [a, b] : g.edges) {
    if (a < 0 || a >= n || b < 0 || b >= n) {
      bad.push_back(fmt::format("edge [{}, {}] is out of range", a, b));
      return info;
    }
    if (a >= b) bad.push_back(fmt::format("edge [{}, {}] breaks the topological order of ids", a, b));
    if (!seen_edges.insert({a, b}).second) bad.push_back(fmt::format("edge [{}, {}] appears twice", a, b));
    children[a].push_back(b);
    has_parent[b] = 1;
  }
  for (int v = 0; v < n; ++v) info.persons += has_parent[v] ? 0 : 1;

  std::unordered_map<std::string, int> index_of;
  for (int v = 0; v < n; ++v) {
    if (!index_of.emplace(g.idx_to_symbol[v], v).second) {
      bad.push_back(fmt::format("symbol '{}' names two nodes", g.idx_to_symbol[v]));
    }
  }
  if (has_parent[0] || has_parent[1]) bad.push_back("a seed (node 0 or 1) has a parent");
  if (g.root != 0 && g.root != 1) {
    bad.push_back(fmt::format("root is {} (expected 0 or 1)", g.root));
    return info;
  }
  const int other = 1 - g.root;
  const auto from_root = reachable(children, g.root);
  const auto from_other = reachable(children, other);
  const auto leaf_check = [&](int v, const char* what, const std::vector<char>& yes,
                              const std::vector<char>& no, const char* yes_name, const char* no_name) {
    if (v < 0 || v >= n) {
      bad.push_back(fmt::format("{} {} is out of range", what, v));
      return;
    }
    if (!children[v].empty()) bad.push_back(fmt::format("{} {} ({}) is not a leaf", what, v, g.idx_to_symbol[v]));
    if (!yes[v]) bad.push_back(fmt::format("{} {} ({}) is not reachable from {}", what, v, g.idx_to_symbol[v], yes_name));
    if (no[v]) bad.push_back(fmt::format("{} {} ({}) is reachable from {}", what, v, g.idx_to_symbol[v], no_name));
  };
  leaf_check(g.target, "target", from_root, from_other, "root", "the other seed");
  leaf_check(g.neg_target, "neg_target", from_other, from_root, "the other seed", "root");
  if (g.target < 0 || g.target >= n || g.neg_target < 0 || g.neg_target >= n) return info;

  // Shortest path length and number of shortest paths from root.
  std::vector<int> dist;
  std::vector<double> paths;
  shortest_paths(children, g.root, dist, paths);
  info.shortest_path = dist[g.target];
  info.num_shortest_paths = paths[g.target];
  if (info.shortest_path < 0) return info;

  check_steps(s, children, index_of, info.shortest_path, bad);
  const std::string answer = fmt::format("{} is a {}.", g.idx_to_symbol[g.root], g.idx_to_symbol[g.target]);
  if (s.answer != answer) bad.push_back(fmt::format("answer '{}' (expected '{}')", s.answer, answer));
  check_question(s, has_parent, bad);
  return info;
}

DatasetStats compute_dataset_stats(const std::vector<Sample>& samples) {
  DatasetStats st;
  st.items = samples.size();
  std::set<std::string> words;
  for (size_t i = 0; i < samples.size(); ++i) {
    const Sample& s = samples[i];
    st.steps.add(static_cast<double>(s.steps.size()));
    st.question_chars.add(static_cast<double>(s.question.size()));
    if (!s.graph) {
      ++st.items_without_graph;
      continue;
    }
    if (!st.prosqa) st.prosqa.emplace();
    ProsQAStats& p = *st.prosqa;
    const ProsQAGraphInfo info = analyze_prosqa_item(s);
    p.nodes.add(info.nodes);
    p.edges.add(info.edges);
    p.persons.add(info.persons);
    if (info.shortest_path >= 0) {
      p.shortest_path.add(info.shortest_path);
      p.num_shortest_paths.add(info.num_shortest_paths);
    }
    for (const std::string& w : s.graph->idx_to_symbol) words.insert(w);
    if (!info.violations.empty()) ++p.items_with_violations;
    for (const std::string& v : info.violations) {
      if (p.violations.size() < ProsQAStats::kMaxListed) p.violations.push_back(fmt::format("item {}: {}", i, v));
      ++p.total_violations;
    }
  }
  if (st.prosqa) st.prosqa->distinct_words = words.size();
  return st;
}

std::string format_stats(const DatasetStats& st, const std::string& name) {
  const auto row = [](const char* label, const Summary& s) {
    return fmt::format("  {:<24} mean {:7.3f}   min {:4g}   max {:4g}\n", label, s.mean, s.min, s.max);
  };
  std::string out = fmt::format("{}: {} items\n", name, st.items);
  if (st.items == 0) return out;
  out += row("steps per item", st.steps);
  out += row("question length (bytes)", st.question_chars);
  if (!st.prosqa) return out;
  const ProsQAStats& p = *st.prosqa;
  out += fmt::format("ProsQA graphs: {} items{}\n", p.nodes.count,
                     st.items_without_graph ? fmt::format(" ({} items have no graph)", st.items_without_graph) : "");
  out += row("nodes per graph", p.nodes);
  out += row("edges per graph", p.edges);
  out += row("shortest path (steps)", p.shortest_path);
  out += row("number of shortest paths", p.num_shortest_paths);
  out += row("persons per graph", p.persons);
  out += fmt::format("  {:<24} {}\n", "distinct words", p.distinct_words);
  if (p.items_with_violations == 0) {
    out += "  invariants: all hold (topological ids, root 0/1, target and neg_target leaves reachable\n"
           "  only from root / the other seed, steps along a shortest path, answer, question)\n";
  } else {
    out += fmt::format("  invariants: {} items break them ({} violations):\n", p.items_with_violations,
                       p.total_violations);
    for (const std::string& v : p.violations) out += "    " + v + "\n";
    if (p.total_violations > p.violations.size()) {
      out += fmt::format("    ... and {} more\n", p.total_violations - p.violations.size());
    }
  }
  return out;
}

}  // namespace coconut::curriculum
