#!/usr/bin/env python3
"""Extract the person names and concept words used in the official ProsQA release.

The ProsQA generator (curriculum/prosqa_generator.cpp) draws its names from these two
lists; this script is how they were obtained, and reruns to check them:

    python3 tools/prosqa_words.py ../shared/data/prosqa_valid.json

A person is a node without parents (it appears as "Tom is a X."), a concept is any other
node. Prints both lists, sorted, as C++ initialisers.
"""
import json
import sys


def main(path):
    items = json.load(open(path, encoding="utf-8"))
    persons, concepts = set(), set()
    for item in items:
        has_parent = {child for _, child in item["edges"]}
        for i, symbol in enumerate(item["idx_to_symbol"]):
            (concepts if i in has_parent else persons).add(symbol)
    assert not persons & concepts, "a word is both a person and a concept"
    for name, words in (("kPersonNames", persons), ("kConceptWords", concepts)):
        body = ", ".join(f'"{w}"' for w in sorted(words))
        print(f"// {len(words)} words\nconst char* const {name}[] = {{{body}}};")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/prosqa_valid.json")
