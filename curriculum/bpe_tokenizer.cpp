// GPT-2 byte-level BPE: file loading, the hand-written pre-tokeniser, merges with a cache.
// Semantics follow openai/gpt-2's encoder.py and Hugging Face `tokenizers` (ByteLevel
// pre-tokenizer without prefix space, BPE without unk, added tokens split off first).
#include "curriculum/bpe_tokenizer.h"

#include <algorithm>
#include <climits>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>

#include "curriculum/unicode_tables.h"

namespace coconut::curriculum {

// ---------------------------------------------------------------------------------------
// Bytes <-> GPT-2's printable characters, and UTF-8

namespace {

// GPT-2 maps every byte to a printable character so that vocabulary entries are readable
// strings: the printable Latin-1 bytes stand for themselves, the other 68 bytes (controls,
// space, soft hyphen...) become U+0100, U+0101, ... in byte order. Space is thus "Ġ".
uint32_t byte_to_codepoint(int b) {
  auto printable = [](int x) { return (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE); };
  if (printable(b)) return static_cast<uint32_t>(b);
  int n = 0;
  for (int x = 0; x < b; ++x) n += printable(x) ? 0 : 1;
  return 256u + static_cast<uint32_t>(n);
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

constexpr uint32_t kInvalid = 0xFFFFFFFFu;

// Decodes the character at s[i]; returns its length in bytes. Malformed UTF-8 (which a
// Python string cannot hold) yields kInvalid for one byte, so every byte still ends up in
// exactly one piece and round-trips.
size_t next_codepoint(std::string_view s, size_t i, uint32_t* cp) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char b = byte(i);
  size_t len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
  if (len == 1) {
    *cp = b;
    return 1;
  }
  if (len == 0 || i + len > s.size()) {
    *cp = kInvalid;
    return 1;
  }
  uint32_t v = b & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) {
      *cp = kInvalid;
      return 1;
    }
    v = (v << 6) | (byte(i + k) & 0x3F);
  }
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (v < kMin[len] || v > 0x10FFFF || (v >= 0xD800 && v < 0xE000)) {
    *cp = kInvalid;
    return 1;
  }
  *cp = v;
  return len;
}

// ---------------------------------------------------------------------------------------
// Character classes of GPT-2's regex: \p{L}, \p{N}, \s, and everything else

enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

template <size_t N>
bool in_ranges(const unicode::CodeRange (&ranges)[N], uint32_t cp) {
  const unicode::CodeRange* it = std::upper_bound(
      ranges, ranges + N, cp, [](uint32_t v, const unicode::CodeRange& r) { return v < r.first; });
  return it != ranges && cp <= (it - 1)->last;
}

CharClass classify(uint32_t cp) {
  if (cp < 0x80) {  // fast path: nearly all text of interest is ASCII
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return CharClass::kLetter;
    if (cp >= '0' && cp <= '9') return CharClass::kNumber;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return CharClass::kSpace;
    return CharClass::kOther;
  }
  if (cp == kInvalid) return CharClass::kOther;
  if (in_ranges(unicode::kLetterRanges, cp)) return CharClass::kLetter;
  if (in_ranges(unicode::kNumberRanges, cp)) return CharClass::kNumber;
  if (in_ranges(unicode::kWhiteSpaceRanges, cp)) return CharClass::kSpace;
  return CharClass::kOther;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Pre-tokenisation: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// The alternatives are tried in order at each position and some alternative always
// matches, so the pieces tile the text.

std::vector<std::string_view> BpeTokenizer::pre_tokenize(std::string_view text) {
  struct Char {
    size_t offset;
    CharClass cls;
  };
  std::vector<Char> chars;
  chars.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    uint32_t cp;
    size_t len = next_codepoint(text, i, &cp);
    chars.push_back({i, classify(cp)});
    i += len;
  }
  const size_t n = chars.size();
  auto offset = [&](size_t c) { return c < n ? chars[c].offset : text.size(); };

  std::vector<std::string_view> pieces;
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    const size_t at = chars[i].offset;
    // Contractions, case-sensitive as in GPT-2 ("I'LL" splits as "I", "'", "LL").
    if (text[at] == '\'') {
      for (std::string_view suffix : {"s", "t", "re", "ve", "m", "ll", "d"}) {
        if (text.substr(at + 1, suffix.size()) == suffix) {
          j = i + 1 + suffix.size();  // ASCII: one char per byte
          break;
        }
      }
    }
    if (j == i) {
      // " ?X+" for X = letters, numbers, other: an optional literal space, then a run.
      size_t k = (text[at] == ' ' && i + 1 < n && chars[i + 1].cls != CharClass::kSpace) ? i + 1 : i;
      CharClass cls = chars[k].cls;
      if (cls != CharClass::kSpace) {
        j = k;
        while (j < n && chars[j].cls == cls) ++j;
      } else {
        // Whitespace: the whole run at the end of the text; before other text all but
        // its last character (\s+(?!\S)), which then joins the next word if it is a space;
        // a single whitespace character before other text stands alone (\s+).
        size_t end = i;
        while (end < n && chars[end].cls == CharClass::kSpace) ++end;
        j = (end == n) ? n : (end - i >= 2 ? end - 1 : i + 1);
      }
    }
    pieces.push_back(text.substr(offset(i), offset(j) - offset(i)));
    i = j;
  }
  return pieces;
}

// ---------------------------------------------------------------------------------------
// Loading

struct BpeTokenizer::Cache {
  std::mutex mu;
  std::unordered_map<std::string, std::vector<int>, StringHash, std::equal_to<>> map;
};

std::vector<std::string> BpeTokenizer::default_added_tokens() {
  return {kCoconutSpecialTokens.begin(), kCoconutSpecialTokens.end()};
}

BpeTokenizer::BpeTokenizer(const std::string& vocab_json_path, const std::string& merges_txt_path,
                           const std::vector<std::string>& added_tokens)
    : cache_(std::make_unique<Cache>()) {
  load_vocab(vocab_json_path);
  load_merges(merges_txt_path);
  add_tokens(added_tokens);
  resolve_special_ids();
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_dir(const std::string& dir) {
  return std::make_unique<BpeTokenizer>(dir + "/vocab.json", dir + "/merges.txt");
}

BpeTokenizer::~BpeTokenizer() = default;
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;

void BpeTokenizer::load_vocab(const std::string& path) {
  std::ifstream in(path);
  COCONUT_CHECK(in.good(), "cannot open BPE vocabulary '{}'", path);
  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    COCONUT_FAIL("BPE vocabulary '{}' is not valid JSON: {}", path, e.what());
  }
  COCONUT_CHECK(vocab.is_object() && !vocab.empty(),
                "BPE vocabulary '{}': expected a non-empty JSON object of token -> id", path);

  const size_t n = vocab.size();
  id_to_token_.assign(n, std::string());
  std::vector<bool> seen(n, false);
  for (const auto& [token, value] : vocab.items()) {
    COCONUT_CHECK(value.is_number_integer(), "BPE vocabulary '{}': id of token '{}' is not an integer",
                  path, token);
    int64_t id = value.get<int64_t>();
    COCONUT_CHECK(id >= 0 && static_cast<size_t>(id) < n,
                  "BPE vocabulary '{}': token '{}' has id {}, expected ids 0..{} (one per entry)", path,
                  token, id, n - 1);
    COCONUT_CHECK(!seen[id], "BPE vocabulary '{}': id {} is used twice (token '{}')", path, id, token);
    seen[id] = true;
    id_to_token_[id] = token;
    token_to_id_.emplace(token, static_cast<int>(id));
  }

  // Every token must spell bytes in GPT-2's alphabet, so that decode knows its bytes.
  std::unordered_map<uint32_t, char> codepoint_to_byte;
  for (int b = 0; b < 256; ++b) codepoint_to_byte[byte_to_codepoint(b)] = static_cast<char>(b);
  id_to_bytes_.resize(n);
  for (size_t id = 0; id < n; ++id) {
    const std::string& token = id_to_token_[id];
    for (size_t i = 0; i < token.size();) {
      uint32_t cp;
      i += next_codepoint(token, i, &cp);
      auto it = codepoint_to_byte.find(cp);
      COCONUT_CHECK(it != codepoint_to_byte.end(),
                    "BPE vocabulary '{}': token '{}' (id {}) has a character outside GPT-2's byte alphabet",
                    path, token, id);
      id_to_bytes_[id] += it->second;
    }
  }
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    append_utf8(ch, byte_to_codepoint(b));
    auto it = token_to_id_.find(ch);
    COCONUT_CHECK(it != token_to_id_.end(),
                  "BPE vocabulary '{}': no token for byte 0x{:02X} ('{}'); a byte-level vocabulary needs all 256",
                  path, b, ch);
    byte_id_[b] = it->second;
  }
}

void BpeTokenizer::load_merges(const std::string& path) {
  std::ifstream in(path);
  COCONUT_CHECK(in.good(), "cannot open BPE merges '{}'", path);
  std::string line;
  int line_no = 0;
  int rank = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_no == 1 && line.starts_with("#version")) continue;
    if (line.empty()) continue;
    size_t space = line.find(' ');
    COCONUT_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size() &&
                      line.find(' ', space + 1) == std::string::npos,
                  "BPE merges '{}' line {}: expected two tokens separated by one space, got '{}'", path,
                  line_no, line);
    std::string left = line.substr(0, space), right = line.substr(space + 1);
    auto l = token_to_id_.find(left), r = token_to_id_.find(right), m = token_to_id_.find(left + right);
    COCONUT_CHECK(l != token_to_id_.end() && r != token_to_id_.end(),
                  "BPE merges '{}' line {}: token '{}' is not in the vocabulary", path, line_no,
                  l == token_to_id_.end() ? left : right);
    COCONUT_CHECK(m != token_to_id_.end(), "BPE merges '{}' line {}: merged token '{}' is not in the vocabulary",
                  path, line_no, left + right);
    uint64_t key = (static_cast<uint64_t>(l->second) << 32) | static_cast<uint32_t>(r->second);
    merges_[key] = Merge{rank++, m->second};  // a repeated pair takes its later rank, as in GPT-2
  }
  COCONUT_CHECK(!in.bad(), "error reading BPE merges '{}'", path);
}

void BpeTokenizer::add_tokens(const std::vector<std::string>& tokens) {
  for (const std::string& token : tokens) {
    COCONUT_CHECK(!token.empty(), "added tokens must not be empty");
    if (std::find(added_tokens_.begin(), added_tokens_.end(), token) != added_tokens_.end()) continue;
    added_tokens_.push_back(token);
    if (token_to_id_.contains(token)) {
      id_to_bytes_[token_to_id_.find(token)->second] = token;  // e.g. GPT-2's own <|endoftext|>
      continue;
    }
    int id = static_cast<int>(id_to_token_.size());
    token_to_id_.emplace(token, id);
    id_to_token_.push_back(token);
    id_to_bytes_.push_back(token);
  }
}

// ---------------------------------------------------------------------------------------
// Encoding and decoding

std::vector<int> BpeTokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  // Leftmost added token first, the longest at a tie; next_at caches each token's next
  // occurrence so the scan stays linear however many latents the text holds.
  std::vector<size_t> next_at(added_tokens_.size(), 0);
  std::vector<bool> searched(added_tokens_.size(), false);
  size_t pos = 0;
  while (pos < text.size()) {
    size_t best_at = std::string_view::npos, best = 0;
    for (size_t t = 0; t < added_tokens_.size(); ++t) {
      if (!searched[t] || (next_at[t] != std::string_view::npos && next_at[t] < pos)) {
        next_at[t] = text.find(added_tokens_[t], pos);
        searched[t] = true;
      }
      if (next_at[t] < best_at ||
          (next_at[t] == best_at && best_at != std::string_view::npos &&
           added_tokens_[t].size() > added_tokens_[best].size())) {
        best_at = next_at[t];
        best = t;
      }
    }
    size_t end = best_at == std::string_view::npos ? text.size() : best_at;
    for (std::string_view piece : pre_tokenize(text.substr(pos, end - pos))) encode_piece(piece, ids);
    if (best_at == std::string_view::npos) break;
    ids.push_back(token_to_id_.find(added_tokens_[best])->second);
    pos = best_at + added_tokens_[best].size();
  }
  return ids;
}

void BpeTokenizer::encode_piece(std::string_view piece, std::vector<int>& out) const {
  if (piece.size() == 1) {
    out.push_back(byte_id_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(cache_->mu);
    auto it = cache_->map.find(piece);
    if (it != cache_->map.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int> ids = bpe(piece);
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(cache_->mu);
  if (cache_->map.size() >= (1u << 18)) cache_->map.clear();  // bound memory on huge corpora
  cache_->map.emplace(std::string(piece), std::move(ids));
}

// Repeatedly merges the adjacent pair of lowest rank, every occurrence left to right
// (overlaps: "aaa" with merge "a a" gives "aa a"), until no adjacent pair has a rank.
std::vector<int> BpeTokenizer::bpe(std::string_view piece) const {
  std::vector<int> symbols(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) symbols[i] = byte_id_[static_cast<unsigned char>(piece[i])];
  auto key = [](int a, int b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); };
  while (symbols.size() > 1) {
    int best_rank = INT_MAX;
    uint64_t best_key = 0;
    int merged = -1;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = merges_.find(key(symbols[i], symbols[i + 1]));
      if (it != merges_.end() && it->second.rank < best_rank) {
        best_rank = it->second.rank;
        best_key = it->first;
        merged = it->second.merged_id;
      }
    }
    if (merged < 0) break;
    size_t w = 0;
    for (size_t r = 0; r < symbols.size(); ++w) {
      if (r + 1 < symbols.size() && key(symbols[r], symbols[r + 1]) == best_key) {
        symbols[w] = merged;
        r += 2;
      } else {
        symbols[w] = symbols[r];
        r += 1;
      }
    }
    symbols.resize(w);
  }
  return symbols;
}

std::string BpeTokenizer::decode(const std::vector<int>& ids) const {
  std::string text;
  for (int id : ids) {
    COCONUT_CHECK(id >= 0 && id < vocab_size(), "cannot decode token id {}: vocabulary has ids 0..{}", id,
                  vocab_size() - 1);
    text += id_to_bytes_[id];
  }
  return text;
}

std::optional<int> BpeTokenizer::find_token(std::string_view token) const {
  auto it = token_to_id_.find(token);
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

std::string BpeTokenizer::id_to_token(int id) const {
  COCONUT_CHECK(id >= 0 && id < vocab_size(), "token id {} is outside the vocabulary (ids 0..{})", id,
                vocab_size() - 1);
  return id_to_token_[id];
}

}  // namespace coconut::curriculum
