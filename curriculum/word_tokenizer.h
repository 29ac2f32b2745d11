// Word-level tokeniser for small from-scratch models on ProsQA / ProntoQA, whose texts use
// a few dozen words: one id per word, so a concept name is a single token.
//
// Splitting: the special tokens are recognised anywhere in the text; the rest splits on
// ASCII whitespace, with "\n" kept as a token and each of . , ? : ; ! ' " ( ) # split off
// as a token of its own. Vocabulary: <|endoftext|>, <|start-latent|>, <|end-latent|>,
// <|latent|>, <unk> (ids 0..4), then the words of the building texts in byte order.
//
// decode joins tokens with single spaces, except none before . , ? : ; ! ) and none after
// (, none around "\n" and "'", none between two "#". So decode(encode(s)) == s for text
// already written that way ("Every shumpus is a rempus.", "### Tom is a wumpus."), and
// encode(decode(ids)) == ids for any ids.
#pragma once

#include <functional>
#include <istream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "curriculum/tokenizer.h"

namespace coconut::curriculum {

inline constexpr std::string_view kUnknown = "<unk>";

class WordTokenizer final : public Tokenizer {
 public:
  // The vocabulary of every word in texts (the special tokens first).
  static WordTokenizer build(const std::vector<std::string>& texts);
  // The vocabulary of `base` with its ids unchanged, then the words of texts that base
  // lacks, in byte order. A run that starts from a model trained with `base`
  // (model.init_from) must use this: build() sorts the words, so new words would
  // otherwise move old ones to other ids and every learned embedding row to another word.
  static WordTokenizer extend(const WordTokenizer& base, const std::vector<std::string>& texts);
  // File format (text):
  //   coconut-word-tokenizer v1
  //   size <N>
  //   <id> <token>        N lines, ids 0..N-1 in order; "\n" is written \n, "\" as \\.
  // load throws coconut::Error naming the file and line on anything else.
  static WordTokenizer load(const std::string& path);
  void save(const std::string& path) const;
  // The file's text, as save writes it, and back (`where` names it in errors): a
  // checkpoint keeps it in its trainer state, so that `coconut ckpt export` can write
  // the vocabulary beside the weights.
  std::string file_text() const;
  static WordTokenizer from_file_text(const std::string& text, const std::string& where);

  // The tokens of a text as strings: what encode looks up.
  static std::vector<std::string> split(std::string_view text);

  std::vector<int> encode(std::string_view text) const override;  // unknown words -> <unk>
  std::string decode(const std::vector<int>& ids) const override;
  int vocab_size() const override { return static_cast<int>(tokens_.size()); }
  std::optional<int> find_token(std::string_view token) const override;
  std::string id_to_token(int id) const override;
  int unk_id() const { return unk_id_; }

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  explicit WordTokenizer(std::vector<std::string> tokens);
  static WordTokenizer read(std::istream& in, const std::string& path);

  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int, StringHash, std::equal_to<>> ids_;
  int unk_id_ = -1;
};

}  // namespace coconut::curriculum
