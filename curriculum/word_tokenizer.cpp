// Word-level tokeniser: splitting, vocabulary building, the v1 text file format.
#include "curriculum/word_tokenizer.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>

namespace coconut::curriculum {

namespace {

constexpr std::string_view kMagic = "coconut-word-tokenizer v1";
constexpr std::string_view kPunctuation = ".,?:;!'\"()#";

// The special tokens in vocabulary order (ids 0..4).
constexpr std::array<std::string_view, 5> kSpecials = {kEndOfText, kStartLatent, kEndLatent, kLatent,
                                                       kUnknown};

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }
bool is_punctuation(char c) { return kPunctuation.find(c) != std::string_view::npos; }

bool no_space_before(std::string_view t) {
  return t == "." || t == "," || t == "?" || t == ":" || t == ";" || t == "!" || t == ")" || t == "\n" ||
         t == "'";
}
bool no_space_after(std::string_view t) { return t == "(" || t == "\n" || t == "'"; }

std::string escape(std::string_view token) {
  std::string out;
  for (char c : token) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\\') {
      out += "\\\\";
    } else {
      out += c;
    }
  }
  return out;
}

// Returns false on a backslash not followed by n or another backslash.
bool unescape(std::string_view text, std::string* out) {
  out->clear();
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\') {
      *out += text[i];
      continue;
    }
    if (i + 1 == text.size()) return false;
    char next = text[++i];
    if (next == 'n') {
      *out += '\n';
    } else if (next == '\\') {
      *out += '\\';
    } else {
      return false;
    }
  }
  return true;
}

bool parse_int(std::string_view s, long long* value) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *value);
  return ec == std::errc() && end == s.data() + s.size();
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Splitting and building

std::vector<std::string> WordTokenizer::split(std::string_view text) {
  std::vector<std::string> out;
  std::string word;
  auto flush = [&] {
    if (!word.empty()) out.push_back(std::move(word));
    word.clear();
  };
  for (size_t i = 0; i < text.size();) {
    char c = text[i];
    if (c == '<') {  // every special token starts with '<'
      auto special = std::find_if(kSpecials.begin(), kSpecials.end(),
                                  [&](std::string_view s) { return text.substr(i, s.size()) == s; });
      if (special != kSpecials.end()) {
        flush();
        out.emplace_back(*special);
        i += special->size();
        continue;
      }
    }
    if (c == '\n' || is_punctuation(c)) {
      flush();
      out.emplace_back(1, c);
    } else if (is_blank(c)) {
      flush();
    } else {
      word += c;
    }
    ++i;
  }
  flush();
  return out;
}

namespace {

// Every word of texts that is not a special token, in byte order.
std::set<std::string> words_of(const std::vector<std::string>& texts) {
  std::set<std::string> words;  // ordered: ids do not depend on the order of texts
  for (const std::string& text : texts) {
    for (std::string& w : WordTokenizer::split(text)) {
      if (std::find(kSpecials.begin(), kSpecials.end(), w) == kSpecials.end()) words.insert(std::move(w));
    }
  }
  return words;
}

}  // namespace

WordTokenizer WordTokenizer::build(const std::vector<std::string>& texts) {
  const std::set<std::string> words = words_of(texts);
  std::vector<std::string> tokens(kSpecials.begin(), kSpecials.end());
  tokens.insert(tokens.end(), words.begin(), words.end());
  return WordTokenizer(std::move(tokens));
}

WordTokenizer WordTokenizer::extend(const WordTokenizer& base, const std::vector<std::string>& texts) {
  std::vector<std::string> tokens = base.tokens_;
  for (const std::string& w : words_of(texts))
    if (!base.find_token(w)) tokens.push_back(w);
  return WordTokenizer(std::move(tokens));
}

WordTokenizer::WordTokenizer(std::vector<std::string> tokens) : tokens_(std::move(tokens)) {
  for (size_t id = 0; id < tokens_.size(); ++id) {
    bool inserted = ids_.emplace(tokens_[id], static_cast<int>(id)).second;
    COCONUT_CHECK(inserted, "word tokenizer: token '{}' appears twice", escape(tokens_[id]));
  }
  unk_id_ = token_id(kUnknown);
  resolve_special_ids();
}

// ---------------------------------------------------------------------------------------
// Encoding and decoding

std::vector<int> WordTokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  for (const std::string& w : split(text)) {
    auto it = ids_.find(w);
    ids.push_back(it == ids_.end() ? unk_id_ : it->second);
  }
  return ids;
}

std::string WordTokenizer::decode(const std::vector<int>& ids) const {
  std::string text;
  std::string_view prev;
  for (size_t i = 0; i < ids.size(); ++i) {
    COCONUT_CHECK(ids[i] >= 0 && ids[i] < vocab_size(), "cannot decode token id {}: vocabulary has ids 0..{}",
                  ids[i], vocab_size() - 1);
    std::string_view token = tokens_[ids[i]];
    bool glued = no_space_before(token) || no_space_after(prev) || (prev == "#" && token == "#");
    if (i > 0 && !glued) text += ' ';
    text += token;
    prev = token;
  }
  return text;
}

std::optional<int> WordTokenizer::find_token(std::string_view token) const {
  auto it = ids_.find(token);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

std::string WordTokenizer::id_to_token(int id) const {
  COCONUT_CHECK(id >= 0 && id < vocab_size(), "token id {} is outside the vocabulary (ids 0..{})", id,
                vocab_size() - 1);
  return tokens_[id];
}

// ---------------------------------------------------------------------------------------
// File format

std::string WordTokenizer::file_text() const {
  std::string text = fmt::format("{}\nsize {}\n", kMagic, tokens_.size());
  for (size_t id = 0; id < tokens_.size(); ++id) text += fmt::format("{} {}\n", id, escape(tokens_[id]));
  return text;
}

void WordTokenizer::save(const std::string& path) const {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  COCONUT_CHECK(out.good(), "cannot open '{}' to write the word tokenizer", path);
  out << file_text();
  out.close();
  COCONUT_CHECK(!out.fail(), "error writing the word tokenizer to '{}'", path);
}

WordTokenizer WordTokenizer::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  COCONUT_CHECK(in.good(), "cannot open word tokenizer file '{}'", path);
  return read(in, path);
}

WordTokenizer WordTokenizer::from_file_text(const std::string& text, const std::string& where) {
  std::istringstream in(text);
  return read(in, where);
}

// `path` names the source in messages: a file, or where a file's text was kept.
WordTokenizer WordTokenizer::read(std::istream& in, const std::string& path) {
  std::string line;
  int line_no = 0;
  auto next_line = [&]() {
    if (!std::getline(in, line)) return false;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return true;
  };

  COCONUT_CHECK(next_line(), "word tokenizer '{}' is empty, expected first line '{}'", path, kMagic);
  if (line != kMagic) {
    COCONUT_CHECK(!line.starts_with("coconut-word-tokenizer "),
                  "word tokenizer '{}' line 1: unsupported format version '{}', this build reads '{}'", path,
                  line, kMagic);
    COCONUT_FAIL("word tokenizer '{}' line 1: expected '{}', got '{}'", path, kMagic, line);
  }
  long long size = 0;
  COCONUT_CHECK(next_line(), "word tokenizer '{}' ends after line 1, expected line 2 'size <N>'", path);
  COCONUT_CHECK(line.starts_with("size ") && parse_int(std::string_view(line).substr(5), &size) &&
                    size >= static_cast<long long>(kSpecials.size()) && size <= (1LL << 31) - 1,
                "word tokenizer '{}' line 2: expected 'size <N>' with N >= {}, got '{}'", path, kSpecials.size(),
                line);

  std::vector<std::string> tokens;
  std::set<std::string> seen;
  for (long long id = 0; id < size; ++id) {
    COCONUT_CHECK(next_line(), "word tokenizer '{}' ends after line {}, but line 2 promised {} tokens", path,
                  line_no, size);
    size_t space = line.find(' ');
    long long file_id = -1;
    COCONUT_CHECK(space != std::string::npos && parse_int(std::string_view(line).substr(0, space), &file_id),
                  "word tokenizer '{}' line {}: expected '<id> <token>', got '{}'", path, line_no, line);
    COCONUT_CHECK(file_id == id, "word tokenizer '{}' line {}: expected id {}, got {}", path, line_no, id,
                  file_id);
    std::string token;
    COCONUT_CHECK(unescape(std::string_view(line).substr(space + 1), &token),
                  "word tokenizer '{}' line {}: bad escape in '{}' (only \\n and \\\\ are allowed)", path, line_no,
                  line);
    if (id < static_cast<long long>(kSpecials.size())) {
      COCONUT_CHECK(token == kSpecials[id], "word tokenizer '{}' line {}: id {} must be the special token '{}', got '{}'",
                    path, line_no, id, kSpecials[id], line.substr(space + 1));
    } else {
      // A token that encode would split differently could never be produced.
      std::vector<std::string> parts = split(token);
      COCONUT_CHECK(parts.size() == 1 && parts[0] == token,
                    "word tokenizer '{}' line {}: '{}' is not a single word, punctuation mark or newline", path,
                    line_no, line.substr(space + 1));
    }
    COCONUT_CHECK(seen.insert(token).second, "word tokenizer '{}' line {}: token '{}' appears twice", path,
                  line_no, line.substr(space + 1));
    tokens.push_back(std::move(token));
  }
  while (next_line()) {
    COCONUT_CHECK(line.empty(), "word tokenizer '{}' line {}: unexpected content after the {} tokens: '{}'", path,
                  line_no, size, line);
  }
  COCONUT_CHECK(!in.bad(), "error reading word tokenizer '{}'", path);
  return WordTokenizer(std::move(tokens));
}

}  // namespace coconut::curriculum
