// GPT-2 byte-level BPE, read from the Hugging Face files of the `gpt2` model
// (vocab.json + merges.txt), with ids equal to Hugging Face `tokenizers`' for the same
// files and added tokens (tests/fixtures/tokenizer checks a few hundred strings).
//
// encode: split the text on the added tokens; split each piece between them with GPT-2's
// pre-tokenisation regex (hand-written, Unicode classes from unicode_tables.h); map each
// piece's bytes to GPT-2's printable byte characters; merge adjacent symbols by merge
// rank until no ranked pair is left. Results per piece are cached, since natural text
// repeats its words.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "curriculum/tokenizer.h"

namespace coconut::curriculum {

class BpeTokenizer final : public Tokenizer {
 public:
  // added_tokens get ids vocab_size, vocab_size + 1, ... in order, unless vocab.json
  // already has them (GPT-2 has <|endoftext|> = 50256; the latent tokens become 50257,
  // 50258, 50259 as in the Coconut reference). Throws coconut::Error naming the file and
  // entry or line on a malformed file.
  BpeTokenizer(const std::string& vocab_json_path, const std::string& merges_txt_path,
               const std::vector<std::string>& added_tokens = default_added_tokens());
  // dir/vocab.json and dir/merges.txt.
  static std::unique_ptr<BpeTokenizer> from_dir(const std::string& dir);
  static std::vector<std::string> default_added_tokens();

  ~BpeTokenizer() override;
  BpeTokenizer(BpeTokenizer&&) noexcept;
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept;

  std::vector<int> encode(std::string_view text) const override;
  // Concatenates the bytes of the tokens; a sequence cut inside a multi-byte character
  // gives invalid UTF-8 (Hugging Face would print U+FFFD there).
  std::string decode(const std::vector<int>& ids) const override;
  int vocab_size() const override { return static_cast<int>(id_to_token_.size()); }
  std::optional<int> find_token(std::string_view token) const override;
  std::string id_to_token(int id) const override;

  // GPT-2's pre-tokenisation of text without special tokens, as the raw byte pieces
  // (exposed for tests and for reasoning about token boundaries).
  static std::vector<std::string_view> pre_tokenize(std::string_view text);

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Merge {
    int rank;
    int merged_id;
  };
  struct Cache;  // piece -> ids, behind a mutex so that const encode is thread-safe

  void load_vocab(const std::string& path);
  void load_merges(const std::string& path);
  void add_tokens(const std::vector<std::string>& tokens);
  void encode_piece(std::string_view piece, std::vector<int>& out) const;
  std::vector<int> bpe(std::string_view piece) const;

  std::unordered_map<std::string, int, StringHash, std::equal_to<>> token_to_id_;
  std::vector<std::string> id_to_token_;   // vocabulary form (byte-mapped; added tokens as is)
  std::vector<std::string> id_to_bytes_;   // what each id decodes to
  std::vector<std::string> added_tokens_;  // matched in text before pre-tokenisation
  int byte_id_[256] = {};                  // id of each single-byte token
  std::unordered_map<uint64_t, Merge> merges_;  // key: (left id << 32) | right id
  std::unique_ptr<Cache> cache_;
};

}  // namespace coconut::curriculum
