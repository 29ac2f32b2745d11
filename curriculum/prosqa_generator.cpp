// ProsQA generator: grows a labelled DAG, picks the question, writes the sentences.
// The rules and why each detail is as it is: prosqa_generator.h.
#include "curriculum/prosqa_generator.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "runtime/check.h"

namespace coconut::curriculum {

// ---- random helpers ----

double GeneratorRng::uniform() { return static_cast<double>(rng_.next_u64() >> 11) * 0x1.0p-53; }

uint64_t GeneratorRng::below(uint64_t n) { return rng_.below(n); }

int GeneratorRng::poisson(double mean) {
  const double limit = std::exp(-mean);
  int k = 0;
  double p = uniform();
  while (p > limit) {
    ++k;
    p *= uniform();
  }
  return k;
}

std::vector<int> GeneratorRng::weighted_sample(const std::vector<double>& weights, int k) {
  COCONUT_CHECK(k >= 0 && k <= static_cast<int>(weights.size()),
                "weighted_sample: cannot draw {} of {} items", k, weights.size());
  std::vector<double> w = weights;
  std::vector<int> out;
  for (int draw = 0; draw < k; ++draw) {
    double total = 0;
    for (double x : w) total += x;
    COCONUT_CHECK(total > 0, "weighted_sample: weights must be positive");
    double u = uniform() * total;
    int chosen = -1;
    for (int i = 0; i < static_cast<int>(w.size()); ++i) {
      if (w[i] <= 0) continue;
      chosen = i;  // the last positive weight also absorbs rounding at the end
      if (u < w[i]) break;
      u -= w[i];
    }
    out.push_back(chosen);
    w[chosen] = 0;
  }
  return out;
}

// ---- word lists (tools/prosqa_words.py on the official validation split) ----

const std::vector<std::string>& prosqa_person_names() {
  static const std::vector<std::string> names = {
      "Alex", "Bob", "Carol", "Davis", "Eva", "Fae", "Gabriel", "Jack", "Max",
      "Oliver", "Polly", "Rex", "Sally", "Sam", "Stella", "Tom", "Wren"};
  return names;
}

const std::vector<std::string>& prosqa_concept_words() {
  static const std::vector<std::string> words = {
      "bompus", "boompus", "brimpus", "chorpus", "dumpus", "felpus", "fompus", "gerpus",
      "gorpus", "grimpus", "gwompus", "hilpus", "impus", "jelpus", "jompus", "kerpus",
      "lempus", "lorpus", "numpus", "quimpus", "rempus", "rompus", "rorpus", "scrompus",
      "shumpus", "sterpus", "storpus", "terpus", "timpus", "tumpus", "vumpus", "worpus",
      "wumpus", "yerpus", "yimpus", "yumpus", "zhorpus", "zumpus"};
  return words;
}

namespace {

constexpr uint64_t kProsQAStream = 0x50524F5351412D31ull;  // "PROSQA-1"

// A graph as grown: edges in the order they were drawn (child by child), the label of
// every node (bit 0: descends from node 0, bit 1: from node 1).
struct Grown {
  int n = 0;
  std::vector<std::pair<int, int>> edges;
  std::vector<int> label;
};

Grown grow_graph(GeneratorRng& rng, const ProsQAGeneratorConfig& cfg) {
  const int n = cfg.num_nodes;
  std::vector<int> label(n, 0), depth(n, 0);
  std::array<std::vector<int>, 4> groups;  // nodes by label
  label[0] = 1;
  label[1] = 2;
  groups[1] = {0};
  groups[2] = {1};
  std::vector<std::pair<int, int>> edges;
  std::vector<int> all_nodes = {0, 1};

  for (int idx = 2; idx < n; ++idx) {
    int k = rng.poisson(cfg.mean_parents);
    const std::vector<int>* candidates = &all_nodes;
    if (rng.uniform() < cfg.p_first_only) {
      candidates = &groups[1];
    } else if (rng.uniform() < cfg.p_second_only) {
      candidates = &groups[2];
    }
    k = std::min<int>(k, static_cast<int>(candidates->size()));
    std::vector<double> weights;
    weights.reserve(candidates->size());
    for (int c : *candidates) weights.push_back(1.0 + cfg.depth_weight * depth[c]);
    const std::vector<int> picks = rng.weighted_sample(weights, k);

    int node_label = 0, node_depth = 0;
    for (size_t j = 0; j < picks.size(); ++j) {
      const int parent = (*candidates)[picks[j]];
      edges.emplace_back(parent, idx);
      node_label |= label[parent];
      node_depth = (j == 0) ? depth[parent] + 1 : std::min(node_depth, depth[parent] + 1);
    }
    label[idx] = node_label;
    depth[idx] = node_depth;
    groups[node_label].push_back(idx);
    all_nodes.push_back(idx);
  }

  // Drop parentless nodes that nobody descends from: they would state nothing. The
  // seeds stay. Renumbering keeps the order, so ids remain topological.
  std::vector<char> used(n, 0);
  used[0] = used[1] = 1;
  for (const auto& [a, b] : edges) used[a] = used[b] = 1;
  std::vector<int> new_id(n, -1);
  Grown g;
  for (int i = 0; i < n; ++i) {
    if (!used[i]) continue;
    new_id[i] = g.n++;
    g.label.push_back(label[i]);
  }
  for (const auto& [a, b] : edges) g.edges.emplace_back(new_id[a], new_id[b]);
  return g;
}

// Tries to turn one grown graph into an item; false when the graph has no usable
// question (no answer leaf on one side, path too short, not enough words).
bool make_item(GeneratorRng& rng, const Grown& g, const ProsQAGeneratorConfig& cfg, Sample& out) {
  const int n = g.n;
  std::vector<std::vector<int>> children(n), parents(n);
  for (const auto& [a, b] : g.edges) {
    children[a].push_back(b);
    parents[b].push_back(a);
  }

  // For each seed: the leaves only it reaches (not itself) and how deep the deepest is.
  std::array<std::vector<int>, 2> dist, leaves;
  std::array<std::vector<double>, 2> paths;
  std::array<int, 2> deepest = {-1, -1};
  for (int s = 0; s < 2; ++s) {
    shortest_paths(children, s, dist[s], paths[s]);
    for (int v = 2; v < n; ++v) {
      if (children[v].empty() && g.label[v] == (1 << s)) {
        leaves[s].push_back(v);
        deepest[s] = std::max(deepest[s], dist[s][v]);
      }
    }
  }
  if (leaves[0].empty() || leaves[1].empty()) return false;
  const int root = deepest[0] > deepest[1] ? 0 : deepest[1] > deepest[0] ? 1 : static_cast<int>(rng.below(2));
  const int other = 1 - root;
  if (deepest[root] < cfg.min_path_length) return false;

  std::vector<int> targets;
  for (int v : leaves[root]) {
    if (dist[root][v] == deepest[root]) targets.push_back(v);
  }
  const int target = rng.pick(targets);
  const int neg_target = rng.pick(leaves[other]);

  // Names: persons are the parentless nodes.
  std::vector<std::string> persons = prosqa_person_names();
  std::vector<std::string> concepts = prosqa_concept_words();
  int num_persons = 0;
  for (int v = 0; v < n; ++v) num_persons += parents[v].empty() ? 1 : 0;
  if (num_persons > static_cast<int>(persons.size()) ||
      n - num_persons > static_cast<int>(concepts.size())) {
    return false;
  }
  rng.shuffle(persons);
  rng.shuffle(concepts);
  ProsQAGraph graph;
  size_t next_person = 0, next_concept = 0;
  for (int v = 0; v < n; ++v) {
    graph.idx_to_symbol.push_back(parents[v].empty() ? persons[next_person++]
                                                     : concepts[next_concept++]);
  }
  graph.edges = g.edges;
  graph.root = root;
  graph.target = target;
  graph.neg_target = neg_target;
  const auto& sym = graph.idx_to_symbol;

  // One statement per edge, in random order, then the question with random option order.
  std::vector<std::string> statements;
  for (const auto& [a, b] : g.edges) {
    statements.push_back(parents[a].empty() ? fmt::format("{} is a {}.", sym[a], sym[b])
                                            : fmt::format("Every {} is a {}.", sym[a], sym[b]));
  }
  rng.shuffle(statements);
  std::string question;
  for (const std::string& s : statements) question += s + " ";
  const bool target_first = rng.coin();
  question += fmt::format("Is {} a {} or {}?", sym[root], sym[target_first ? target : neg_target],
                          sym[target_first ? neg_target : target]);

  // A shortest path, uniform over all shortest paths: walk back from the target, taking
  // each parent on a shortest path with probability proportional to its path count.
  std::vector<int> path = {target};
  while (path.back() != root) {
    const int v = path.back();
    std::vector<int> options;
    std::vector<double> weights;
    for (int p : parents[v]) {
      if (dist[root][p] >= 0 && dist[root][p] == dist[root][v] - 1) {
        options.push_back(p);
        weights.push_back(paths[root][p]);
      }
    }
    path.push_back(options[rng.weighted_sample(weights, 1)[0]]);
  }
  std::reverse(path.begin(), path.end());

  out.question = std::move(question);
  out.steps.clear();
  out.steps.push_back(fmt::format("{} is a {}.", sym[path[0]], sym[path[1]]));
  for (size_t i = 1; i + 1 < path.size(); ++i) {
    out.steps.push_back(fmt::format("Every {} is a {}.", sym[path[i]], sym[path[i + 1]]));
  }
  out.answer = fmt::format("{} is a {}.", sym[root], sym[target]);
  out.graph = std::move(graph);
  return true;
}

void check_config(const ProsQAGeneratorConfig& c) {
  const int max_nodes = 2 + static_cast<int>(prosqa_concept_words().size());
  COCONUT_CHECK(c.num_nodes >= 4 && c.num_nodes <= max_nodes,
                "ProsQA generator: num_nodes = {} (expected 4..{}: one concept word per node)",
                c.num_nodes, max_nodes);
  COCONUT_CHECK(c.mean_parents > 0 && c.mean_parents <= 20,
                "ProsQA generator: mean_parents = {} (expected in (0, 20])", c.mean_parents);
  COCONUT_CHECK(c.p_first_only >= 0 && c.p_first_only <= 1 && c.p_second_only >= 0 &&
                    c.p_second_only <= 1,
                "ProsQA generator: p_first_only = {}, p_second_only = {} (expected probabilities)",
                c.p_first_only, c.p_second_only);
  COCONUT_CHECK(c.depth_weight >= 0, "ProsQA generator: depth_weight = {} (expected >= 0)",
                c.depth_weight);
  COCONUT_CHECK(c.min_path_length >= 1, "ProsQA generator: min_path_length = {} (expected >= 1)",
                c.min_path_length);
  COCONUT_CHECK(c.max_attempts >= 1, "ProsQA generator: max_attempts = {} (expected >= 1)",
                c.max_attempts);
}

}  // namespace

Sample generate_prosqa_sample(uint64_t seed, uint64_t index, const ProsQAGeneratorConfig& config) {
  check_config(config);
  GeneratorRng rng(seed, kProsQAStream, index);
  Sample sample;
  for (int attempt = 0; attempt < config.max_attempts; ++attempt) {
    const Grown g = grow_graph(rng, config);
    if (make_item(rng, g, config, sample)) return sample;
  }
  COCONUT_FAIL(
      "ProsQA generator: no valid graph in {} attempts (seed {}, item {}): num_nodes = {} is "
      "too small for min_path_length = {}?",
      config.max_attempts, seed, index, config.num_nodes, config.min_path_length);
}

std::vector<Sample> generate_prosqa(uint64_t seed, size_t count, const ProsQAGeneratorConfig& config) {
  return generate_items(count, [&](uint64_t i) { return generate_prosqa_sample(seed, i, config); });
}

}  // namespace coconut::curriculum
