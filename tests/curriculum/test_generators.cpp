// Tests of the ProsQA, ProntoQA and running-sum generators: determinism by seed, the
// statistics of generated ProsQA against the official validation split (computed here
// from the file), every ProsQA invariant, a ProntoQA checker that re-derives each answer
// by forward chaining over the question's own sentences, and running sums re-added from
// the question's digits.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "curriculum/dataset.h"
#include "curriculum/dataset_stats.h"
#include "curriculum/prontoqa_generator.h"
#include "curriculum/prosqa_generator.h"
#include "curriculum/running_sum_generator.h"
#include "runtime/check.h"

namespace cc = coconut::curriculum;

namespace {

const std::string kData = COCONUT_SHARED_DATA_DIR;

bool same_items(const std::vector<cc::Sample>& a, const std::vector<cc::Sample>& b) {
  return cc::dataset_to_json_text(a) == cc::dataset_to_json_text(b);
}

// ---- ProsQA ----

TEST(ProsQAGenerator, DeterministicBySeedAndIndex) {
  const auto a = cc::generate_prosqa(7, 30);
  const auto b = cc::generate_prosqa(7, 30);
  EXPECT_TRUE(same_items(a, b));
  EXPECT_FALSE(same_items(a, cc::generate_prosqa(8, 30)));
  // Item i depends on (seed, i) only: a longer run starts with the shorter one.
  const auto longer = cc::generate_prosqa(7, 40);
  EXPECT_TRUE(same_items(a, std::vector<cc::Sample>(longer.begin(), longer.begin() + 30)));
  EXPECT_TRUE(same_items({a[17]}, {cc::generate_prosqa_sample(7, 17)}));
  // Items differ from each other.
  std::set<std::string> questions;
  for (const auto& s : a) questions.insert(s.question);
  EXPECT_EQ(questions.size(), a.size());
}

TEST(ProsQAGenerator, OutputFormatMatchesTheRelease) {
  const cc::Sample s = cc::generate_prosqa_sample(3, 0);
  ASSERT_TRUE(s.graph.has_value());
  const auto& g = *s.graph;
  const auto& sym = g.idx_to_symbol;
  EXPECT_EQ(s.answer, sym[g.root] + " is a " + sym[g.target] + ".");
  EXPECT_TRUE(s.steps.front().starts_with(sym[g.root] + " is a "));
  for (size_t i = 1; i < s.steps.size(); ++i) EXPECT_TRUE(s.steps[i].starts_with("Every ")) << s.steps[i];
  EXPECT_TRUE(s.steps.back().ends_with(" is a " + sym[g.target] + "."));
  EXPECT_TRUE(s.question.ends_with("Is " + sym[g.root] + " a " + sym[g.target] + " or " + sym[g.neg_target] + "?") ||
              s.question.ends_with("Is " + sym[g.root] + " a " + sym[g.neg_target] + " or " + sym[g.target] + "?"))
      << s.question;
  // Round trip through the official JSON format.
  const auto back = cc::parse_dataset_json(cc::dataset_to_json_text({s}), "generated");
  EXPECT_TRUE(same_items(back, {s}));
}

// The generated distribution must match the release: each mean within 10% of the
// validation split's, every invariant on every item, 14..28 nodes, the release's words.
TEST(ProsQAGenerator, StatisticsMatchTheOfficialValidationSplit) {
  const std::string path = kData + "/prosqa_valid.json";
  if (!std::filesystem::exists(path)) {
    GTEST_SKIP() << "reference data " << path << " is absent (the shared data folder is not part of the project)";
  }
  const auto official_items = cc::load_dataset_json(path);
  const auto official = *cc::compute_dataset_stats(official_items).prosqa;
  const auto generated_items = cc::generate_prosqa(2024, 2000);
  const auto stats = cc::compute_dataset_stats(generated_items);
  ASSERT_TRUE(stats.prosqa.has_value());
  const auto& gen = *stats.prosqa;
  EXPECT_EQ(gen.nodes.count, 2000u);

  const auto within_10_percent = [](const char* what, const cc::Summary& g, const cc::Summary& o) {
    EXPECT_LT(std::abs(g.mean - o.mean), 0.10 * o.mean)
        << what << ": generated mean " << g.mean << ", official " << o.mean;
  };
  within_10_percent("nodes", gen.nodes, official.nodes);
  within_10_percent("edges", gen.edges, official.edges);
  within_10_percent("shortest path", gen.shortest_path, official.shortest_path);
  within_10_percent("number of shortest paths", gen.num_shortest_paths, official.num_shortest_paths);
  within_10_percent("persons", gen.persons, official.persons);

  EXPECT_EQ(gen.items_with_violations, 0u) << cc::format_stats(stats, "generated");
  EXPECT_GE(gen.nodes.min, 14);
  EXPECT_LE(gen.nodes.max, 28);
  EXPECT_GE(gen.shortest_path.min, 3);
  EXPECT_GE(gen.persons.min, 2);

  // Root and option order.
  int root_one = 0, target_first = 0;
  for (const auto& s : generated_items) {
    root_one += s.graph->root;
    const auto& sym = s.graph->idx_to_symbol;
    target_first += s.question.ends_with(" a " + sym[s.graph->target] + " or " + sym[s.graph->neg_target] + "?");
  }
  // The release has root = 1 on 65% of its 300 items (node 1 gets more descendants, see
  // prosqa_generator.h); a symmetric rule would give 50%.
  EXPECT_GT(root_one, 2000 * 0.55);
  EXPECT_LT(root_one, 2000 * 0.75);
  EXPECT_GT(target_first, 2000 * 0.45);
  EXPECT_LT(target_first, 2000 * 0.55);

  // The word lists are exactly the release's persons (parentless nodes) and concepts.
  std::set<std::string> persons, concepts;
  for (const auto& s : official_items) {
    std::set<int> has_parent;
    for (const auto& e : s.graph->edges) has_parent.insert(e.second);
    for (int v = 0; v < static_cast<int>(s.graph->idx_to_symbol.size()); ++v) {
      (has_parent.count(v) ? concepts : persons).insert(s.graph->idx_to_symbol[v]);
    }
  }
  EXPECT_EQ(persons, std::set<std::string>(cc::prosqa_person_names().begin(), cc::prosqa_person_names().end()));
  EXPECT_EQ(concepts, std::set<std::string>(cc::prosqa_concept_words().begin(), cc::prosqa_concept_words().end()));
}

TEST(ProsQAGenerator, RejectsImpossibleConfigs) {
  cc::ProsQAGeneratorConfig c;
  c.num_nodes = 3;
  EXPECT_THROW(cc::generate_prosqa_sample(1, 0, c), coconut::Error);
  c = {};
  c.num_nodes = 41;
  EXPECT_THROW(cc::generate_prosqa_sample(1, 0, c), coconut::Error);
  c = {};
  c.num_nodes = 6;
  c.min_path_length = 10;  // no 6-node graph has a path of 10
  c.max_attempts = 50;
  try {
    cc::generate_prosqa_sample(1, 0, c);
    ADD_FAILURE() << "expected an error";
  } catch (const coconut::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no valid graph in 50 attempts"), std::string::npos) << e.what();
  }
}

// ---- ProntoQA ----

// A statement of the question, read back from text.
struct Statement {
  enum Kind { kIsA, kProperty, kFact } kind;
  std::string subject, object;  // concept/name and concept/adjective
  bool positive = true;
};

class ProntoQAReader {
 public:
  ProntoQAReader() {
    for (const auto& w : cc::prontoqa_concept_words()) {
      concepts_.insert(w);
      singular_[cc::prontoqa_plural(w)] = w;
    }
    for (const auto& f : cc::prontoqa_property_families()) adjectives_.insert(f.begin(), f.end());
    names_.insert(cc::prontoqa_names().begin(), cc::prontoqa_names().end());
  }

  // Parses one sentence ending in "."; fails the test when it is not a known form.
  Statement parse(std::string s) const {
    EXPECT_TRUE(s.ends_with(".")) << s;
    s.pop_back();
    Statement st{Statement::kIsA, "", "", true};
    std::string predicate;
    if (s.starts_with("Every ") || s.starts_with("Each ")) {
      const size_t is = s.find(" is ");
      st.subject = s.substr(s.find(' ') + 1, is - s.find(' ') - 1);
      predicate = s.substr(is + 4);
      EXPECT_TRUE(concepts_.count(st.subject)) << s;
    } else if (s.find(" are ") != std::string::npos) {
      const size_t are = s.find(" are ");
      std::string plural = s.substr(0, are);
      plural[0] = static_cast<char>(std::tolower(plural[0]));
      EXPECT_TRUE(singular_.count(plural)) << s;
      st.subject = singular_.count(plural) ? singular_.at(plural) : plural;
      predicate = s.substr(are + 5);
      if (singular_.count(predicate)) {  // "Xs are Ys.": no article to check
        st.object = singular_.at(predicate);
        return st;
      }
    } else {
      const size_t is = s.find(" is ");
      st.kind = Statement::kFact;
      st.subject = s.substr(0, is);
      predicate = s.substr(is + 4);
      EXPECT_TRUE(names_.count(st.subject)) << s;
    }
    if (predicate.starts_with("a ") || predicate.starts_with("an ")) {
      st.object = predicate.substr(predicate.find(' ') + 1);
      EXPECT_TRUE(concepts_.count(st.object)) << s;
      const bool vowel = std::string("aeiou").find(st.object[0]) != std::string::npos;
      EXPECT_EQ(predicate.starts_with("an "), vowel) << "article in: " << s;
      return st;
    }
    st.kind = Statement::kProperty;
    if (predicate.starts_with("not ")) {
      st.positive = false;
      predicate = predicate.substr(4);
    }
    st.object = predicate;
    EXPECT_TRUE(adjectives_.count(st.object)) << s;
    return st;
  }

 private:
  std::set<std::string> concepts_, adjectives_, names_;
  std::map<std::string, std::string> singular_;
};

std::vector<std::string> split_sentences(const std::string& text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(". ", pos);
    if (end == std::string::npos) end = text.size() - 1;
    out.push_back(text.substr(pos, end + 1 - pos));
    pos = end + 2;
  }
  return out;
}

// Checks one item: the format, that the answer follows from the question's statements
// (forward chaining from the facts), that nothing derivable is contradictory, and that
// the steps are a proof made of the question's own rules.
void check_prontoqa_item(const cc::Sample& s, int hops, const ProntoQAReader& reader) {
  const std::string marker = " True or false: ";
  const size_t q = s.question.rfind(marker);
  ASSERT_NE(q, std::string::npos) << s.question;
  const std::string context = s.question.substr(0, q);
  const Statement query = reader.parse(s.question.substr(q + marker.size()));
  ASSERT_EQ(query.kind, Statement::kProperty);  // "Alex is (not) P." parses as a property of Alex
  ASSERT_TRUE(s.answer == "True" || s.answer == "False") << s.answer;

  const std::vector<std::string> sentences = split_sentences(context);
  EXPECT_EQ(sentences.size(), static_cast<size_t>(4 * (hops - 1) + 4 + 2));
  std::set<std::string> sentence_set(sentences.begin(), sentences.end());
  std::multimap<std::string, Statement> rules_of;
  std::set<std::string> member;  // concepts the entity belongs to
  for (const auto& text : sentences) {
    const Statement st = reader.parse(text);
    if (st.kind == Statement::kFact) {
      EXPECT_EQ(st.subject, query.subject);
      member.insert(st.object);
    } else {
      rules_of.emplace(st.subject, st);
    }
  }
  EXPECT_EQ(member.size(), 2u);  // the chain's first concept and the distractor concept
  // Forward chaining over "is a" rules, then the properties of every concept reached.
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& [subject, st] : rules_of) {
      if (st.kind == Statement::kIsA && member.count(subject) && !member.count(st.object)) {
        member.insert(st.object);
        grew = true;
      }
    }
  }
  std::map<std::string, bool> derived;
  for (const auto& [subject, st] : rules_of) {
    if (st.kind != Statement::kProperty || !member.count(subject)) continue;
    auto [it, fresh] = derived.emplace(st.object, st.positive);
    EXPECT_TRUE(fresh || it->second == st.positive) << "contradiction on " << st.object;
  }
  ASSERT_TRUE(derived.count(query.object)) << "the query property does not follow: " << s.question;
  EXPECT_EQ(s.answer, derived[query.object] == query.positive ? "True" : "False");
  // A distractor states the opposite of the answer property for a concept off the chain.
  bool distractor = false;
  for (const auto& [subject, st] : rules_of) {
    distractor |= st.kind == Statement::kProperty && st.object == query.object &&
                  st.positive != derived[query.object] && !member.count(subject);
  }
  EXPECT_TRUE(distractor);

  // Steps: "Name is a C_i. <rule C_i -> C_i+1>" ..., then "Name is (not) P.".
  ASSERT_EQ(s.steps.size(), static_cast<size_t>(hops + 1));
  std::string at;
  for (int i = 0; i < hops; ++i) {
    const auto parts = split_sentences(s.steps[i]);
    ASSERT_EQ(parts.size(), 2u) << s.steps[i];
    const Statement fact = reader.parse(parts[0]), rule = reader.parse(parts[1]);
    EXPECT_EQ(fact.kind, Statement::kFact);
    EXPECT_TRUE(i > 0 || sentence_set.count(parts[0])) << "the first step restates a given fact";
    EXPECT_TRUE(i == 0 || fact.object == at) << s.steps[i];
    EXPECT_TRUE(sentence_set.count(parts[1])) << "rule not in the question: " << parts[1];
    EXPECT_EQ(rule.subject, fact.object);
    EXPECT_EQ(rule.kind, i + 1 < hops ? Statement::kIsA : Statement::kProperty);
    at = rule.object;
  }
  const Statement last = reader.parse(s.steps.back());
  EXPECT_EQ(last.object, query.object);
  EXPECT_EQ(last.positive, derived[query.object]);
  EXPECT_EQ(at, query.object);
}

TEST(ProntoQAGenerator, ItemsAreSoundAndInTheCoconutFormat) {
  const ProntoQAReader reader;
  const auto items = cc::generate_prontoqa(11, 300);
  int true_answers = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    SCOPED_TRACE("item " + std::to_string(i));
    check_prontoqa_item(items[i], 5, reader);
    true_answers += items[i].answer == "True";
    EXPECT_FALSE(items[i].graph.has_value());
  }
  EXPECT_GT(true_answers, 300 * 0.4);
  EXPECT_LT(true_answers, 300 * 0.6);
}

TEST(ProntoQAGenerator, OtherHopCounts) {
  const ProntoQAReader reader;
  for (int hops : {1, 2, 7}) {
    cc::ProntoQAGeneratorConfig c;
    c.hops = hops;
    for (const auto& s : cc::generate_prontoqa(5, 20, c)) {
      SCOPED_TRACE("hops " + std::to_string(hops));
      check_prontoqa_item(s, hops, reader);
    }
  }
  cc::ProntoQAGeneratorConfig bad;
  bad.hops = 0;
  EXPECT_THROW(cc::generate_prontoqa_sample(1, 0, bad), coconut::Error);
  bad.hops = 8;
  EXPECT_THROW(cc::generate_prontoqa_sample(1, 0, bad), coconut::Error);
}

TEST(ProntoQAGenerator, DeterministicBySeedAndIndex) {
  const auto a = cc::generate_prontoqa(3, 25);
  EXPECT_TRUE(same_items(a, cc::generate_prontoqa(3, 25)));
  EXPECT_FALSE(same_items(a, cc::generate_prontoqa(4, 25)));
  EXPECT_TRUE(same_items({a[9]}, {cc::generate_prontoqa_sample(3, 9)}));
}

// ---- running sum ----

// The digits of "sum d1 d2 ... dK mod 10".
std::vector<int> question_digits(const std::string& question) {
  std::istringstream in(question);
  std::string word;
  in >> word;
  EXPECT_EQ(word, "sum");
  std::vector<int> digits;
  while (in >> word && word != "mod") {
    EXPECT_TRUE(word.size() == 1 && std::isdigit(static_cast<unsigned char>(word[0]))) << word;
    digits.push_back(word[0] - '0');
  }
  in >> word;
  EXPECT_EQ(word, "10");
  return digits;
}

TEST(RunningSumGenerator, StepsArePartialSumsOfTheQuestionsDigits) {
  for (int k : {2, 5, 9}) {
    SCOPED_TRACE("digits " + std::to_string(k));
    const auto items = cc::generate_running_sum(4, 200, {.digits = k});
    std::map<std::string, int> answers;
    for (const cc::Sample& s : items) {
      const std::vector<int> d = question_digits(s.question);
      ASSERT_EQ(static_cast<int>(d.size()), k) << s.question;
      ASSERT_EQ(static_cast<int>(s.steps.size()), k - 1) << s.question;
      int total = d[0];
      for (int i = 1; i < k; ++i) {
        const int next = (total + d[i]) % 10;
        EXPECT_EQ(s.steps[i - 1], std::to_string(total) + " + " + std::to_string(d[i]) + " = " + std::to_string(next));
        total = next;
      }
      EXPECT_EQ(s.answer, std::to_string(total));
      EXPECT_FALSE(s.graph.has_value());
      ++answers[s.answer];
    }
    // Ten answers, none far from a tenth of 200 (each count is Binomial(200, 0.1): sd 4.2).
    EXPECT_EQ(answers.size(), 10u);
    for (const auto& [answer, n] : answers) EXPECT_TRUE(n >= 4 && n <= 40) << answer << ": " << n;
  }
}

TEST(RunningSumGenerator, DeterministicBySeedAndIndexAndChecksItsDigitCount) {
  const auto a = cc::generate_running_sum(3, 25);
  EXPECT_TRUE(same_items(a, cc::generate_running_sum(3, 25)));
  EXPECT_FALSE(same_items(a, cc::generate_running_sum(4, 25)));
  EXPECT_TRUE(same_items({a[9]}, {cc::generate_running_sum_sample(3, 9)}));
  EXPECT_EQ(question_digits(a[0].question).size(), 5u);  // the default
  EXPECT_THROW(cc::generate_running_sum_sample(1, 0, {.digits = 1}), coconut::Error);
  EXPECT_THROW(cc::generate_running_sum_sample(1, 0, {.digits = cc::kMaxRunningSumDigits + 1}), coconut::Error);
  EXPECT_NO_THROW(cc::generate_running_sum_sample(1, 0, {.digits = cc::kMaxRunningSumDigits}));
}

}  // namespace
