// The latent-search probe (curriculum/probe.h): frontier sets and heights on a graph
// checked by hand and on the official ProsQA file, and node values against an
// independent column-by-column forward (thoughts fed back by hand, log-softmax here).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <tuple>

#include "curriculum/bpe_tokenizer.h"
#include "curriculum/probe.h"
#include "curriculum/word_tokenizer.h"
#include "model/gpt2.h"

namespace coconut::curriculum {
namespace {

// Hand-made graph (0 = Tom, the root; 1 = Bob, the other person):
//   Tom -> wumpus, Tom -> yumpus, wumpus -> yumpus, yumpus -> zumpus, wumpus -> rempus,
//   zumpus -> lempus (target), rempus -> fompus, Bob -> fompus, Bob -> gorpus (neg_target)
// Paths of exactly k edges from Tom: k=1 {wumpus, yumpus}; k=2 {yumpus (via wumpus),
// zumpus, rempus}; k=3 {zumpus, fompus, lempus}; k=4 {lempus}; k=5 none.
// Leaves: lempus, fompus, gorpus. Shortest distance to a leaf: zumpus 1, rempus 1,
// yumpus 2, wumpus 2 (via rempus), Tom 3, Bob 1. Longest: wumpus 3, Tom 4.
Sample hand_sample(const std::string& rempus_name = "rempus") {
  Sample s;
  ProsQAGraph g;
  g.idx_to_symbol = {"Tom", "Bob", "wumpus", "yumpus", "zumpus", rempus_name, "fompus", "lempus", "gorpus"};
  g.edges = {{0, 2}, {0, 3}, {2, 3}, {3, 4}, {2, 5}, {4, 7}, {5, 6}, {1, 6}, {1, 8}};
  g.root = 0;
  g.target = 7;
  g.neg_target = 8;
  s.graph = g;
  s.question = "Tom is a wumpus. Tom is a yumpus. Every wumpus is a yumpus. Every yumpus is a zumpus. Every wumpus is a " +
               rempus_name + ". Every zumpus is a lempus. Every " + rempus_name +
               " is a fompus. Bob is a fompus. Bob is a gorpus. Is Tom a lempus or gorpus?";
  s.steps = {"Tom is a wumpus.", "Every wumpus is a yumpus.", "Every yumpus is a zumpus.", "Every zumpus is a lempus."};
  s.answer = "Tom is a lempus.";
  return s;
}

TEST(ProbeGraph, FrontiersHeightsAndReachOfAHandCheckedGraph) {
  const ProsQAGraph g = *hand_sample().graph;
  EXPECT_EQ(frontier_nodes(g, 0), (std::vector<int>{2, 3}));  // the slot of "Tom is a [C]"
  EXPECT_EQ(frontier_nodes(g, 1), (std::vector<int>{2, 3}));
  EXPECT_EQ(frontier_nodes(g, 2), (std::vector<int>{3, 4, 5}));
  EXPECT_EQ(frontier_nodes(g, 3), (std::vector<int>{4, 6, 7}));
  EXPECT_EQ(frontier_nodes(g, 4), (std::vector<int>{7}));
  EXPECT_TRUE(frontier_nodes(g, 5).empty());
  EXPECT_EQ(node_heights(g), (std::vector<int>{3, 1, 2, 2, 1, 1, 0, 0, 0}));
  EXPECT_EQ(node_max_heights(g), (std::vector<int>{4, 1, 3, 2, 1, 1, 0, 0, 0}));
  EXPECT_EQ(nodes_reaching(g, 7), (std::vector<bool>{true, false, true, true, true, false, false, true, false}));
  EXPECT_EQ(probe_prefix_text(g, 0), "Tom is a");
  EXPECT_EQ(probe_prefix_text(g, 2), "Every");
}

TEST(ProbeGraph, RejectsCyclesAndOutOfRangeIndices) {
  ProsQAGraph g = *hand_sample().graph;
  g.edges.push_back({7, 2});  // lempus -> wumpus closes a cycle
  EXPECT_THROW(validate_graph(g, "x"), Error);
  EXPECT_THROW(node_heights(g), Error);
  g = *hand_sample().graph;
  g.edges.push_back({3, 42});
  EXPECT_THROW(validate_graph(g, "x"), Error);
}

// On the official file: the first concept of step k (k >= 1: "Every X is a Y."; k = 0:
// "<root> is a X.") is always in frontier k, and the target is a leaf reached at the
// last step.
TEST(ProbeGraph, StepsOfTheOfficialValidationSetNameFrontierNodes) {
  const std::string path = std::string(COCONUT_SHARED_DATA_DIR) + "/prosqa_valid.json";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "shared data not found: " << path;
  const std::vector<Sample> items = load_dataset_json(path);
  ASSERT_EQ(items.size(), 300u);
  for (size_t i = 0; i < items.size(); ++i) {
    const ProsQAGraph& g = *items[i].graph;
    validate_graph(g, "item");
    for (size_t k = 0; k < items[i].steps.size(); ++k) {
      const std::string& step = items[i].steps[k];
      const std::string head = k == 0 ? g.idx_to_symbol[g.root] + " is a " : std::string("Every ");
      ASSERT_EQ(step.rfind(head, 0), 0u) << "item " << i << " step " << k << ": " << step;
      const std::string rest = step.substr(head.size());
      const std::string word = k == 0 ? rest.substr(0, rest.size() - 1) : rest.substr(0, rest.find(' '));
      const auto f = frontier_nodes(g, static_cast<int>(k));
      bool found = false;
      for (int v : f) found = found || g.idx_to_symbol[v] == word;
      EXPECT_TRUE(found) << "item " << i << " step " << k << " names '" << word << "' outside the frontier";
    }
    EXPECT_EQ(node_heights(g)[g.target], 0) << "item " << i;
    EXPECT_TRUE(nodes_reaching(g, g.target)[g.root]) << "item " << i;
  }
}

// A tiny random model whose weights are scaled up so that its next-token distribution is
// far from uniform (a wrong prompt or a missing feedback then changes the values).
std::unique_ptr<model::GPT2> tiny_model(int vocab) {
  model::GPT2Config c;
  c.vocab_size = vocab;
  c.max_positions = 256;
  c.n_layer = 2;
  c.n_head = 2;
  c.d_model = 16;
  auto m = std::make_unique<model::GPT2>(c);
  m->init_weights(7);
  for (size_t i = 0; i < m->num_params(); ++i) m->params()[i] *= 6.f;
  return m;
}

// Independent value: the whole sequence run one column at a time, each latent column's
// input being the previous column's final-norm state, then log-softmax here.
double reference_value(const model::GPT2& m, const Tokenizer& tok, const Sample& s, int n_latents,
                       const std::vector<int>& prefix, const std::vector<int>& concept_ids) {
  std::vector<int> seq = tok.encode(s.question + "\n");
  seq.push_back(tok.start_latent_id());
  const size_t first_latent = seq.size();
  seq.insert(seq.end(), n_latents, tok.latent_id());
  seq.push_back(tok.end_latent_id());
  seq.insert(seq.end(), prefix.begin(), prefix.end());
  const size_t first_concept = seq.size();
  seq.insert(seq.end(), concept_ids.begin(), concept_ids.end());
  const int T = static_cast<int>(seq.size()), C = m.config().d_model, V = m.config().vocab_size;
  model::Activations acts;
  acts.resize(m.config(), 1, T, false);
  for (int t = 0; t < T; ++t) acts.pos_ids[t] = t, acts.key_mask[t] = 1;
  std::vector<float> emb(C), logits(V);
  double logp = 0;
  for (int t = 0; t < T; ++t) {
    const bool latent = t >= static_cast<int>(first_latent) && t < static_cast<int>(first_latent) + n_latents;
    if (latent) std::copy_n(acts.lnf + static_cast<size_t>(t - 1) * C, C, emb.data());
    else m.embed_tokens(&seq[t], 1, emb.data());
    m.forward_range(acts, t, t + 1, emb.data());
    if (t + 1 >= static_cast<int>(first_concept) && t + 1 < T) {
      m.lm_head_logits(acts.lnf + static_cast<size_t>(t) * C, 1, logits.data());
      double mx = -1e300, sum = 0;
      for (float z : logits) mx = std::max(mx, static_cast<double>(z));
      for (float z : logits) sum += std::exp(z - mx);
      logp += logits[seq[t + 1]] - mx - std::log(sum);
    }
  }
  return std::exp(logp);
}

class ProbeModelTest : public ::testing::Test {
 protected:
  ProbeModelTest() : tok(WordTokenizer::build({hand_sample("red rempus").question, "Every # \n"})) {
    cc.c_thought = 2;  // k latent steps = 2k thoughts
    model = tiny_model(tok.vocab_size());
  }
  WordTokenizer tok;
  CurriculumConfig cc;
  std::unique_ptr<model::GPT2> model;
};

TEST_F(ProbeModelTest, ValuesEqualAnIndependentColumnByColumnForward) {
  // "red rempus" is two word tokens: its value needs one teacher-forced extra column.
  const Sample s = hand_sample("red rempus");
  const ProbeResult r = probe_prosqa(*model, tok, s, cc, 5);
  ASSERT_EQ(r.thoughts.size(), 6u);
  const ProsQAGraph& g = *s.graph;
  double lo = 1, hi = 0;
  bool saw_two_tokens = false;
  for (const ProbeThought& th : r.thoughts) {
    EXPECT_EQ(th.n_thoughts, 2 * th.k);
    std::vector<int> nodes;
    double mass = 0;
    for (size_t i = 0; i < th.frontier.size(); ++i) {
      const ProbeNode& n = th.frontier[i];
      nodes.push_back(n.node);
      if (i > 0) {
        EXPECT_GE(th.frontier[i - 1].value, n.value) << "frontier not sorted by value";
      }
      EXPECT_GE(n.value, 0.0);
      EXPECT_LE(n.value, 1.0);
      EXPECT_EQ(n.word, g.idx_to_symbol[n.node]);
      std::vector<int> ids = tok.encode(n.word);
      EXPECT_EQ(n.n_tokens, static_cast<int>(ids.size()));
      saw_two_tokens = saw_two_tokens || ids.size() == 2;
      const std::vector<int> prefix = th.k == 0 ? tok.encode("Tom is a") : tok.encode("Every");
      const double ref = reference_value(*model, tok, s, th.n_thoughts, prefix, ids);
      EXPECT_NEAR(n.value, ref, 1e-5 * ref) << "k=" << th.k << " node " << n.word;
      lo = std::min(lo, n.value), hi = std::max(hi, n.value);
      mass += n.value;
    }
    std::sort(nodes.begin(), nodes.end());
    EXPECT_EQ(nodes, frontier_nodes(g, th.k)) << "k=" << th.k;
    EXPECT_NEAR(th.frontier_mass, mass, 1e-12);
  }
  EXPECT_TRUE(saw_two_tokens);
  EXPECT_TRUE(r.thoughts[5].frontier.empty());
  // The scaled model is far from uniform, so the comparison above can tell prompts apart.
  EXPECT_GT(hi / lo, 3.0);
}

TEST_F(ProbeModelTest, ZeroThoughtsIsOnePlainForwardOfTheMarkersAndPrefix) {
  const Sample s = hand_sample("red rempus");
  const ProbeResult r = probe_prosqa(*model, tok, s, cc, 0);
  ASSERT_EQ(r.thoughts.size(), 1u);
  // question "\n" <bot> <eot> "Tom is a" in a single forward over all columns.
  std::vector<int> seq = tok.encode(s.question + "\n");
  seq.push_back(tok.start_latent_id());
  seq.push_back(tok.end_latent_id());
  for (int id : tok.encode("Tom is a")) seq.push_back(id);
  const int T = static_cast<int>(seq.size()), C = model->config().d_model, V = model->config().vocab_size;
  model::Activations acts;
  acts.resize(model->config(), 1, T, false);
  for (int t = 0; t < T; ++t) acts.pos_ids[t] = t, acts.key_mask[t] = 1;
  std::vector<float> emb(static_cast<size_t>(T) * C), logits(V);
  model->embed_tokens(seq.data(), T, emb.data());
  model->forward_range(acts, 0, T, emb.data());
  model->lm_head_logits(acts.lnf + static_cast<size_t>(T - 1) * C, 1, logits.data());
  double mx = -1e300, sum = 0;
  for (float z : logits) mx = std::max(mx, static_cast<double>(z));
  for (float z : logits) sum += std::exp(z - mx);
  ASSERT_EQ(r.thoughts[0].frontier.size(), 2u);  // wumpus, yumpus
  for (const ProbeNode& n : r.thoughts[0].frontier) {
    const double p = std::exp(logits[tok.token_id(n.word)] - mx) / sum;
    EXPECT_NEAR(n.value, p, 1e-5 * p) << n.word;
  }
}

TEST_F(ProbeModelTest, IsDeterministic) {
  const Sample s = hand_sample("red rempus");
  const ProbeResult a = probe_prosqa(*model, tok, s, cc, 4), b = probe_prosqa(*model, tok, s, cc, 4);
  ASSERT_EQ(a.thoughts.size(), b.thoughts.size());
  for (size_t k = 0; k < a.thoughts.size(); ++k) {
    ASSERT_EQ(a.thoughts[k].frontier.size(), b.thoughts[k].frontier.size());
    for (size_t i = 0; i < a.thoughts[k].frontier.size(); ++i) {
      EXPECT_EQ(a.thoughts[k].frontier[i].node, b.thoughts[k].frontier[i].node);
      EXPECT_EQ(a.thoughts[k].frontier[i].value, b.thoughts[k].frontier[i].value);  // bit for bit
    }
  }
}

// What the ranks of `coconut probe` under mpirun send rank 0: every field, bit for bit.
TEST_F(ProbeModelTest, ResultsRoundTripThroughJson) {
  const std::vector<ProbeResult> results = {probe_prosqa(*model, tok, hand_sample("red rempus"), cc, 3),
                                            probe_prosqa(*model, tok, hand_sample("red rempus"), cc, 1)};
  const std::vector<ProbeResult> back = probe_results_from_json(probe_results_to_json(results));
  ASSERT_EQ(back.size(), results.size());
  size_t nodes = 0;
  for (size_t r = 0; r < results.size(); ++r) {
    ASSERT_EQ(back[r].thoughts.size(), results[r].thoughts.size());
    for (size_t k = 0; k < results[r].thoughts.size(); ++k) {
      const ProbeThought &got = back[r].thoughts[k], &want = results[r].thoughts[k];
      EXPECT_EQ(got.k, want.k);
      EXPECT_EQ(got.n_thoughts, want.n_thoughts);
      EXPECT_EQ(got.frontier_mass, want.frontier_mass);
      ASSERT_EQ(got.frontier.size(), want.frontier.size());
      for (size_t i = 0; i < want.frontier.size(); ++i, ++nodes) {
        const ProbeNode &g = got.frontier[i], &w = want.frontier[i];
        EXPECT_EQ(std::tie(g.node, g.word, g.n_tokens, g.height, g.max_height, g.reaches_target),
                  std::tie(w.node, w.word, w.n_tokens, w.height, w.max_height, w.reaches_target));
        EXPECT_EQ(g.value, w.value);  // bit for bit
      }
    }
  }
  EXPECT_GT(nodes, 3u);
  EXPECT_THROW(probe_results_from_json("[[{\"k\": 0}]]"), Error);
}

TEST_F(ProbeModelTest, RejectsItemsWithoutGraphMethodsWithoutMarkersAndUnknownWords) {
  Sample s = hand_sample("red rempus");
  CurriculumConfig cot = cc;
  cot.method = Method::cot;
  EXPECT_THROW(probe_prosqa(*model, tok, s, cot, 1), Error);
  Sample no_graph = s;
  no_graph.graph.reset();
  EXPECT_THROW(probe_prosqa(*model, tok, no_graph, cc, 1), Error);
  Sample unknown = s;
  unknown.graph->idx_to_symbol[3] = "florbus";  // not in the tokenizer's words
  try {
    probe_prosqa(*model, tok, unknown, cc, 1);
    FAIL() << "an unknown concept word was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("florbus"), std::string::npos) << e.what();
  }
}

// GPT-2 byte-level BPE: concepts are several tokens with a leading space.
TEST(ProbeBpe, MultiTokenConceptValuesMatchTheReference) {
  const std::string dir = std::string(COCONUT_SOURCE_DIR) + "/tests/fixtures/tokenizer";
  const auto tok = BpeTokenizer::from_dir(dir);
  const std::vector<int> ids = concept_tokens(*tok, "Every", "zorblax");
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(tok->decode(ids), " zorblax");
  Sample s = hand_sample("zorblax");
  const auto m = tiny_model(tok->vocab_size());
  CurriculumConfig cc;
  const ProbeResult r = probe_prosqa(*m, *tok, s, cc, 2);
  bool checked = false;
  for (const ProbeNode& n : r.thoughts[2].frontier) {
    if (n.word != "zorblax") continue;
    EXPECT_EQ(n.n_tokens, static_cast<int>(ids.size()));
    const double ref = reference_value(*m, *tok, s, 2, tok->encode("Every"), ids);
    EXPECT_NEAR(n.value, ref, 1e-5 * ref);
    checked = true;
  }
  EXPECT_TRUE(checked);
}

TEST(ProbeSummary, AveragesRanksCumulativeAndHeights) {
  auto node = [](int id, double v, int h, bool reach) {
    ProbeNode n;
    n.node = id, n.value = v, n.height = h, n.reaches_target = reach;
    return n;
  };
  ProbeResult a, b;
  a.thoughts.resize(2);
  b.thoughts.resize(2);
  a.thoughts[1].k = b.thoughts[1].k = 1;
  a.thoughts[1].frontier = {node(1, 0.6, 1, true), node(2, 0.3, 0, false), node(3, 0.05, 1, false)};
  a.thoughts[1].frontier_mass = 0.95;
  b.thoughts[1].frontier = {node(1, 0.8, 0, true)};
  b.thoughts[1].frontier_mass = 0.8;
  const auto s = summarize_probes({a, b}, 3);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].items, 0);
  const ThoughtSummary& t = s[1];
  EXPECT_EQ(t.items, 2);
  EXPECT_DOUBLE_EQ(t.mean_frontier_size, 2.0);
  EXPECT_DOUBLE_EQ(t.mean_frontier_mass, 0.875);
  EXPECT_EQ(t.rank_count, (std::vector<int>{2, 1, 1}));
  EXPECT_DOUBLE_EQ(t.mean_rank_value[0], 0.7);
  EXPECT_DOUBLE_EQ(t.mean_rank_value[1], 0.3);
  EXPECT_DOUBLE_EQ(t.mean_rank_value[2], 0.05);
  EXPECT_DOUBLE_EQ(t.mean_top_cumulative[0], 0.7);
  EXPECT_DOUBLE_EQ(t.mean_top_cumulative[1], (0.9 + 0.8) / 2);
  EXPECT_DOUBLE_EQ(t.mean_top_cumulative[2], (0.95 + 0.8) / 2);
  ASSERT_EQ(t.by_height.size(), 2u);
  EXPECT_EQ(t.by_height[0].height, 0);
  EXPECT_EQ(t.by_height[0].count, 2);
  EXPECT_EQ(t.by_height[0].count_reaching, 1);
  EXPECT_DOUBLE_EQ(t.by_height[0].mean_value, 0.55);
  EXPECT_DOUBLE_EQ(t.by_height[0].mean_value_reaching, 0.8);
  EXPECT_DOUBLE_EQ(t.by_height[0].mean_value_other, 0.3);
  EXPECT_EQ(t.by_height[1].height, 1);
  EXPECT_DOUBLE_EQ(t.by_height[1].mean_value, 0.325);
}

}  // namespace
}  // namespace coconut::curriculum
