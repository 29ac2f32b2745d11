// Latent-search probe on ProsQA (see probe.h for the definitions and why).
#include "curriculum/probe.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "curriculum/batching.h"
#include "model/multipass.h"
#include "runtime/check.h"

namespace coconut::curriculum {

namespace {

std::vector<std::vector<int>> children_of(const ProsQAGraph& g) {
  std::vector<std::vector<int>> ch(g.idx_to_symbol.size());
  for (const auto& [p, c] : g.edges) ch[p].push_back(c);
  return ch;
}

// Kahn's algorithm; the caller has checked the indices. Empty when there is a cycle.
std::vector<int> topological_order(const ProsQAGraph& g) {
  const size_t n = g.idx_to_symbol.size();
  const auto ch = children_of(g);
  std::vector<int> indegree(n, 0), order;
  for (const auto& [p, c] : g.edges) ++indegree[c];
  for (size_t v = 0; v < n; ++v)
    if (indegree[v] == 0) order.push_back(static_cast<int>(v));
  for (size_t i = 0; i < order.size(); ++i)
    for (int c : ch[order[i]])
      if (--indegree[c] == 0) order.push_back(c);
  if (order.size() != n) order.clear();
  return order;
}

// Heights bottom-up: a leaf is 0, otherwise 1 + min (or max) over the children.
std::vector<int> heights(const ProsQAGraph& g, bool longest) {
  const auto ch = children_of(g);
  const std::vector<int> order = topological_order(g);
  COCONUT_CHECK(order.size() == g.idx_to_symbol.size(), "the ProsQA graph has a cycle: heights are undefined");
  std::vector<int> h(g.idx_to_symbol.size(), 0);
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    const int v = *it;
    if (ch[v].empty()) continue;
    int best = h[ch[v][0]];
    for (int c : ch[v]) best = longest ? std::max(best, h[c]) : std::min(best, h[c]);
    h[v] = best + 1;
  }
  return h;
}

// log softmax of one logits row, in double so that tiny probabilities keep their digits.
std::vector<double> log_softmax(const float* z, int V) {
  const double m = *std::max_element(z, z + V);
  double sum = 0;
  for (int i = 0; i < V; ++i) sum += std::exp(static_cast<double>(z[i]) - m);
  const double lse = m + std::log(sum);
  std::vector<double> out(V);
  for (int i = 0; i < V; ++i) out[i] = static_cast<double>(z[i]) - lse;
  return out;
}

}  // namespace

void validate_graph(const ProsQAGraph& g, const std::string& where) {
  const int n = static_cast<int>(g.idx_to_symbol.size());
  auto in_range = [n](int v) { return v >= 0 && v < n; };
  COCONUT_CHECK(n > 0, "{}: the ProsQA graph has no nodes", where);
  for (const auto& [p, c] : g.edges)
    COCONUT_CHECK(in_range(p) && in_range(c), "{}: edge [{}, {}] is out of range (the graph has {} nodes)", where, p,
                  c, n);
  COCONUT_CHECK(in_range(g.root) && in_range(g.target) && in_range(g.neg_target),
                "{}: root {}, target {} or neg_target {} is out of range (the graph has {} nodes)", where, g.root,
                g.target, g.neg_target, n);
  COCONUT_CHECK(topological_order(g).size() == static_cast<size_t>(n), "{}: the ProsQA graph has a cycle", where);
}

std::vector<int> frontier_nodes(const ProsQAGraph& g, int k) {
  COCONUT_CHECK(k >= 0, "frontier_nodes: k must be >= 0 (got {})", k);
  const auto ch = children_of(g);
  // The set of nodes at the end of paths of exactly `step` edges from the root.
  std::set<int> layer = {g.root};
  for (int step = 0; step < std::max(k, 1); ++step) {
    std::set<int> next;
    for (int v : layer) next.insert(ch[v].begin(), ch[v].end());
    layer = std::move(next);
  }
  return {layer.begin(), layer.end()};
}

std::vector<int> node_heights(const ProsQAGraph& g) { return heights(g, false); }
std::vector<int> node_max_heights(const ProsQAGraph& g) { return heights(g, true); }

std::vector<bool> nodes_reaching(const ProsQAGraph& g, int target) {
  const size_t n = g.idx_to_symbol.size();
  std::vector<std::vector<int>> parents(n);
  for (const auto& [p, c] : g.edges) parents[c].push_back(p);
  std::vector<bool> reach(n, false);
  std::vector<int> stack = {target};
  reach[target] = true;
  while (!stack.empty()) {
    const int v = stack.back();
    stack.pop_back();
    for (int p : parents[v])
      if (!reach[p]) reach[p] = true, stack.push_back(p);
  }
  return reach;
}

std::string probe_prefix_text(const ProsQAGraph& g, int k) {
  return k == 0 ? g.idx_to_symbol.at(g.root) + " is a" : std::string("Every");
}

std::vector<int> concept_tokens(const Tokenizer& tok, const std::string& prefix_text, const std::string& word) {
  const std::vector<int> prefix = tok.encode(prefix_text);
  const std::vector<int> full = tok.encode(prefix_text + " " + word);
  COCONUT_CHECK(full.size() > prefix.size() && std::equal(prefix.begin(), prefix.end(), full.begin()),
                "the tokens of '{} {}' do not extend those of '{}': cannot isolate the concept's tokens", prefix_text,
                word, prefix_text);
  std::vector<int> out(full.begin() + static_cast<std::ptrdiff_t>(prefix.size()), full.end());
  // An unknown word would be scored as <unk>: refuse rather than report a meaningless value.
  std::string text = tok.decode(out);
  const size_t b = text.find_first_not_of(' ');
  text = b == std::string::npos ? "" : text.substr(b);
  COCONUT_CHECK(text == word, "concept '{}' is not in the tokenizer's vocabulary (its tokens decode to '{}')",
                word, text);
  return out;
}

ProbeResult probe_prosqa(const model::GPT2& model, const Tokenizer& tok, const Sample& sample,
                         const CurriculumConfig& cc, int max_thoughts) {
  COCONUT_CHECK(sample.graph.has_value(),
                "probe: the item has no ProsQA graph (fields idx_to_symbol, edges, root, target, neg_target)");
  COCONUT_CHECK(cc.has_markers(), "probe: method '{}' has no <bot>/<eot> markers to probe (use coconut, "
                "no_curriculum, pause or pause_as_thought)", method_name(cc.method));
  COCONUT_CHECK(max_thoughts >= 0, "probe: the number of thoughts must be >= 0 (got {})", max_thoughts);
  const ProsQAGraph& g = *sample.graph;
  validate_graph(g, "probe item");
  const model::GPT2Config& cfg = model.config();
  const int C = cfg.d_model, V = cfg.vocab_size;
  const std::vector<int> height = node_heights(g), max_height = node_max_heights(g);
  const std::vector<bool> reaching = nodes_reaching(g, g.target);
  const std::vector<int> question = tok.encode(sample.question + "\n");  // as tokenize_sample writes it

  ProbeResult result;
  model::Activations acts;
  std::vector<float> embeds, logits(V), extra_embeds;
  for (int k = 0; k <= max_thoughts; ++k) {
    ProbeThought th;
    th.k = k;
    th.n_thoughts = k * cc.c_thought;
    const std::vector<int> frontier = frontier_nodes(g, k);
    if (frontier.empty()) {
      result.thoughts.push_back(std::move(th));
      continue;
    }
    const std::string prefix_text = probe_prefix_text(g, k);
    std::vector<std::vector<int>> concepts;
    size_t longest = 0;
    for (int v : frontier) {
      concepts.push_back(concept_tokens(tok, prefix_text, g.idx_to_symbol[v]));
      longest = std::max(longest, concepts.back().size());
    }

    // question "\n" <bot> <latent>*(k*c) <eot> prefix: one forward through the passes.
    BuiltSample prompt;
    prompt.tokens = question;
    prompt.tokens.push_back(tok.start_latent_id());
    prompt.tokens.insert(prompt.tokens.end(), th.n_thoughts, tok.latent_id());
    prompt.tokens.push_back(tok.end_latent_id());
    const std::vector<int> prefix = tok.encode(prefix_text);
    prompt.tokens.insert(prompt.tokens.end(), prefix.begin(), prefix.end());
    prompt.labels.assign(prompt.tokens.size(), -100);
    prompt.n_latents = th.n_thoughts;
    const model::SequenceBatch batch = make_batch({&prompt}, tok, cc.feeds_back());
    const int T0 = batch.T, T = T0 + static_cast<int>(longest) - 1;
    COCONUT_CHECK(T <= cfg.max_positions, "probe: the prompt at k={} needs {} positions, the model has {}", k, T,
                  cfg.max_positions);
    acts.resize(cfg, 1, T, /*training=*/false);
    std::copy(batch.pos_ids.begin(), batch.pos_ids.end(), acts.pos_ids.begin());
    std::copy(batch.key_mask.begin(), batch.key_mask.end(), acts.key_mask.begin());
    for (int t = T0; t < T; ++t) acts.pos_ids[t] = acts.pos_ids[t - 1] + 1, acts.key_mask[t] = 1;
    embeds.resize(static_cast<size_t>(T0) * C);
    model.embed_tokens(batch.tokens.data(), T0, embeds.data());
    model::forward_passes(model, acts, batch, embeds.data(), nullptr);
    model.lm_head_logits(acts.lnf + static_cast<size_t>(T0 - 1) * C, 1, logits.data());
    const std::vector<double> first = log_softmax(logits.data(), V);

    for (size_t i = 0; i < frontier.size(); ++i) {
      const std::vector<int>& ids = concepts[i];
      double logp = first[ids[0]];
      // Further tokens: teacher-force the earlier ones in the columns after the prompt
      // (earlier nodes' columns are simply overwritten; the prompt's cache is untouched).
      const int n_extra = static_cast<int>(ids.size()) - 1;
      if (n_extra > 0) {
        extra_embeds.resize(static_cast<size_t>(n_extra) * C);
        model.embed_tokens(ids.data(), n_extra, extra_embeds.data());
        model.forward_range(acts, T0, T0 + n_extra, extra_embeds.data());
        for (int j = 0; j < n_extra; ++j) {
          model.lm_head_logits(acts.lnf + static_cast<size_t>(T0 + j) * C, 1, logits.data());
          logp += log_softmax(logits.data(), V)[ids[j + 1]];
        }
      }
      ProbeNode node;
      node.node = frontier[i];
      node.word = g.idx_to_symbol[frontier[i]];
      node.value = std::exp(logp);
      node.n_tokens = static_cast<int>(ids.size());
      node.height = height[frontier[i]];
      node.max_height = max_height[frontier[i]];
      node.reaches_target = reaching[frontier[i]];
      th.frontier_mass += node.value;
      th.frontier.push_back(std::move(node));
    }
    std::stable_sort(th.frontier.begin(), th.frontier.end(),
                     [](const ProbeNode& a, const ProbeNode& b) { return a.value > b.value; });
    result.thoughts.push_back(std::move(th));
  }
  return result;
}

std::vector<ThoughtSummary> summarize_probes(const std::vector<ProbeResult>& results, int top_ranks) {
  COCONUT_CHECK(top_ranks >= 1, "summarize_probes: top_ranks must be >= 1 (got {})", top_ranks);
  size_t n_k = 0;
  for (const ProbeResult& r : results) n_k = std::max(n_k, r.thoughts.size());
  std::vector<ThoughtSummary> out(n_k);
  for (size_t k = 0; k < n_k; ++k) {
    ThoughtSummary& s = out[k];
    s.k = static_cast<int>(k);
    s.mean_rank_value.assign(top_ranks, 0.0);
    s.rank_count.assign(top_ranks, 0);
    s.mean_top_cumulative.assign(top_ranks, 0.0);
    struct Acc { int n = 0, n_reach = 0; double sum = 0, sum_reach = 0; };
    std::map<int, Acc> by_height;
    for (const ProbeResult& r : results) {
      if (k >= r.thoughts.size()) continue;
      const ProbeThought& th = r.thoughts[k];
      s.n_thoughts = th.n_thoughts;
      if (th.frontier.empty()) continue;
      ++s.items;
      s.mean_frontier_size += th.frontier.size();
      s.mean_frontier_mass += th.frontier_mass;
      double cumulative = 0;
      for (int rank = 0; rank < top_ranks; ++rank) {
        if (rank < static_cast<int>(th.frontier.size())) {
          s.mean_rank_value[rank] += th.frontier[rank].value;
          ++s.rank_count[rank];
          cumulative += th.frontier[rank].value;
        }
        s.mean_top_cumulative[rank] += cumulative;
      }
      for (const ProbeNode& node : th.frontier) {
        Acc& a = by_height[node.height];
        ++a.n;
        a.sum += node.value;
        if (node.reaches_target) ++a.n_reach, a.sum_reach += node.value;
      }
    }
    if (s.items > 0) {
      s.mean_frontier_size /= s.items;
      s.mean_frontier_mass /= s.items;
      for (int rank = 0; rank < top_ranks; ++rank) {
        if (s.rank_count[rank] > 0) s.mean_rank_value[rank] /= s.rank_count[rank];
        s.mean_top_cumulative[rank] /= s.items;
      }
    }
    for (const auto& [h, a] : by_height) {
      HeightStats hs;
      hs.height = h;
      hs.count = a.n;
      hs.count_reaching = a.n_reach;
      hs.mean_value = a.sum / a.n;
      hs.mean_value_reaching = a.n_reach ? a.sum_reach / a.n_reach : 0.0;
      hs.mean_value_other = a.n > a.n_reach ? (a.sum - a.sum_reach) / (a.n - a.n_reach) : 0.0;
      s.by_height.push_back(hs);
    }
  }
  return out;
}

namespace {

// An item's thoughts as the report writes them (a double through JSON comes back exact).
nlohmann::json thoughts_json(const ProbeResult& r) {
  nlohmann::json thoughts = nlohmann::json::array();
  for (const ProbeThought& th : r.thoughts) {
    nlohmann::json f = nlohmann::json::array();
    for (const ProbeNode& n : th.frontier)
      f.push_back({{"node", n.node}, {"concept", n.word}, {"value", n.value}, {"tokens", n.n_tokens},
                   {"height", n.height}, {"max_height", n.max_height}, {"reaches_target", n.reaches_target}});
    thoughts.push_back({{"k", th.k}, {"n_thoughts", th.n_thoughts}, {"frontier_mass", th.frontier_mass},
                        {"frontier", std::move(f)}});
  }
  return thoughts;
}

}  // namespace

std::string probe_results_to_json(const std::vector<ProbeResult>& results) {
  nlohmann::json j = nlohmann::json::array();
  for (const ProbeResult& r : results) j.push_back(thoughts_json(r));
  return j.dump();
}

std::vector<ProbeResult> probe_results_from_json(const std::string& text) {
  std::vector<ProbeResult> results;
  try {
    for (const nlohmann::json& item : nlohmann::json::parse(text)) {
      ProbeResult& r = results.emplace_back();
      for (const nlohmann::json& t : item) {
        ProbeThought& th = r.thoughts.emplace_back();
        th.k = t.at("k").get<int>();
        th.n_thoughts = t.at("n_thoughts").get<int>();
        th.frontier_mass = t.at("frontier_mass").get<double>();
        for (const nlohmann::json& n : t.at("frontier"))
          th.frontier.push_back({n.at("node").get<int>(), n.at("concept").get<std::string>(),
                                 n.at("value").get<double>(), n.at("tokens").get<int>(), n.at("height").get<int>(),
                                 n.at("max_height").get<int>(), n.at("reaches_target").get<bool>()});
      }
    }
  } catch (const nlohmann::json::exception& e) {
    COCONUT_FAIL("probe results: malformed JSON ({})", e.what());
  }
  return results;
}

void write_probe_report(const std::string& path, const std::vector<ThoughtSummary>& summary,
                        const std::vector<ProbeResult>& results, const std::string& dataset_name) {
  using nlohmann::json;
  json j;
  j["dataset"] = dataset_name;
  j["items"] = results.size();
  j["definitions"] = {
      {"value", "product of the probabilities of the concept's tokens as the next output after <eot> and the "
                "forced prefix ('<root> is a' at k=0, 'Every' at k>=1)"},
      {"frontier", "k>=1: nodes at the end of a path of exactly k edges from the root; k=0: the root's children"},
      {"height", "shortest distance to a leaf (max_height: longest)"},
      {"k", "latent steps; n_thoughts = k * c continuous thoughts"}};
  j["summary"] = json::array();
  for (const ThoughtSummary& s : summary) {
    json t = {{"k", s.k}, {"n_thoughts", s.n_thoughts}, {"items", s.items},
              {"mean_frontier_size", s.mean_frontier_size}, {"mean_frontier_mass", s.mean_frontier_mass}};
    t["top"] = json::array();
    for (size_t r = 0; r < s.mean_rank_value.size(); ++r)
      t["top"].push_back({{"rank", r + 1},
                          {"items", s.rank_count[r]},
                          {"mean_value", s.rank_count[r] ? json(s.mean_rank_value[r]) : json(nullptr)},
                          {"mean_cumulative", s.mean_top_cumulative[r]}});
    t["by_height"] = json::array();
    for (const HeightStats& h : s.by_height) {
      const int other = h.count - h.count_reaching;
      t["by_height"].push_back({{"height", h.height},
                                {"count", h.count},
                                {"mean_value", h.mean_value},
                                {"count_reaching_target", h.count_reaching},
                                {"mean_value_reaching_target", h.count_reaching ? json(h.mean_value_reaching) : json(nullptr)},
                                {"mean_value_other", other ? json(h.mean_value_other) : json(nullptr)}});
    }
    j["summary"].push_back(std::move(t));
  }
  j["per_item"] = json::array();
  for (size_t i = 0; i < results.size(); ++i)
    j["per_item"].push_back({{"index", i}, {"thoughts", thoughts_json(results[i])}});
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    COCONUT_CHECK(out.good(), "cannot write probe report '{}'", tmp);
    out << j.dump(1) << "\n";
    COCONUT_CHECK(out.good(), "writing probe report '{}' failed", tmp);
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace coconut::curriculum
