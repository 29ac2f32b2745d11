// Tests of curriculum/dataset (JSON and iCoT loaders) and curriculum/dataset_stats.
// Exact expectations on the reference files were read by hand from
// ../shared/data/{gsm8k_valid.txt,prosqa_valid.json}; the statistics of the ProsQA
// validation split come from tools/prosqa_stats.py (an independent Python computation).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "curriculum/dataset.h"
#include "curriculum/dataset_stats.h"
#include "runtime/check.h"

namespace cc = coconut::curriculum;
namespace fs = std::filesystem;

namespace {

const std::string kData = COCONUT_SHARED_DATA_DIR;

#define SKIP_WITHOUT(file)                                                               \
  if (!fs::exists(kData + "/" + file))                                                   \
  GTEST_SKIP() << "reference data " << kData << "/" << file                              \
               << " is absent (the shared data folder is not part of the project)"

// The message of the coconut::Error `f` throws (fails the test when it does not throw).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const coconut::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a coconut::Error";
  return "";
}

std::string json_error(const std::string& text) {
  return error_of([&] { cc::parse_dataset_json(text, "mem.json"); });
}

std::string icot_error(const std::string& text) {
  return error_of([&] { cc::parse_icot_text(text, "mem.txt"); });
}

fs::path temp_file(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("coconut_test_datasets_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir / name;
}

// ---- GSM8k in the iCoT text format ----

TEST(IcotText, ConvertsTheValidationSplit) {
  SKIP_WITHOUT("gsm8k_valid.txt");
  const auto items = cc::convert_icot_text(kData + "/gsm8k_valid.txt");
  ASSERT_EQ(items.size(), 500u);

  EXPECT_EQ(items[0].question,
            "John cuts his grass to 2 inches.  It grows .5 inches per month.  When it gets to 4 "
            "inches he cuts it back down to 2 inches.  It cost $100 to get his grass cut.  How "
            "much does he pay per year?");
  EXPECT_EQ(items[0].steps,
            (std::vector<std::string>{"<<4-2=2>>", "<<2/.5=4>>", "<<12/4=3>>", "<<100*3=300>>"}));
  EXPECT_EQ(items[0].answer, "300");
  EXPECT_FALSE(items[0].graph.has_value());

  // Line 90 has no reasoning steps at all: "...99 books now?|| #### 9".
  EXPECT_TRUE(items[89].steps.empty());
  EXPECT_EQ(items[89].answer, "9");
  EXPECT_TRUE(items[89].question.ends_with("if she has 99 books now?"));

  // Line 193: the answer keeps its thousands separator (scoring removes commas).
  EXPECT_EQ(items[192].answer, "5,000");
  EXPECT_EQ(items[192].steps.size(), 4u);
  EXPECT_EQ(items[192].steps[3], "<<3000/3=1000>>");

  EXPECT_EQ(items[499].steps, (std::vector<std::string>{"<<4+3+2+2=11>>", "<<11-2=9>>"}));
  EXPECT_EQ(items[499].answer, "9");
  EXPECT_TRUE(items[499].question.starts_with("It was Trevor's job"));
}

TEST(IcotText, ParsesEdgeCases) {
  const auto items = cc::parse_icot_text("Q one?||<<1+1=2>>  <<2*3=6>> #### 6\r\n\n   \nQ two?|| ####  -4 \n", "t");
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].question, "Q one?");
  EXPECT_EQ(items[0].steps, (std::vector<std::string>{"<<1+1=2>>", "<<2*3=6>>"}));
  EXPECT_EQ(items[0].answer, "6");
  EXPECT_TRUE(items[1].steps.empty());
  EXPECT_EQ(items[1].answer, "-4");
}

TEST(IcotText, MalformedLinesAreNamedByNumber) {
  std::string e = icot_error("Q?||<<1=1>> #### 1\n\nno separator here #### 3\n");
  EXPECT_NE(e.find("mem.txt: line 3"), std::string::npos) << e;
  EXPECT_NE(e.find("'||'"), std::string::npos) << e;

  e = icot_error("Q?||<<1=1>> 1\n");
  EXPECT_NE(e.find("line 1"), std::string::npos) << e;
  EXPECT_NE(e.find("'####'"), std::string::npos) << e;

  e = icot_error("Q?||<<1=1>>\nQ?||4-2=2 #### 2\n");
  EXPECT_NE(e.find("line 1"), std::string::npos) << e;  // first error wins: no '####'

  e = icot_error("Q?||4-2=2 #### 2\n");
  EXPECT_NE(e.find("'<<a=b>>'"), std::string::npos) << e;
  EXPECT_NE(e.find("4-2=2"), std::string::npos) << e;

  e = icot_error("Q?||<<4-2=2 #### 2\n");
  EXPECT_NE(e.find("no closing '>>'"), std::string::npos) << e;

  e = icot_error("Q?||<<1=1>> ####   \n");
  EXPECT_NE(e.find("answer after '####' is empty"), std::string::npos) << e;

  e = icot_error("Q?||<<1=1>>||<<2=2>> #### 2\n");
  EXPECT_NE(e.find("exactly one '||'"), std::string::npos) << e;

  e = icot_error("||<<1=1>> #### 1\n");
  EXPECT_NE(e.find("question before '||' is empty"), std::string::npos) << e;

  e = error_of([] { cc::convert_icot_text("/nonexistent/gsm.txt"); });
  EXPECT_NE(e.find("/nonexistent/gsm.txt: cannot open"), std::string::npos) << e;
}

// ---- the official JSON format ----

TEST(DatasetJson, LoadsTheProsQAValidationSplit) {
  SKIP_WITHOUT("prosqa_valid.json");
  const auto items = cc::load_dataset_json(kData + "/prosqa_valid.json");
  ASSERT_EQ(items.size(), 300u);

  const cc::Sample& s = items[0];
  EXPECT_TRUE(s.question.starts_with("Every shumpus is a rempus. Every shumpus is a yimpus."));
  EXPECT_TRUE(s.question.ends_with("Tom is a dumpus. Every rempus is a rorpus. Is Tom a lempus or scrompus?"));
  EXPECT_EQ(s.steps, (std::vector<std::string>{"Tom is a terpus.", "Every terpus is a brimpus.",
                                               "Every brimpus is a lempus."}));
  EXPECT_EQ(s.answer, "Tom is a lempus.");
  ASSERT_TRUE(s.graph.has_value());
  EXPECT_EQ(s.graph->idx_to_symbol.size(), 18u);
  EXPECT_EQ(s.graph->idx_to_symbol[0], "Davis");
  EXPECT_EQ(s.graph->idx_to_symbol[17], "dumpus");
  ASSERT_EQ(s.graph->edges.size(), 23u);
  EXPECT_EQ(s.graph->edges[0], std::make_pair(0, 2));
  EXPECT_EQ(s.graph->edges[22], std::make_pair(1, 17));
  EXPECT_EQ(s.graph->root, 1);
  EXPECT_EQ(s.graph->target, 16);
  EXPECT_EQ(s.graph->neg_target, 13);

  const cc::Sample& last = items[299];
  EXPECT_EQ(last.answer, "Rex is a bompus.");
  EXPECT_EQ(last.graph->idx_to_symbol.size(), 23u);
  EXPECT_EQ(last.graph->edges.size(), 34u);
  EXPECT_EQ(last.graph->target, 22);
  EXPECT_EQ(last.graph->neg_target, 17);
}

TEST(DatasetJson, ErrorsNameTheItemTheFieldAndWhatWasExpected) {
  std::string e = json_error("[{\"question\": \"q\", ");
  EXPECT_NE(e.find("mem.json: not valid JSON"), std::string::npos) << e;

  e = json_error("{\"question\": \"q\"}");
  EXPECT_NE(e.find("expected a JSON list of items, got a object"), std::string::npos) << e;

  e = json_error("[{\"question\": \"q\", \"steps\": [], \"answer\": \"a\"}, 7]");
  EXPECT_NE(e.find("mem.json: item 1: expected an object"), std::string::npos) << e;

  e = json_error("[{\"question\": \"q\", \"steps\": [], \"answer\": \"a\"}, {\"steps\": [], \"answer\": \"a\"}]");
  EXPECT_NE(e.find("mem.json: item 1: missing field 'question'"), std::string::npos) << e;

  e = json_error("[{\"question\": \"q\", \"steps\": \"s1 s2\", \"answer\": \"a\"}]");
  EXPECT_NE(e.find("item 0: field 'steps' must be a list of strings, got a string"), std::string::npos) << e;

  e = json_error("[{\"question\": \"q\", \"steps\": [\"s1\", 2], \"answer\": \"a\"}]");
  EXPECT_NE(e.find("field 'steps' must be a list of strings, element 1 is a number"), std::string::npos) << e;

  e = json_error("[{\"question\": \"q\", \"steps\": [], \"answer\": 42}]");
  EXPECT_NE(e.find("field 'answer' must be a string, got a number"), std::string::npos) << e;

  const std::string base = R"("question": "q", "steps": [], "answer": "a", "idx_to_symbol": ["Tom", "Ann", "x"], )";
  e = json_error("[{" + base + R"("edges": [[0, 2]], "root": 0, "neg_target": 1}])");
  EXPECT_NE(e.find("item 0: has ProsQA graph fields but misses 'target'"), std::string::npos) << e;

  e = json_error("[{" + base + R"("edges": [[0, 2], [1, 3]], "root": 0, "target": 2, "neg_target": 1}])");
  EXPECT_NE(e.find("field 'edges', element 1: [1, 3] is out of range (expected indices 0..2)"), std::string::npos) << e;

  e = json_error("[{" + base + R"("edges": [[0, 2, 1]], "root": 0, "target": 2, "neg_target": 1}])");
  EXPECT_NE(e.find("field 'edges', element 0: expected a [parent, child] pair of integers"), std::string::npos) << e;

  e = json_error("[{" + base + R"("edges": [[0, 2]], "root": 0, "target": 5, "neg_target": 1}])");
  EXPECT_NE(e.find("field 'target' = 5 is out of range"), std::string::npos) << e;

  e = json_error("[{" + base + R"("edges": [[0, 2]], "root": "Tom", "target": 2, "neg_target": 1}])");
  EXPECT_NE(e.find("field 'root' must be an integer node index, got a string"), std::string::npos) << e;

  e = error_of([] { cc::load_dataset_json("/nonexistent/prosqa.json"); });
  EXPECT_NE(e.find("/nonexistent/prosqa.json: cannot open"), std::string::npos) << e;
}

TEST(DatasetJson, SaveAndLoadRoundTrip) {
  SKIP_WITHOUT("prosqa_valid.json");
  const auto items = cc::load_dataset_json(kData + "/prosqa_valid.json");
  const fs::path path = temp_file("prosqa_roundtrip.json");
  cc::save_dataset_json(path.string(), items);
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));
  const auto back = cc::load_dataset_json(path.string());
  ASSERT_EQ(back.size(), items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    EXPECT_EQ(back[i].question, items[i].question);
    EXPECT_EQ(back[i].steps, items[i].steps);
    EXPECT_EQ(back[i].answer, items[i].answer);
    ASSERT_TRUE(back[i].graph.has_value());
    EXPECT_EQ(back[i].graph->idx_to_symbol, items[i].graph->idx_to_symbol);
    EXPECT_EQ(back[i].graph->edges, items[i].graph->edges);
    EXPECT_EQ(back[i].graph->root, items[i].graph->root);
    EXPECT_EQ(back[i].graph->target, items[i].graph->target);
    EXPECT_EQ(back[i].graph->neg_target, items[i].graph->neg_target);
  }

  // Items without a graph are written without graph fields.
  const std::vector<cc::Sample> plain = {{"What is 1+1?", {"<<1+1=2>>"}, "2", std::nullopt}};
  const std::string text = cc::dataset_to_json_text(plain);
  EXPECT_EQ(text, R"([{"question":"What is 1+1?","answer":"2","steps":["<<1+1=2>>"]}])");
  fs::remove_all(path.parent_path());
}

// ---- statistics and invariants ----

TEST(DatasetStats, MatchesTheIndependentReferenceOnTheValidationSplit) {
  SKIP_WITHOUT("prosqa_valid.json");
  const auto st = cc::compute_dataset_stats(cc::load_dataset_json(kData + "/prosqa_valid.json"));
  EXPECT_EQ(st.items, 300u);
  ASSERT_TRUE(st.prosqa.has_value());
  const cc::ProsQAStats& p = *st.prosqa;
  // tools/prosqa_stats.py ../shared/data/prosqa_valid.json
  EXPECT_NEAR(p.nodes.mean, 22.820000, 1e-6);
  EXPECT_EQ(p.nodes.min, 17);
  EXPECT_EQ(p.nodes.max, 28);
  EXPECT_NEAR(p.edges.mean, 36.260000, 1e-6);
  EXPECT_EQ(p.edges.min, 22);
  EXPECT_EQ(p.edges.max, 53);
  EXPECT_NEAR(p.shortest_path.mean, 3.753333, 1e-6);
  EXPECT_EQ(p.shortest_path.min, 3);
  EXPECT_EQ(p.shortest_path.max, 6);
  EXPECT_NEAR(p.num_shortest_paths.mean, 1.613333, 1e-6);
  EXPECT_EQ(p.num_shortest_paths.max, 6);
  EXPECT_NEAR(p.persons.mean, 2.513333, 1e-6);
  EXPECT_EQ(p.persons.min, 2);
  EXPECT_EQ(p.persons.max, 6);
  EXPECT_EQ(p.distinct_words, 55u);
  // The release satisfies every invariant the README states.
  EXPECT_EQ(p.items_with_violations, 0u) << (p.violations.empty() ? "" : p.violations[0]);

  const std::string report = cc::format_stats(st, "prosqa_valid.json");
  EXPECT_NE(report.find("prosqa_valid.json: 300 items"), std::string::npos) << report;
  EXPECT_NE(report.find("nodes per graph"), std::string::npos) << report;
  EXPECT_NE(report.find("22.820"), std::string::npos) << report;
  EXPECT_NE(report.find("invariants: all hold"), std::string::npos) << report;
}

// Each broken copy of a real item must be caught, with a message saying what broke.
TEST(DatasetStats, InvariantChecksCatchBrokenItems) {
  SKIP_WITHOUT("prosqa_valid.json");
  const cc::Sample good = cc::load_dataset_json(kData + "/prosqa_valid.json")[0];
  ASSERT_TRUE(cc::analyze_prosqa_item(good).violations.empty());
  const auto violations_of = [](const cc::Sample& s) {
    std::string all;
    for (const auto& v : cc::analyze_prosqa_item(s).violations) all += v + "\n";
    return all;
  };

  cc::Sample s = good;  // steps that skip a node
  s.steps = {"Tom is a terpus.", "Every terpus is a lempus.", "Every brimpus is a lempus."};
  EXPECT_NE(violations_of(s).find("step 1"), std::string::npos) << violations_of(s);

  s = good;  // a longer path than the shortest: Tom -> terpus -> gerpus -> brimpus -> lempus
  s.steps = {"Tom is a terpus.", "Every terpus is a gerpus.", "Every gerpus is a brimpus.",
             "Every brimpus is a lempus."};
  EXPECT_NE(violations_of(s).find("shortest path from root to target has 3 edges"), std::string::npos);

  s = good;  // target is not a leaf (brimpus, node 14, has a child)
  s.graph->target = 14;
  EXPECT_NE(violations_of(s).find("target 14 (brimpus) is not a leaf"), std::string::npos) << violations_of(s);

  s = good;  // Davis (node 0, the other seed) now reaches the target
  s.graph->edges.emplace_back(0, 16);
  EXPECT_NE(violations_of(s).find("target 16 (lempus) is reachable from the other seed"), std::string::npos)
      << violations_of(s);
  EXPECT_NE(violations_of(s).find("the question states"), std::string::npos);  // the new edge is not stated

  s = good;  // ids not topological
  s.graph->edges.emplace_back(16, 15);
  EXPECT_NE(violations_of(s).find("edge [16, 15] breaks the topological order"), std::string::npos);

  s = good;
  s.answer = "Tom is a scrompus.";
  EXPECT_NE(violations_of(s).find("answer 'Tom is a scrompus.'"), std::string::npos);

  s = good;
  s.graph->root = 2;
  EXPECT_NE(violations_of(s).find("root is 2 (expected 0 or 1)"), std::string::npos);

  s = good;  // the question asks about other options
  s.question.replace(s.question.find("lempus or scrompus"), 18, "lempus or yerpus");
  EXPECT_NE(violations_of(s).find("the question does not end with"), std::string::npos);

  const auto st = cc::compute_dataset_stats({good, s});
  EXPECT_EQ(st.prosqa->items_with_violations, 1u);
  EXPECT_NE(cc::format_stats(st, "x.json").find("item 1: the question does not end with"), std::string::npos);
}

TEST(DatasetStats, PlainDatasetsReportSteps) {
  const auto st = cc::compute_dataset_stats(cc::parse_icot_text("Q?||<<1=1>> <<2=2>> #### 2\nQ2?|| #### 3\n", "t"));
  EXPECT_EQ(st.items, 2u);
  EXPECT_DOUBLE_EQ(st.steps.mean, 1.0);
  EXPECT_EQ(st.steps.min, 0);
  EXPECT_EQ(st.steps.max, 2);
  EXPECT_FALSE(st.prosqa.has_value());
  const std::string report = cc::format_stats(st, "gsm.txt");
  EXPECT_NE(report.find("gsm.txt: 2 items"), std::string::npos);
  EXPECT_EQ(report.find("ProsQA"), std::string::npos);
}

}  // namespace
