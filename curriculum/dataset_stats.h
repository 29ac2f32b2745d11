// Statistics and invariant checks of a dataset, for `coconut data stats FILE` and for
// comparing generated ProsQA data with the official release.
//
// For every dataset: item count and steps per item. For ProsQA items (those with a
// graph): nodes, edges, length of the shortest reasoning path from root to target (BFS),
// number of shortest paths, persons (parentless nodes) per graph, distinct words, and the
// invariants of the release (../shared/data/README.md):
//   - node ids are topological (every edge goes from a smaller to a larger id) and the
//     seeds 0 and 1 have no parents; root is 0 or 1;
//   - target is a leaf reachable from root and not from the other seed; neg_target is a
//     leaf reachable from the other seed and not from root;
//   - the steps follow a shortest path from root to target ("Tom is a X.", "Every X is a
//     Y.", ...), the answer is "Tom is a <target>.", and the question states every edge
//     exactly once and asks "Is Tom a <target> or <neg_target>?" (either order).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "curriculum/dataset.h"

namespace coconut::curriculum {

// Mean, minimum and maximum of one quantity over the items.
struct Summary {
  double mean = 0;
  double min = 0;
  double max = 0;
  size_t count = 0;
  void add(double x);
};

// Per-graph measurements; `error` is set (and the rest may be partial) when the graph
// breaks an invariant.
struct ProsQAGraphInfo {
  int nodes = 0;
  int edges = 0;
  int persons = 0;
  int shortest_path = -1;        // edges from root to target, -1 if unreachable
  double num_shortest_paths = 0;
  std::vector<std::string> violations;
};
ProsQAGraphInfo analyze_prosqa_item(const Sample& sample);

struct ProsQAStats {
  Summary nodes, edges, shortest_path, num_shortest_paths, persons;
  size_t distinct_words = 0;
  size_t items_with_violations = 0;
  std::vector<std::string> violations;  // "item 12: ...", the first kMaxListed of them
  size_t total_violations = 0;
  static constexpr size_t kMaxListed = 20;
};

struct DatasetStats {
  size_t items = 0;
  Summary steps;                       // steps per item
  Summary question_chars;              // question length in bytes
  std::optional<ProsQAStats> prosqa;   // when at least one item has a graph
  size_t items_without_graph = 0;      // in a dataset where others have one
};

DatasetStats compute_dataset_stats(const std::vector<Sample>& samples);
// Multi-line human-readable report; `name` heads it (the file name).
std::string format_stats(const DatasetStats& stats, const std::string& name);

}  // namespace coconut::curriculum
