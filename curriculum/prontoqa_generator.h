// ProntoQA-style generator: true/false questions over a fictional ontology (Saparov &
// He 2022, "Language Models Are Greedy Reasoners"), in the format Coconut trains on.
//
// Coconut builds its ProntoQA json from ProntoQA's 5-hop, fictional-ontology, random-
// order output: question = the context sentences + " " + the query, steps = the
// chain-of-thought sentences joined in pairs ("Stella is a zumpus. Zumpuses are
// gorpuses."), answer = "True" or "False". We write the same format ourselves:
//
//   context  the rules of a chain C0 -> C1 -> ... -> C{h-1} -> (not) P, h = hops, plus
//            distractors, shuffled, then the facts "Name is a C0." and a distractor fact
//            "Name is a E." (in random order);
//   query    "True or false: Name is P." or "True or false: Name is not P.";
//   steps    ["Name is a C0. <rule C0->C1>", ..., "Name is a C{h-1}. <rule C{h-1}->P>",
//             "Name is (not) P."]  (h + 1 steps);
//   answer   "True" when the query says what the chain proves, else "False".
//
// Distractors, as in ProntoQA: every chain concept C{i<h-1} has a property of its own
// and a second parent concept B_i with its own property; a concept D unrelated to the
// chain has the opposite of the answer property ("Dumpuses are not floral."); the entity
// also belongs to a concept E with a parent F and a property. Rules take ProntoQA's
// three forms at random: "Every X is a Y.", "Each X is a Y.", "Xs are Ys." (and "Every X
// is P.", "Xs are not P." for properties). No two statements conflict: each property
// family (colour, size, taste, ...) is used once, except the answer property, which D
// negates on a branch the entity is not on.
//
// This is not ProntoQA's generator (its ontology sampler and distractor rules are more
// general); it reproduces the format and the reasoning structure Coconut trains on.
// Every item is a pure function of (seed, index).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "curriculum/dataset.h"

namespace coconut::curriculum {

struct ProntoQAGeneratorConfig {
  int hops = 5;  // rules on the chain from the entity's concept to the property (1..7)
};
// The most hops the word lists allow (each hop takes two concepts and two property
// families); the generator checks the lists agree.
inline constexpr int kMaxProntoQAHops = 7;

Sample generate_prontoqa_sample(uint64_t seed, uint64_t index,
                                const ProntoQAGeneratorConfig& config = {});
std::vector<Sample> generate_prontoqa(uint64_t seed, size_t count,
                                      const ProntoQAGeneratorConfig& config = {});

// Vocabulary (ProntoQA's fictional words), exposed for tests that parse the sentences.
const std::vector<std::string>& prontoqa_concept_words();
const std::vector<std::string>& prontoqa_names();
// Property families: no two properties of one family appear in one item.
const std::vector<std::vector<std::string>>& prontoqa_property_families();
// "wumpus" -> "wumpuses", as the "Xs are Ys." rules write it.
std::string prontoqa_plural(const std::string& noun);

}  // namespace coconut::curriculum
