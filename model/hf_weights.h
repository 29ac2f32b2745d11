// Hugging Face GPT-2 weights in and out: config.json -> GPT2Config, and model.safetensors
// <-> our flat parameter buffer (ParamLayout). Our tensor names are HF's without the
// "transformer." prefix and matrices keep HF's Conv1D [in, out] layout, so import and
// export are pure copies by name, no transposes.
#pragma once

#include <functional>
#include <string>

#include "model/gpt2.h"

namespace coconut::model {

// Reads vocab_size, n_positions, n_layer, n_head, n_embd and layer_norm_epsilon from a
// HF config.json; fails naming the file and key when one is missing or has the wrong
// type, and when an optional key asks for something our model does not compute (a
// different activation, an MLP width other than 4 * n_embd, untied embeddings, ...).
GPT2Config read_hf_config(const std::string& config_json_path);

// Fills params (ParamLayout(config).total() floats) from a safetensors file written by
// HF (save_pretrained or the original GPT-2 conversion). Accepts names with or without
// "transformer."; ignores the attention mask buffers (h.N.attn.bias / masked_bias);
// accepts lm_head.weight only if it equals wte (the head is tied). F16/BF16 weights are
// widened to float. Fails on a missing, duplicated or unknown tensor and on a shape
// mismatch, naming the tensor and both shapes.
void import_hf_gpt2(const std::string& safetensors_path, const GPT2Config& config, float* params);
// The same checks, each tensor handed to `take` as it is read (its spec in
// ParamLayout(config) and its numel floats, valid during the call), so that a caller can
// keep parts of the model without a buffer for all of it (a pipeline stage's slices).
using TensorSink = std::function<void(const TensorSpec& tensor, const float* data)>;
void import_hf_gpt2(const std::string& safetensors_path, const GPT2Config& config, const TensorSink& take);

// Writes out_dir/model.safetensors (names prefixed with "transformer.", as save_pretrained
// does; the tied lm_head.weight is left out) and out_dir/config.json, so that
// transformers.GPT2LMHeadModel.from_pretrained(out_dir) loads the model. Creates out_dir
// if needed.
void export_hf_gpt2(const std::string& out_dir, const GPT2Config& config, const float* params);
// The same, each tensor's data asked for in the layout's order when it is written (valid
// until the next call): a pipeline's rank 0 receives each stage's tensors one at a time.
using TensorSource = std::function<const float*(const TensorSpec& tensor)>;
void export_hf_gpt2(const std::string& out_dir, const GPT2Config& config, const TensorSource& tensor_data);

}  // namespace coconut::model
