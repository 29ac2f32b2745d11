// The tokeniser interface the curriculum builds samples with: text <-> token ids, plus
// the ids of the tokens Coconut needs (DESIGN.md 2.1). Two implementations:
// BpeTokenizer (GPT-2 byte-level BPE, for pretrained GPT-2) and WordTokenizer (small
// word vocabularies for from-scratch models on ProsQA / ProntoQA).
//
// Special tokens are recognised as whole tokens wherever they appear in the text given
// to encode (like Hugging Face added tokens), and ordinary text never produces them.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/check.h"

namespace coconut::curriculum {

inline constexpr std::string_view kEndOfText = "<|endoftext|>";      // GPT-2's eos (id 50256)
inline constexpr std::string_view kStartLatent = "<|start-latent|>";  // <bot>
inline constexpr std::string_view kEndLatent = "<|end-latent|>";      // <eot>
inline constexpr std::string_view kLatent = "<|latent|>";             // one continuous thought

// In the order a tokeniser adds them when its vocabulary lacks them.
inline constexpr std::array<std::string_view, 4> kCoconutSpecialTokens = {
    kEndOfText, kStartLatent, kEndLatent, kLatent};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual std::vector<int> encode(std::string_view text) const = 0;
  // Throws coconut::Error on an id outside [0, vocab_size()).
  virtual std::string decode(const std::vector<int>& ids) const = 0;
  // Number of embedding rows the model needs: base vocabulary plus added tokens.
  virtual int vocab_size() const = 0;
  // Looks a token up as it is stored in the vocabulary (for BPE that is the byte-mapped
  // form, e.g. "Ġthe" for " the", as Hugging Face's convert_tokens_to_ids).
  virtual std::optional<int> find_token(std::string_view token) const = 0;
  // The vocabulary entry of an id; throws coconut::Error when out of range.
  virtual std::string id_to_token(int id) const = 0;

  // find_token that throws coconut::Error naming the token when it is absent.
  int token_id(std::string_view token) const {
    std::optional<int> id = find_token(token);
    COCONUT_CHECK(id.has_value(), "token '{}' is not in the tokenizer's vocabulary", token);
    return *id;
  }

  int eos_id() const { return eos_id_; }
  // GPT-2 has one token for both; encode never prepends it (nor does the reference).
  int bos_id() const { return eos_id_; }
  // Padding reuses eos, as the reference sets pad_token = eos_token; pads are masked anyway.
  int pad_id() const { return eos_id_; }
  int start_latent_id() const { return start_latent_id_; }
  int end_latent_id() const { return end_latent_id_; }
  int latent_id() const { return latent_id_; }

 protected:
  // Implementations call this once their vocabulary is complete.
  void resolve_special_ids() {
    eos_id_ = token_id(kEndOfText);
    start_latent_id_ = token_id(kStartLatent);
    end_latent_id_ = token_id(kEndLatent);
    latent_id_ = token_id(kLatent);
  }

 private:
  int eos_id_ = -1;
  int start_latent_id_ = -1;
  int end_latent_id_ = -1;
  int latent_id_ = -1;
};

}  // namespace coconut::curriculum
