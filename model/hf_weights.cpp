// Hugging Face GPT-2 weights in and out (config.json and model.safetensors), see hf_weights.h.
#include "model/hf_weights.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "runtime/check.h"
#include "runtime/files.h"
#include "runtime/safetensors.h"

namespace coconut::model {

namespace {

const std::string kPrefix = "transformer.";

// A required positive integer field of config.json.
int config_int(const nlohmann::json& j, const std::string& path, const char* key) {
  COCONUT_CHECK(j.contains(key), "{}: missing key '{}' (a GPT-2 config.json needs vocab_size, n_positions, n_layer, "
                "n_head, n_embd, layer_norm_epsilon)", path, key);
  const nlohmann::json& v = j[key];
  COCONUT_CHECK(v.is_number_unsigned() && v.get<uint64_t>() > 0 && v.get<uint64_t>() <= INT32_MAX,
                "{}: '{}' must be a positive integer (got {})", path, key, v.dump());
  return v.get<int>();
}

// Optional keys that, when present, must hold the value our model computes with;
// anything else would load without error and then silently compute a different model.
void check_optional(const nlohmann::json& j, const std::string& path, const char* key,
                    const std::vector<nlohmann::json>& allowed, const char* why) {
  if (!j.contains(key) || j[key].is_null()) return;
  for (const nlohmann::json& a : allowed)
    if (j[key] == a) return;
  COCONUT_FAIL("{}: '{}' is {}, but {}", path, key, j[key].dump(), why);
}

// h.<digits>.attn.bias and h.<digits>.attn.masked_bias: the causal-mask buffers that
// older transformers versions saved with the weights. They hold no parameters.
bool is_attention_mask_buffer(const std::string& name) {
  if (name.rfind("h.", 0) != 0) return false;
  size_t i = 2;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9') ++i;
  if (i == 2) return false;
  const std::string rest = name.substr(i);
  return rest == ".attn.bias" || rest == ".attn.masked_bias";
}

}  // namespace

GPT2Config read_hf_config(const std::string& config_json_path) {
  const std::string& path = config_json_path;
  std::ifstream in(path);
  COCONUT_CHECK(in.good(), "cannot open Hugging Face config {}: {}", path, std::strerror(errno));
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  COCONUT_CHECK(!j.is_discarded() && j.is_object(), "{}: not a JSON object", path);

  GPT2Config config;
  config.vocab_size = config_int(j, path, "vocab_size");
  config.max_positions = config_int(j, path, "n_positions");
  config.n_layer = config_int(j, path, "n_layer");
  config.n_head = config_int(j, path, "n_head");
  config.d_model = config_int(j, path, "n_embd");
  COCONUT_CHECK(j.contains("layer_norm_epsilon"), "{}: missing key 'layer_norm_epsilon'", path);
  COCONUT_CHECK(j["layer_norm_epsilon"].is_number() && j["layer_norm_epsilon"].get<double>() > 0,
                "{}: 'layer_norm_epsilon' must be a positive number (got {})", path, j["layer_norm_epsilon"].dump());
  config.layer_norm_eps = j["layer_norm_epsilon"].get<float>();

  check_optional(j, path, "model_type", {"gpt2"}, "only GPT-2 models are supported");
  check_optional(j, path, "activation_function", {"gelu_new", "gelu_pytorch_tanh"},
                 "our MLP uses the tanh-approximated GELU ('gelu_new')");
  check_optional(j, path, "n_inner", {4 * config.d_model}, "our MLP width is 4 * n_embd");
  check_optional(j, path, "scale_attn_weights", {true}, "our attention always scales by 1/sqrt(head_dim)");
  check_optional(j, path, "scale_attn_by_inverse_layer_idx", {false},
                 "per-layer attention scaling is not supported");
  check_optional(j, path, "add_cross_attention", {false}, "cross-attention is not supported");
  check_optional(j, path, "tie_word_embeddings", {true}, "our LM head is tied to wte");

  try {
    config.validate();
  } catch (const Error& e) {
    COCONUT_FAIL("{}: {}", path, e.what());
  }
  return config;
}

void import_hf_gpt2(const std::string& safetensors_path, const GPT2Config& config, float* params) {
  import_hf_gpt2(safetensors_path, config,
                 [params](const TensorSpec& t, const float* data) { std::copy_n(data, t.numel, params + t.offset); });
}

void import_hf_gpt2(const std::string& safetensors_path, const GPT2Config& config, const TensorSink& take) {
  const ParamLayout layout(config);
  std::vector<float> buffer;  // one tensor at a time
  const SafetensorsFile file = SafetensorsFile::open(safetensors_path);
  std::map<std::string, std::string> source_of;  // our name -> name in the file (catches duplicates)
  std::string lm_head_name;

  for (const std::string& file_name : file.names()) {
    const std::string name = file_name.rfind(kPrefix, 0) == 0 ? file_name.substr(kPrefix.size()) : file_name;
    if (name == "lm_head.weight") {
      lm_head_name = file_name;
      continue;
    }
    if (is_attention_mask_buffer(name)) continue;

    const TensorSpec* spec = nullptr;
    for (const TensorSpec& t : layout.tensors())
      if (t.name == name) spec = &t;
    COCONUT_CHECK(spec != nullptr,
                  "{}: tensor '{}' is not a parameter of a GPT-2 with n_layer {} (expected wte.weight, wpe.weight, "
                  "h.<0..{}>.*, ln_f.*, with or without 'transformer.'); wrong config or not a GPT-2 checkpoint?",
                  safetensors_path, file_name, config.n_layer, config.n_layer - 1);
    COCONUT_CHECK(source_of.count(name) == 0, "{}: parameter '{}' appears twice, as '{}' and as '{}'",
                  safetensors_path, name, source_of[name], file_name);
    const TensorInfo& info = file.info(file_name);
    COCONUT_CHECK(info.shape == spec->shape, "{}: tensor '{}' has shape {}, but the config needs {}",
                  safetensors_path, file_name, shape_str(info.shape), shape_str(spec->shape));
    buffer.resize(spec->numel);
    file.read_f32_into(file_name, buffer.data(), spec->numel);
    take(*spec, buffer.data());
    source_of[name] = file_name;
  }

  for (const TensorSpec& t : layout.tensors())
    COCONUT_CHECK(source_of.count(t.name), "{}: missing tensor '{}' (or '{}{}'), shape {}", safetensors_path, t.name,
                  kPrefix, t.name, shape_str(t.shape));

  // A separate LM head is fine only if it is the tied copy of wte.
  if (!lm_head_name.empty()) {
    const TensorSpec& wte = layout.find("wte.weight");
    const TensorInfo& info = file.info(lm_head_name);
    COCONUT_CHECK(info.shape == wte.shape, "{}: '{}' has shape {}, but wte is {}; untied LM heads are not supported",
                  safetensors_path, lm_head_name, shape_str(info.shape), shape_str(wte.shape));
    const std::vector<float> head = file.read_f32(lm_head_name);
    buffer.resize(wte.numel);
    file.read_f32_into(source_of.at("wte.weight"), buffer.data(), wte.numel);  // wte, as imported
    COCONUT_CHECK(std::memcmp(head.data(), buffer.data(), wte.numel * sizeof(float)) == 0,
                  "{}: '{}' differs from wte.weight; untied LM heads are not supported", safetensors_path,
                  lm_head_name);
  }
}

void export_hf_gpt2(const std::string& out_dir, const GPT2Config& config, const float* params) {
  export_hf_gpt2(out_dir, config, [params](const TensorSpec& t) { return params + t.offset; });
}

void export_hf_gpt2(const std::string& out_dir, const GPT2Config& config, const TensorSource& tensor_data) {
  const ParamLayout layout(config);
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  COCONUT_CHECK(!ec, "cannot create directory {}: {}", out_dir, ec.message());

  std::vector<NamedTensor> tensors;
  for (const TensorSpec& t : layout.tensors()) {
    NamedTensor named = NamedTensor::f32(kPrefix + t.name, t.shape, nullptr);
    named.fetch = [&tensor_data, &t] { return static_cast<const void*>(tensor_data(t)); };
    tensors.push_back(std::move(named));
  }
  // transformers refuses safetensors files whose metadata lacks a known "format".
  write_safetensors(out_dir + "/model.safetensors", tensors, {{"format", "pt"}});

  // The shortest decimal that reads back as the same float (1e-05, not 9.99999974e-06).
  const double eps = std::stod(fmt::format("{}", config.layer_norm_eps));
  nlohmann::ordered_json j;
  j["architectures"] = {"GPT2LMHeadModel"};
  j["model_type"] = "gpt2";
  j["vocab_size"] = config.vocab_size;
  j["n_positions"] = config.max_positions;
  j["n_embd"] = config.d_model;
  j["n_layer"] = config.n_layer;
  j["n_head"] = config.n_head;
  j["n_inner"] = nullptr;  // 4 * n_embd
  j["activation_function"] = "gelu_new";
  j["layer_norm_epsilon"] = eps;
  j["scale_attn_weights"] = true;
  j["tie_word_embeddings"] = true;
  // HF defaults bos/eos to GPT-2's <|endoftext|> (50256); a smaller vocabulary has no
  // such token and transformers warns about it, so say "none" there.
  if (config.vocab_size <= 50256) {
    j["bos_token_id"] = nullptr;
    j["eos_token_id"] = nullptr;
  }
  write_file_atomic(out_dir + "/config.json", j.dump(2) + "\n");
}

}  // namespace coconut::model
