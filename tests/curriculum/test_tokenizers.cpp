// Tests of the tokenisers: BPE parity with Hugging Face `tokenizers` on the fixture of
// tools/make_tokenizer_fixture.py and, with the real GPT-2 vocabulary, on GSM8k (the
// fixture of tools/make_gpt2_bpe_fixture.py), GPT-2 pre-tokenisation facts, file errors, speed; the
// word tokeniser's splitting, vocabulary, decoding rules, file format and its errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "curriculum/bpe_tokenizer.h"
#include "curriculum/word_tokenizer.h"
#include "runtime/check.h"
#include "runtime/hash.h"

namespace fs = std::filesystem;
using coconut::curriculum::BpeTokenizer;
using coconut::curriculum::WordTokenizer;

namespace {

const std::string kFixtureDir = std::string(COCONUT_SOURCE_DIR) + "/tests/fixtures/tokenizer";

// A fresh directory per test, removed at the end.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("coconut_tok_" + std::to_string(::getpid()) + "_" + info->test_suite_name() + "_" + info->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name, const std::string& content) const {
    std::string p = (path_ / name).string();
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }
  std::string path(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Runs f, expects coconut::Error, and returns its message.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const coconut::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected coconut::Error";
  return "";
}

nlohmann::json load_cases() {
  std::ifstream in(kFixtureDir + "/cases.json");
  EXPECT_TRUE(in.good()) << "missing fixture; run tools/make_tokenizer_fixture.py";
  return nlohmann::json::parse(in);
}

std::string printable(const std::string& s) { return nlohmann::json(s).dump(); }

}  // namespace

// ---------------------------------------------------------------------------------------
// BPE

TEST(BpeTokenizer, MatchesHuggingFaceTokenizersOnFixture) {
  BpeTokenizer tok(kFixtureDir + "/vocab.json", kFixtureDir + "/merges.txt");
  nlohmann::json fixture = load_cases();
  ASSERT_GE(fixture["cases"].size(), 200u);
  EXPECT_EQ(tok.vocab_size(), fixture["vocab_size"].get<int>());
  for (const auto& c : fixture["cases"]) {
    std::string text = c["text"];
    std::vector<int> expected = c["ids"];
    EXPECT_EQ(tok.encode(text), expected) << "text " << printable(text);
    EXPECT_EQ(tok.decode(expected), text) << "text " << printable(text);
    std::vector<std::string> pieces;
    for (std::string_view p : BpeTokenizer::pre_tokenize(text)) pieces.emplace_back(p);
    EXPECT_EQ(pieces, c["pieces"].get<std::vector<std::string>>()) << "text " << printable(text);
  }
}

TEST(BpeTokenizer, AddedTokensGetIdsAfterTheBaseVocabulary) {
  BpeTokenizer tok(kFixtureDir + "/vocab.json", kFixtureDir + "/merges.txt");
  nlohmann::json added = load_cases()["added_tokens"];
  EXPECT_EQ(tok.eos_id(), added["<|endoftext|>"].get<int>());  // present in vocab.json: kept
  EXPECT_EQ(tok.start_latent_id(), added["<|start-latent|>"].get<int>());
  EXPECT_EQ(tok.end_latent_id(), added["<|end-latent|>"].get<int>());
  EXPECT_EQ(tok.latent_id(), added["<|latent|>"].get<int>());
  EXPECT_EQ(tok.bos_id(), tok.eos_id());
  EXPECT_EQ(tok.pad_id(), tok.eos_id());
  EXPECT_EQ(tok.token_id("<|latent|>"), tok.latent_id());
  EXPECT_EQ(tok.id_to_token(tok.start_latent_id()), "<|start-latent|>");
  EXPECT_EQ(tok.decode({tok.latent_id(), tok.eos_id()}), "<|latent|><|endoftext|>");
  EXPECT_NE(error_of([&] { tok.token_id("<|no-such-token|>"); }).find("<|no-such-token|>"), std::string::npos);
}

TEST(BpeTokenizer, OrdinaryTextNeverProducesSpecialTokens) {
  BpeTokenizer tok(kFixtureDir + "/vocab.json", kFixtureDir + "/merges.txt");
  const std::vector<int> specials = {tok.eos_id(), tok.start_latent_id(), tok.end_latent_id(), tok.latent_id()};
  const nlohmann::json fixture = load_cases();
  for (const auto& c : fixture["cases"]) {
    std::string text = c["text"];
    if (text.find("<|") != std::string::npos) continue;
    for (int id : tok.encode(text)) {
      EXPECT_EQ(std::count(specials.begin(), specials.end(), id), 0) << "text " << printable(text);
    }
  }
  // Broken-up special tokens are ordinary text.
  for (int id : tok.encode("<|latent| > <| latent|> <|Latent|>")) {
    EXPECT_EQ(std::count(specials.begin(), specials.end(), id), 0);
  }
  EXPECT_EQ(tok.encode("<|latent|><|latent|>"), (std::vector<int>{tok.latent_id(), tok.latent_id()}));
}

// Facts of GPT-2's regex, worked out by hand from the pattern.
TEST(BpeTokenizer, PreTokenizationFollowsTheGpt2Pattern) {
  using V = std::vector<std::string_view>;
  EXPECT_EQ(BpeTokenizer::pre_tokenize("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(BpeTokenizer::pre_tokenize("Hello   world"), (V{"Hello", "  ", " world"}));
  EXPECT_EQ(BpeTokenizer::pre_tokenize("a\tb"), (V{"a", "\t", "b"}));
  EXPECT_EQ(BpeTokenizer::pre_tokenize("a\n\nb"), (V{"a", "\n", "\n", "b"}));
  EXPECT_EQ(BpeTokenizer::pre_tokenize("end  "), (V{"end", "  "}));
  EXPECT_EQ(BpeTokenizer::pre_tokenize("don't"), (V{"don", "'t"}));
  EXPECT_EQ(BpeTokenizer::pre_tokenize("I'LL"), (V{"I", "'", "LL"}));  // contractions are lower-case only
  EXPECT_EQ(BpeTokenizer::pre_tokenize("we're 42!!"), (V{"we", "'re", " 42", "!!"}));
  EXPECT_EQ(BpeTokenizer::pre_tokenize("3.14"), (V{"3", ".", "14"}));
  EXPECT_EQ(BpeTokenizer::pre_tokenize("#### 72"), (V{"####", " 72"}));
  EXPECT_EQ(BpeTokenizer::pre_tokenize("café Привет"), (V{"café", " Привет"}));
  EXPECT_EQ(BpeTokenizer::pre_tokenize("x\u00a0y"), (V{"x", "\u00a0", "y"}));  // no-break space is \s
  EXPECT_EQ(BpeTokenizer::pre_tokenize("٣4"), (V{"٣4"}));                      // Arabic-Indic digit is \p{N}
  EXPECT_EQ(BpeTokenizer::pre_tokenize(""), V{});
}

TEST(BpeTokenizer, ArbitraryBytesRoundTrip) {
  BpeTokenizer tok(kFixtureDir + "/vocab.json", kFixtureDir + "/merges.txt");
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::string s(rng() % 40, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 256);  // mostly invalid UTF-8
    std::string joined;
    for (std::string_view piece : BpeTokenizer::pre_tokenize(s)) joined += piece;
    EXPECT_EQ(joined, s);
    EXPECT_EQ(tok.decode(tok.encode(s)), s);
  }
}

TEST(BpeTokenizer, RejectsBadIdsAndMalformedFiles) {
  BpeTokenizer tok(kFixtureDir + "/vocab.json", kFixtureDir + "/merges.txt");
  EXPECT_NE(error_of([&] { tok.decode({tok.vocab_size()}); }).find("1003"), std::string::npos);
  EXPECT_NE(error_of([&] { tok.decode({-1}); }).find("-1"), std::string::npos);

  TempDir dir;
  // A byte-level vocabulary: the 256 byte characters, then "ab" (id 256).
  nlohmann::json vocab = nlohmann::json::parse(read_text(kFixtureDir + "/vocab.json"));
  nlohmann::json small = nlohmann::json::object();
  int next = 0;
  for (const auto& [token, id] : vocab.items()) {
    if (id.get<int>() >= 1 && id.get<int>() <= 256) small[token] = next++;  // fixture: 256 bytes after eos
  }
  ASSERT_EQ(next, 256);
  small["ab"] = 256;
  std::string good_vocab = dir.file("vocab.json", small.dump());
  std::string merges = dir.file("merges.txt", "#version: 0.2\na b\n");
  BpeTokenizer ok(good_vocab, merges, {"<|endoftext|>", "<|start-latent|>", "<|end-latent|>", "<|latent|>"});
  EXPECT_EQ(ok.vocab_size(), 257 + 4);
  EXPECT_EQ(ok.eos_id(), 257);  // absent from this vocab, so added
  EXPECT_EQ(ok.encode("abab"), (std::vector<int>{256, 256}));

  std::string msg = error_of([&] { BpeTokenizer(good_vocab, dir.file("m1.txt", "#version: 0.2\na b\nab a b\n")); });
  EXPECT_NE(msg.find("m1.txt' line 3"), std::string::npos) << msg;
  msg = error_of([&] { BpeTokenizer(good_vocab, dir.file("m2.txt", "a zz\n")); });
  EXPECT_NE(msg.find("m2.txt' line 1: token 'zz'"), std::string::npos) << msg;
  msg = error_of([&] { BpeTokenizer(good_vocab, dir.file("m3.txt", "a c\n")); });
  EXPECT_NE(msg.find("merged token 'ac'"), std::string::npos) << msg;

  nlohmann::json missing_byte = small;
  missing_byte.erase("a");
  missing_byte["zz"] = small["a"];
  msg = error_of([&] { BpeTokenizer(dir.file("v1.json", missing_byte.dump()), merges); });
  EXPECT_NE(msg.find("no token for byte 0x61"), std::string::npos) << msg;
  nlohmann::json dup = small;
  dup["ab"] = 3;
  msg = error_of([&] { BpeTokenizer(dir.file("v2.json", dup.dump()), merges); });
  EXPECT_NE(msg.find("id 3 is used twice"), std::string::npos) << msg;
  msg = error_of([&] { BpeTokenizer(dir.file("v3.json", "{\"a\": 0,"), merges); });
  EXPECT_NE(msg.find("v3.json' is not valid JSON"), std::string::npos) << msg;
  msg = error_of([&] { BpeTokenizer(dir.path("absent.json"), merges); });
  EXPECT_NE(msg.find("absent.json"), std::string::npos) << msg;
}

TEST(BpeTokenizer, EncodesThousandsOfSentencesPerSecondAndIsThreadSafe) {
  BpeTokenizer tok(kFixtureDir + "/vocab.json", kFixtureDir + "/merges.txt");
  const char* names[] = {"wumpus", "zhorpus", "brimpus", "sterpus", "gorpus", "lempus", "jompus", "dumpus"};
  std::vector<std::string> sentences;
  for (int i = 0; i < 4000; ++i) {
    sentences.push_back(fmt::format("Every {}{} is a {}. Is Tom{} a {} or a {}? <<{}*{}={}>> #### {}", names[i % 8], i,
                                    names[(i / 8) % 8], i % 97, names[(i + 3) % 8], names[(i + 5) % 8], i, i % 13,
                                    i * (i % 13), i + 1));
  }
  auto start = std::chrono::steady_clock::now();
  std::vector<std::vector<int>> ids;
  for (const std::string& s : sentences) ids.push_back(tok.encode(s));
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double rate = sentences.size() / seconds;
  std::printf("BPE encode: %.0f sentences/s\n", rate);
  EXPECT_GT(rate, 2000.0);

  // Two threads sharing the cache give the same ids as one.
  BpeTokenizer fresh(kFixtureDir + "/vocab.json", kFixtureDir + "/merges.txt");
  std::vector<std::vector<int>> a(sentences.size()), b(sentences.size());
  std::thread t1([&] { for (size_t i = 0; i < sentences.size(); ++i) a[i] = fresh.encode(sentences[i]); });
  std::thread t2([&] { for (size_t i = 0; i < sentences.size(); ++i) b[i] = fresh.encode(sentences[i]); });
  t1.join();
  t2.join();
  EXPECT_EQ(a, ids);
  EXPECT_EQ(b, ids);
}

// The real GPT-2 files, when someone points COCONUT_GPT2_DIR at them (not shipped).
TEST(BpeTokenizer, RealGpt2VocabularyWhenAvailable) {
  const char* dir = std::getenv("COCONUT_GPT2_DIR");
  if (dir == nullptr || !fs::exists(fs::path(dir) / "merges.txt")) {
    GTEST_SKIP() << "set COCONUT_GPT2_DIR to a folder with the gpt2 model's vocab.json and merges.txt";
  }
  auto tok = BpeTokenizer::from_dir(dir);
  EXPECT_EQ(tok->eos_id(), 50256);
  EXPECT_EQ(tok->start_latent_id(), 50257);  // as the Coconut reference's add_tokens
  EXPECT_EQ(tok->end_latent_id(), 50258);
  EXPECT_EQ(tok->latent_id(), 50259);
  EXPECT_EQ(tok->vocab_size(), 50260);
  EXPECT_EQ(tok->encode("Hello world"), (std::vector<int>{15496, 995}));
}

// The paper's GSM8k text through the real GPT-2 vocabulary: every line of the validation
// split, as it is and with newlines, gives the ids of Hugging Face `tokenizers` (the
// fixture of tools/make_gpt2_bpe_fixture.py: counts and FNV-1a digests of the ids, the
// first lines in full). cluster/run_tests.sh fetches the vocabulary
// (tools/fetch_gpt2_vocab.sh) and sets COCONUT_GPT2_DIR.
TEST(BpeTokenizer, RealGpt2EncodesGsm8kAsTokenizersDoes) {
  const char* dir = std::getenv("COCONUT_GPT2_DIR");
  const std::string data = std::string(COCONUT_SHARED_DATA_DIR) + "/gsm8k_valid.txt";
  if (dir == nullptr || !fs::exists(fs::path(dir) / "merges.txt")) {
    GTEST_SKIP() << "set COCONUT_GPT2_DIR to a folder with the gpt2 model's vocab.json and merges.txt "
                    "(tools/fetch_gpt2_vocab.sh)";
  }
  if (!fs::exists(data)) GTEST_SKIP() << "no " << data;
  std::ifstream in(kFixtureDir + "/gsm8k_gpt2.json");
  ASSERT_TRUE(in.good()) << "missing fixture; run tools/make_gpt2_bpe_fixture.py";
  const nlohmann::json fixture = nlohmann::json::parse(in);
  auto tok = BpeTokenizer::from_dir(dir);
  std::ifstream lines_in(data);
  std::vector<std::string> lines;
  for (std::string line; std::getline(lines_in, line);)
    if (!line.empty()) lines.push_back(line);
  ASSERT_EQ(lines.size(), fixture["lines"].get<size_t>());
  const auto& strings = fixture["strings"];
  ASSERT_EQ(strings.size(), 2 * lines.size());
  auto replace_all = [](std::string s, const std::string& from, const std::string& to) {
    for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
    return s;
  };
  size_t ids_total = 0, checked = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string texts[2] = {lines[i], replace_all(replace_all(lines[i], "||", "\n"), " #### ", "\n### ")};
    for (int k = 0; k < 2; ++k) {
      const std::vector<int> ids = tok->encode(texts[k]);
      const auto& want = strings[2 * i + k];
      if (i < 3) {
        EXPECT_EQ(ids, fixture["ids_of_first_lines"][2 * i + k].get<std::vector<int>>()) << "line " << i;
      }
      std::vector<uint8_t> bytes;  // the ids as little-endian int32, as the fixture hashed them
      for (int id : ids)
        for (int b = 0; b < 4; ++b) bytes.push_back(static_cast<uint8_t>(static_cast<uint32_t>(id) >> (8 * b)));
      EXPECT_EQ(ids.size(), want["n"].get<size_t>()) << "line " << i << " string " << k;
      EXPECT_EQ(coconut::hex_digest(coconut::fnv1a64(bytes.data(), bytes.size())), want["fnv1a64"].get<std::string>())
          << "line " << i << " string " << k << ": " << texts[k];
      EXPECT_EQ(tok->decode(ids), texts[k]) << "line " << i << " string " << k;
      ids_total += ids.size();
      ++checked;
    }
  }
  EXPECT_EQ(checked, 1000u);
  EXPECT_GT(ids_total, 80000u);
}

// ---------------------------------------------------------------------------------------
// Word-level

TEST(WordTokenizer, SplitsWordsPunctuationNewlinesAndSpecialTokens) {
  using V = std::vector<std::string>;
  EXPECT_EQ(WordTokenizer::split("Every shumpus is a rempus."), (V{"Every", "shumpus", "is", "a", "rempus", "."}));
  EXPECT_EQ(WordTokenizer::split("  Tom's (Alex) said: \"hi\"!\n\n### 5\t;"),
            (V{"Tom", "'", "s", "(", "Alex", ")", "said", ":", "\"", "hi", "\"", "!", "\n", "\n", "#", "#", "#", "5",
               ";"}));
  EXPECT_EQ(WordTokenizer::split("Q?\n<|start-latent|><|latent|>x<|end-latent|>A<|endoftext|><unk>"),
            (V{"Q", "?", "\n", "<|start-latent|>", "<|latent|>", "x", "<|end-latent|>", "A", "<|endoftext|>",
               "<unk>"}));
  EXPECT_EQ(WordTokenizer::split("<|latent| <b>"), (V{"<|latent|", "<b>"}));
  EXPECT_EQ(WordTokenizer::split(" \t\r "), V{});
}

TEST(WordTokenizer, VocabularyIsSpecialTokensThenSortedWords) {
  WordTokenizer tok = WordTokenizer::build({"Is Tom a zhorpus or a brimpus?", "Every shumpus is a rempus."});
  const std::vector<std::string> expected = {"<|endoftext|>", "<|start-latent|>", "<|end-latent|>", "<|latent|>",
                                             "<unk>", ".", "?", "Every", "Is", "Tom", "a", "brimpus", "is", "or",
                                             "rempus", "shumpus", "zhorpus"};
  ASSERT_EQ(tok.vocab_size(), static_cast<int>(expected.size()));
  for (int id = 0; id < tok.vocab_size(); ++id) EXPECT_EQ(tok.id_to_token(id), expected[id]) << "id " << id;
  EXPECT_EQ(tok.eos_id(), 0);
  EXPECT_EQ(tok.start_latent_id(), 1);
  EXPECT_EQ(tok.end_latent_id(), 2);
  EXPECT_EQ(tok.latent_id(), 3);
  EXPECT_EQ(tok.unk_id(), 4);
  EXPECT_EQ(tok.pad_id(), 0);
  // The order of the texts does not matter.
  WordTokenizer other = WordTokenizer::build({"Every shumpus is a rempus.", "Is Tom a zhorpus or a brimpus?"});
  for (int id = 0; id < tok.vocab_size(); ++id) EXPECT_EQ(other.id_to_token(id), expected[id]);
}

// extend keeps every id of the base vocabulary (a pretrained model's embedding rows stay
// at their words) and appends only the words the base lacks, sorted. build over the same
// texts would move "brimpus" and every word after it.
TEST(WordTokenizer, ExtendKeepsTheBaseIdsAndAppendsNewWordsSorted) {
  const WordTokenizer base = WordTokenizer::build({"Every shumpus is a rempus."});
  const WordTokenizer ext = WordTokenizer::extend(base, {"Is Tom a zhorpus or a brimpus?", "Every wumpus is a rempus."});
  ASSERT_EQ(base.vocab_size(), 11);
  for (int id = 0; id < base.vocab_size(); ++id) EXPECT_EQ(ext.id_to_token(id), base.id_to_token(id)) << "id " << id;
  const std::vector<std::string> added = {"?", "Is", "Tom", "brimpus", "or", "wumpus", "zhorpus"};
  ASSERT_EQ(ext.vocab_size(), base.vocab_size() + static_cast<int>(added.size()));
  for (size_t k = 0; k < added.size(); ++k) EXPECT_EQ(ext.id_to_token(base.vocab_size() + int(k)), added[k]);
  EXPECT_EQ(ext.encode("Every shumpus is a rempus."), base.encode("Every shumpus is a rempus."));
  const WordTokenizer rebuilt = WordTokenizer::build({"Every shumpus is a rempus.", "Is Tom a zhorpus or a brimpus?"});
  EXPECT_NE(rebuilt.find_token("shumpus"), base.find_token("shumpus"));  // what extend avoids
  // Nothing new: the same vocabulary.
  const WordTokenizer same = WordTokenizer::extend(base, {"Every rempus is a shumpus."});
  ASSERT_EQ(same.vocab_size(), base.vocab_size());
}

TEST(WordTokenizer, EncodesDecodesAndMapsUnknownWordsToUnk) {
  WordTokenizer tok = WordTokenizer::build({"Every shumpus is a rempus.", "Is Tom a zhorpus or a brimpus?",
                                            "Tom is a brimpus.\n### Tom is a zhorpus."});
  for (std::string s : {"Every shumpus is a rempus.", "Is Tom a zhorpus or a brimpus?", "Tom is a brimpus.\n### Tom is a zhorpus.",
                        "Is Tom a zhorpus or a brimpus?\n<|start-latent|> <|latent|> <|latent|> <|end-latent|> "
                        "Tom is a brimpus.\n### Tom is a zhorpus. <|endoftext|>"}) {
    EXPECT_EQ(tok.decode(tok.encode(s)), s);
  }
  EXPECT_EQ(tok.encode("Every shumpus"), (std::vector<int>{tok.token_id("Every"), tok.token_id("shumpus")}));
  EXPECT_EQ(tok.encode("Every wumpus is a Gorpus!"),
            (std::vector<int>{tok.token_id("Every"), 4, tok.token_id("is"), tok.token_id("a"), 4, 4}));
  EXPECT_EQ(tok.decode(tok.encode("Alex is a wumpus.")), "<unk> is a <unk>.");
  // Normalisation: spaces collapse, no space before punctuation.
  EXPECT_EQ(tok.decode(tok.encode("  Tom   is a\tbrimpus .  ")), "Tom is a brimpus.");
  EXPECT_FALSE(tok.find_token("wumpus").has_value());
  EXPECT_NE(error_of([&] { tok.token_id("wumpus"); }).find("'wumpus'"), std::string::npos);
  EXPECT_NE(error_of([&] { tok.decode({tok.vocab_size()}); }).find("cannot decode token id"), std::string::npos);
}

TEST(WordTokenizer, DecodeThenEncodeGivesBackTheIds) {
  WordTokenizer tok = WordTokenizer::build({"don't (x) \"y\" ### a, b; c: d! e? f.\n g's"});
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<int> ids(rng() % 20);
    for (int& id : ids) id = static_cast<int>(rng() % tok.vocab_size());
    std::string text = tok.decode(ids);
    EXPECT_EQ(tok.encode(text), ids) << printable(text);
    EXPECT_EQ(tok.decode(tok.encode(text)), text);
  }
  EXPECT_EQ(tok.decode(tok.encode("don't ( x ) ### a ,b\n g ' s")), "don't (x) ### a, b\ng's");
}

TEST(WordTokenizer, RoundTripsThroughAFile) {
  TempDir dir;
  WordTokenizer tok = WordTokenizer::build({"Every shumpus is a rempus.\nback\\slash", "Is Tom a zhorpus?"});
  tok.save(dir.path("vocab.txt"));
  std::string text = read_text(dir.path("vocab.txt"));
  EXPECT_TRUE(text.starts_with("coconut-word-tokenizer v1\nsize 17\n0 <|endoftext|>\n1 <|start-latent|>\n"))
      << text;
  EXPECT_NE(text.find("\n5 \\n\n"), std::string::npos) << text;                // the newline token, escaped
  EXPECT_NE(text.find(" back\\\\slash\n"), std::string::npos) << text;  // backslash escaped
  WordTokenizer back = WordTokenizer::load(dir.path("vocab.txt"));
  ASSERT_EQ(back.vocab_size(), tok.vocab_size());
  for (int id = 0; id < tok.vocab_size(); ++id) EXPECT_EQ(back.id_to_token(id), tok.id_to_token(id));
  std::string s = "Is Tom a shumpus or a rempus?\n<|latent|> back\\slash";
  EXPECT_EQ(back.encode(s), tok.encode(s));
  // The same text without a file (what a checkpoint's trainer state keeps).
  EXPECT_EQ(tok.file_text(), text);
  WordTokenizer kept = WordTokenizer::from_file_text(text, "the kept text");
  ASSERT_EQ(kept.vocab_size(), tok.vocab_size());
  EXPECT_EQ(kept.encode(s), tok.encode(s));
  const std::string msg = error_of([] { WordTokenizer::from_file_text("coconut-word-tokenizer v1\nsize 3\n", "kept"); });
  EXPECT_NE(msg.find("word tokenizer 'kept' line 2"), std::string::npos) << msg;
}

TEST(WordTokenizer, MalformedFilesNameTheLine) {
  TempDir dir;
  const std::string head = "coconut-word-tokenizer v1\nsize 6\n0 <|endoftext|>\n1 <|start-latent|>\n"
                           "2 <|end-latent|>\n3 <|latent|>\n4 <unk>\n";
  EXPECT_EQ(WordTokenizer::load(dir.file("ok.txt", head + "5 word\n")).vocab_size(), 6);
  struct Case {
    std::string content, expected;
  };
  const std::vector<Case> cases = {
      {"", "is empty"},
      {"hello\n", "line 1: expected 'coconut-word-tokenizer v1'"},
      {"coconut-word-tokenizer v2\n", "line 1: unsupported format version"},
      {"coconut-word-tokenizer v1\nsize x\n", "line 2: expected 'size <N>'"},
      {"coconut-word-tokenizer v1\nsize 3\n", "line 2: expected 'size <N>' with N >= 5"},
      {head, "ends after line 7"},
      {head + "6 word\n", "line 8: expected id 5, got 6"},
      {head + "word\n", "line 8: expected '<id> <token>'"},
      {head + "5 a b\n", "line 8: 'a b' is not a single word"},
      {head + "5 word.\n", "line 8: 'word.' is not a single word"},
      {head + "5 <unk>\n", "line 8: token '<unk>' appears twice"},
      {head + "5 bad\\t\n", "line 8: bad escape"},
      {head + "5 word\nextra\n", "line 9: unexpected content"},
      {"coconut-word-tokenizer v1\nsize 6\n0 <|endoftext|>\n1 <|latent|>\n", "line 4: id 1 must be the special token"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    std::string name = "bad" + std::to_string(i) + ".txt";
    std::string msg = error_of([&] { WordTokenizer::load(dir.file(name, cases[i].content)); });
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
    EXPECT_NE(msg.find(cases[i].expected), std::string::npos) << "case " << i << ": " << msg;
  }
  EXPECT_NE(error_of([&] { WordTokenizer::load(dir.path("absent.txt")); }).find("absent.txt"), std::string::npos);
}

TEST(WordTokenizer, ProsQaValidationTextsRoundTrip) {
  const std::string path = std::string(COCONUT_SHARED_DATA_DIR) + "/prosqa_valid.json";
  if (!fs::exists(path)) GTEST_SKIP() << "reference data not found: " << path;
  std::ifstream in(path);
  nlohmann::json items = nlohmann::json::parse(in);
  std::vector<std::string> texts;
  for (const auto& item : items) {
    texts.push_back(item["question"]);
    texts.push_back(item["answer"]);
    for (const auto& step : item["steps"]) texts.push_back(step);
  }
  WordTokenizer tok = WordTokenizer::build(texts);
  // shared/data/README: "62 distinct words in all" (60 words plus "." and "?").
  EXPECT_EQ(tok.vocab_size(), 5 + 62);
  for (const std::string& t : texts) {
    std::vector<int> ids = tok.encode(t);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.unk_id()), 0);
    EXPECT_EQ(tok.decode(ids), t);
  }
}
