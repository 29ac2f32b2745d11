#!/usr/bin/env python3
"""Independent reference for curriculum/dataset_stats.cpp: ProsQA statistics of a file.

    python3 tools/prosqa_stats.py ../shared/data/prosqa_valid.json

Prints, over the items: nodes, edges, shortest root->target path (BFS), number of
shortest paths, persons (parentless nodes) per graph as mean/min/max, and the number
of distinct words. tests/curriculum/test_datasets.cpp compares our C++ statistics of
the official validation split with these numbers.
"""
import json
import sys
from collections import deque


def shortest_paths(n, edges, root, target):
    children = [[] for _ in range(n)]
    for a, b in edges:
        children[a].append(b)
    dist, count = {root: 0}, {root: 1}
    queue = deque([root])
    while queue:
        u = queue.popleft()
        for v in children[u]:
            if v not in dist:
                dist[v] = dist[u] + 1
                count[v] = 0
                queue.append(v)
            if dist[v] == dist[u] + 1:
                count[v] += count[u]
    return dist[target], count[target]


def main(path):
    items = json.load(open(path, encoding="utf-8"))
    columns = {k: [] for k in ("nodes", "edges", "shortest_path", "num_shortest_paths", "persons")}
    words = set()
    for it in items:
        n = len(it["idx_to_symbol"])
        length, count = shortest_paths(n, it["edges"], it["root"], it["target"])
        children_of_someone = {b for _, b in it["edges"]}
        columns["nodes"].append(n)
        columns["edges"].append(len(it["edges"]))
        columns["shortest_path"].append(length)
        columns["num_shortest_paths"].append(count)
        columns["persons"].append(sum(1 for i in range(n) if i not in children_of_someone))
        words.update(it["idx_to_symbol"])
    print(f"items {len(items)}")
    for k, v in columns.items():
        print(f"{k}: mean {sum(v) / len(v):.6f} min {min(v)} max {max(v)}")
    print(f"distinct_words {len(words)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/prosqa_valid.json")
