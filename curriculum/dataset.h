// Datasets as the trainer sees them (DESIGN.md 2.1): a list of samples, each a question,
// its reasoning steps and the answer. ProsQA items also carry their graph, which the
// probe and the statistics use.
//
// Two on-disk formats are read:
//   - the official release format (Coconut's data/*.json): a JSON list of objects
//     {"question": str, "steps": [str], "answer": str} plus, for ProsQA, the graph
//     fields "idx_to_symbol", "edges" ([parent, child] index pairs), "root", "target",
//     "neg_target";
//   - the iCoT text format of GSM8k-Aug (Deng et al.): one item a line,
//     `question||<<a=b>> <<c=d>> #### answer`.
// Every malformed input stops with one message naming the file, the item or line, the
// field and what was expected.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace coconut::curriculum {

// A ProsQA graph: node i is the person name or concept word idx_to_symbol[i]; an edge
// (p, c) states "Every p is a c." (or "p is a c." when p is a person).
struct ProsQAGraph {
  std::vector<std::string> idx_to_symbol;
  std::vector<std::pair<int, int>> edges;
  int root = 0;        // the person asked about (node 0 or 1)
  int target = 0;      // the correct option: a leaf reachable only from root
  int neg_target = 0;  // the wrong option: a leaf reachable only from the other seed
};

// Breadth-first search from `source` over a DAG's adjacency lists (children[u]: the
// nodes of the edges (u, v)): dist[v] edges on a shortest path (-1 where unreachable)
// and paths[v] the number of shortest paths. The generator and the statistics share it.
void shortest_paths(const std::vector<std::vector<int>>& children, int source, std::vector<int>& dist,
                    std::vector<double>& paths);

struct Sample {
  std::string question;
  std::vector<std::string> steps;
  std::string answer;
  std::optional<ProsQAGraph> graph;
};

// Reads the official JSON format. `path` is used in error messages.
std::vector<Sample> load_dataset_json(const std::string& path);
// Same, from text already in memory; `source` names it in error messages.
std::vector<Sample> parse_dataset_json(const std::string& text, const std::string& source);

// Writes the official JSON format (graph fields only for samples that have a graph).
// The file is written under a temporary name and renamed, so a crash never leaves a
// half-written dataset behind.
void save_dataset_json(const std::string& path, const std::vector<Sample>& samples);
std::string dataset_to_json_text(const std::vector<Sample>& samples);

// Reads the iCoT text format: steps are the `<<...>>` groups before "####", the answer
// is the text after "####", stripped. Empty lines are skipped.
std::vector<Sample> convert_icot_text(const std::string& path);
std::vector<Sample> parse_icot_text(const std::string& text, const std::string& source);

}  // namespace coconut::curriculum
