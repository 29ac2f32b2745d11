// Probing the latent search on ProsQA (DESIGN.md 2.5; the paper's section 5, "latent
// reasoning as a search tree", Figures 7 to 9 of arXiv 2412.06769).
//
// After k latent steps the model is forced out of latent mode and its language head is
// read: the probability it gives to each candidate node as the concept of the next
// step it would write is that node's "value" (the paper's implicit value function).
//
// The exact choices, and why:
//   - Prompt at thought k: question "\n" <bot> <latent>*(k*c) <eot>, the thoughts fed
//     back as in generation (pause tokens when the method does not feed back). k counts
//     latent *steps*, each c continuous thoughts; the paper uses c = 1, so there k is
//     the number of thoughts.
//   - Which word is read. The steps are written "Tom is a X." (the first) and "Every X
//     is a Y." (the rest), and the reference path after k latent steps continues with
//     step k. So after <eot> we teacher-force the words that precede the first concept
//     of that step and read the concept slot:
//       k = 0:  "<root> is a" [C]   (the root's name, e.g. "Tom is a" [C])
//       k >= 1: "Every" [C]         (the paper: "every [Concept A] is a [Concept B]")
//   - Concept tokens: those that encode(prefix + " " + C) adds to encode(prefix), i.e.
//     the tokens the model would emit inside the step text (for GPT-2 BPE " wumpus" with
//     its leading space; one token with the word tokenizer). value(C) = product of
//     their probabilities, each given the prompt, the prefix and the earlier concept
//     tokens (teacher-forced: one extra forward column per extra token), = exp(sum log p).
//   - Frontier at thought k: the nodes the k-th step can name. k >= 1: the nodes
//     reachable from the root by a path of exactly k edges (the paper's "children of
//     Alex" for k = 1, "grandchildren" for k = 2; a node reachable by paths of several
//     lengths belongs to several frontiers). k = 0: the root's children (the slot of
//     "Tom is a [C]").
//   - Height: the paper's, the shortest distance from the node to any leaf (a node with
//     no children has height 0). The longest distance is reported as well (max_height).
//   - reaches_target: the target is reachable from the node (a "correct" frontier node).
#pragma once

#include <string>
#include <vector>

#include "curriculum/dataset.h"
#include "curriculum/samples.h"
#include "curriculum/tokenizer.h"
#include "model/gpt2.h"

namespace coconut::curriculum {

// ---- graph helpers ------------------------------------------------------------------

// Nodes reachable from the root by a path of exactly k >= 1 edges; k = 0 gives the
// root's children (see above). Sorted by node index.
std::vector<int> frontier_nodes(const ProsQAGraph& g, int k);
// Per node: the shortest (paper) and the longest distance to a leaf.
std::vector<int> node_heights(const ProsQAGraph& g);
std::vector<int> node_max_heights(const ProsQAGraph& g);
// Per node: whether g.target is reachable from it (itself included).
std::vector<bool> nodes_reaching(const ProsQAGraph& g, int target);
// Checks that every index is in range and the graph is acyclic; throws naming `where`.
void validate_graph(const ProsQAGraph& g, const std::string& where);

// ---- the probe ----------------------------------------------------------------------

// The text forced after <eot> before the concept at thought k: "<root> is a" or "Every".
std::string probe_prefix_text(const ProsQAGraph& g, int k);
// The tokens that `concept` adds after prefix_text (see above); throws when the
// tokenizer cannot write the concept (e.g. an unknown word) or splits across the prefix.
std::vector<int> concept_tokens(const Tokenizer& tok, const std::string& prefix_text, const std::string& word);

struct ProbeNode {
  int node = 0;            // index in idx_to_symbol
  std::string word;        // the concept, idx_to_symbol[node]
  double value = 0;        // product of the concept tokens' probabilities
  int n_tokens = 0;
  int height = 0;          // shortest distance to a leaf (the paper's)
  int max_height = 0;      // longest distance to a leaf
  bool reaches_target = false;
};

struct ProbeThought {
  int k = 0;                       // latent steps
  int n_thoughts = 0;              // k * c continuous thoughts
  std::vector<ProbeNode> frontier;  // by value, highest first (ties: node index)
  double frontier_mass = 0;        // sum of the frontier values
};

struct ProbeResult {
  std::vector<ProbeThought> thoughts;  // k = 0..max_thoughts
};

// Probes one ProsQA item (it must carry its graph) for k = 0..max_thoughts. The method
// must use the <bot>/<eot> markers (coconut, no_curriculum, pause, pause_as_thought).
ProbeResult probe_prosqa(const model::GPT2& model, const Tokenizer& tok, const Sample& sample,
                         const CurriculumConfig& cc, int max_thoughts);

// ---- aggregation over a dataset -------------------------------------------------------

struct HeightStats {
  int height = 0;
  int count = 0, count_reaching = 0;
  double mean_value = 0, mean_value_reaching = 0, mean_value_other = 0;
};

struct ThoughtSummary {
  int k = 0, n_thoughts = 0;
  int items = 0;                       // items with a non-empty frontier at k
  double mean_frontier_size = 0;
  double mean_frontier_mass = 0;
  std::vector<double> mean_rank_value;  // [r]: mean r+1-th highest value, over items with > r nodes
  std::vector<int> rank_count;          // [r]: how many items have > r frontier nodes
  std::vector<double> mean_top_cumulative;  // [r]: mean sum of the r+1 highest values (fewer when absent)
  std::vector<HeightStats> by_height;   // ascending height, heights that occur only
};

// Averages per thought over items; top_ranks ranks are reported (the paper shows 3).
std::vector<ThoughtSummary> summarize_probes(const std::vector<ProbeResult>& results, int top_ranks = 3);

// Results as JSON and back (every field, every item): how the ranks of `coconut probe`
// under mpirun send theirs to rank 0.
std::string probe_results_to_json(const std::vector<ProbeResult>& results);
std::vector<ProbeResult> probe_results_from_json(const std::string& text);

// JSON report: the summary, and every item's frontiers.
void write_probe_report(const std::string& path, const std::vector<ThoughtSummary>& summary,
                        const std::vector<ProbeResult>& results, const std::string& dataset_name);

}  // namespace coconut::curriculum
