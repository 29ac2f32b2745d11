// ProntoQA-style generator: builds one chain with its distractors and writes the
// sentences. The format and structure are described in prontoqa_generator.h.
#include "curriculum/prontoqa_generator.h"

#include <cctype>

#include "curriculum/prosqa_generator.h"  // GeneratorRng
#include "runtime/check.h"

namespace coconut::curriculum {

const std::vector<std::string>& prontoqa_concept_words() {
  static const std::vector<std::string> words = {
      "wumpus", "yumpus", "zumpus",  "dumpus",  "rompus",  "numpus", "tumpus", "vumpus", "impus",
      "jompus", "gorpus", "shumpus", "lempus", "sterpus", "grimpus", "lorpus", "brimpus"};
  return words;
}

const std::vector<std::string>& prontoqa_names() {
  static const std::vector<std::string> names = {"Alex", "Sally", "Max",   "Sam", "Fae",
                                                 "Rex",  "Stella", "Wren", "Polly"};
  return names;
}

const std::vector<std::vector<std::string>>& prontoqa_property_families() {
  static const std::vector<std::vector<std::string>> families = {
      {"blue", "red", "brown", "orange"},
      {"small", "large"},
      {"metallic", "wooden"},
      {"luminous", "dull"},
      {"hot", "cold"},
      {"sweet", "sour", "bitter", "salty", "spicy"},
      {"happy", "sad", "feisty", "nervous", "shy"},
      {"kind", "mean", "amenable", "aggressive"},
      {"transparent", "opaque"},
      {"floral", "fruity", "earthy"},
      {"snowy", "rainy", "windy", "sunny"},
      {"loud", "muffled"},
      {"fast", "slow"},
      {"rough", "smooth"},
  };
  return families;
}

std::string prontoqa_plural(const std::string& noun) {
  const auto ends_with = [&](const char* s) {
    const std::string suffix(s);
    return noun.size() >= suffix.size() &&
           noun.compare(noun.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with("s") || ends_with("x") || ends_with("z") || ends_with("ch") || ends_with("sh")) {
    return noun + "es";
  }
  return noun + "s";
}

namespace {

constexpr uint64_t kProntoQAStream = 0x50524F4E544F5141ull;  // "PRONTOQA"

std::string capitalize(std::string s) {
  if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
  return s;
}

std::string with_article(const std::string& noun) {
  const bool vowel = std::string("aeiou").find(noun[0]) != std::string::npos;
  return (vowel ? "an " : "a ") + noun;
}

// "Every X is a Y." / "Each X is a Y." / "Xs are Ys."
std::string isa_rule(GeneratorRng& rng, const std::string& x, const std::string& y) {
  switch (rng.below(3)) {
    case 0: return fmt::format("Every {} is {}.", x, with_article(y));
    case 1: return fmt::format("Each {} is {}.", x, with_article(y));
    default: return fmt::format("{} are {}.", capitalize(prontoqa_plural(x)), prontoqa_plural(y));
  }
}

// "Every X is (not) P." / "Each X is (not) P." / "Xs are (not) P."
std::string property_rule(GeneratorRng& rng, const std::string& x, const std::string& p, bool positive) {
  const char* neg = positive ? "" : "not ";
  switch (rng.below(3)) {
    case 0: return fmt::format("Every {} is {}{}.", x, neg, p);
    case 1: return fmt::format("Each {} is {}{}.", x, neg, p);
    default: return fmt::format("{} are {}{}.", capitalize(prontoqa_plural(x)), neg, p);
  }
}

}  // namespace

Sample generate_prontoqa_sample(uint64_t seed, uint64_t index, const ProntoQAGeneratorConfig& config) {
  const int h = config.hops;
  // Words: h chain concepts, h-1 second parents, D, E, F. Families: 2h (see below).
  const int max_hops = std::min<int>((static_cast<int>(prontoqa_concept_words().size()) - 2) / 2,
                                     static_cast<int>(prontoqa_property_families().size()) / 2);
  COCONUT_CHECK(max_hops >= kMaxProntoQAHops, "ProntoQA generator: the word lists allow {} hops, not {}", max_hops,
                kMaxProntoQAHops);
  COCONUT_CHECK(h >= 1 && h <= kMaxProntoQAHops, "ProntoQA generator: hops = {} (expected 1..{})", h, kMaxProntoQAHops);
  GeneratorRng rng(seed, kProntoQAStream, index);

  std::vector<std::string> words = prontoqa_concept_words();
  rng.shuffle(words);
  size_t next_word = 0;
  const auto take_word = [&] { return words[next_word++]; };
  std::vector<std::string> chain(h), second_parent(h - 1);
  for (auto& c : chain) c = take_word();
  for (auto& b : second_parent) b = take_word();
  const std::string unrelated = take_word(), extra = take_word(), extra_parent = take_word();

  // One adjective per family; the first family gives the answer property.
  std::vector<int> families(prontoqa_property_families().size());
  for (size_t i = 0; i < families.size(); ++i) families[i] = static_cast<int>(i);
  rng.shuffle(families);
  size_t next_family = 0;
  const auto take_property = [&] { return rng.pick(prontoqa_property_families()[families[next_family++]]); };
  const std::string name = rng.pick(prontoqa_names());
  const std::string answer_property = take_property();
  const bool proven_positive = rng.coin();

  // Rules: the chain (kept for the steps) and the distractors.
  std::vector<std::string> chain_rules;  // chain_rules[i]: chain[i] -> chain[i+1] (or -> P)
  std::vector<std::string> rules;
  // A distractor property: a fresh family, negated 30% of the time. (Separate statements
  // keep the order of random draws fixed; argument evaluation order is unspecified.)
  const auto side_property = [&](const std::string& subject) {
    const std::string property = take_property();
    const bool positive = rng.below(10) >= 3;
    return property_rule(rng, subject, property, positive);
  };
  for (int i = 0; i + 1 < h; ++i) {
    chain_rules.push_back(isa_rule(rng, chain[i], chain[i + 1]));
    rules.push_back(chain_rules.back());
    rules.push_back(side_property(chain[i]));
    rules.push_back(isa_rule(rng, chain[i], second_parent[i]));
    rules.push_back(side_property(second_parent[i]));
  }
  chain_rules.push_back(property_rule(rng, chain[h - 1], answer_property, proven_positive));
  rules.push_back(chain_rules.back());
  rules.push_back(property_rule(rng, unrelated, answer_property, !proven_positive));
  rules.push_back(isa_rule(rng, extra, extra_parent));
  rules.push_back(side_property(extra));
  rng.shuffle(rules);

  std::vector<std::string> facts = {fmt::format("{} is {}.", name, with_article(chain[0])),
                                    fmt::format("{} is {}.", name, with_article(extra))};
  rng.shuffle(facts);

  const bool query_positive = rng.coin();
  Sample s;
  for (const std::string& r : rules) s.question += r + " ";
  for (const std::string& f : facts) s.question += f + " ";
  s.question += fmt::format("True or false: {} is {}{}.", name, query_positive ? "" : "not ",
                            answer_property);

  // Chain of thought "Name is a C_i." + rule, in pairs as Coconut joins them.
  for (int i = 0; i < h; ++i) {
    s.steps.push_back(fmt::format("{} is {}. {}", name, with_article(chain[i]), chain_rules[i]));
  }
  s.steps.push_back(fmt::format("{} is {}{}.", name, proven_positive ? "" : "not ", answer_property));
  s.answer = query_positive == proven_positive ? "True" : "False";
  return s;
}

std::vector<Sample> generate_prontoqa(uint64_t seed, size_t count, const ProntoQAGeneratorConfig& config) {
  return generate_items(count, [&](uint64_t i) { return generate_prontoqa_sample(seed, i, config); });
}

}  // namespace coconut::curriculum
