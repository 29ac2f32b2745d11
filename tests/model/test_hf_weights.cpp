// Tests of Hugging Face GPT-2 weight import/export against the fixture written by
// tools/make_gpt2_fixture.py (tests/fixtures/gpt2_tiny): the config, the import checked
// against torch's checksums of every parameter, export -> re-import equal bits, and the
// error cases (missing, misshapen, unknown, duplicated tensors, untied head, bad config).
#include "model/hf_weights.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "runtime/check.h"
#include "tests/test_support.h"
#include "runtime/safetensors.h"

namespace fs = std::filesystem;
using coconut::NamedTensor;
using coconut::SafetensorsFile;
using namespace coconut::model;

using coconut::test::expect_error;

namespace {

const std::string kFixture = std::string(COCONUT_SOURCE_DIR) + "/tests/fixtures/gpt2_tiny";

class HFWeightsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = read_hf_config(kFixture + "/config.json");
    params_.resize(ParamLayout(config_).total());
    import_hf_gpt2(kFixture + "/model.safetensors", config_, params_.data());
  }

  std::string path(const std::string& name) const { return scratch_.path(name); }

  // The fixture's tensors under the given names, plus extras; used to build broken files.
  std::vector<NamedTensor> tensors(const std::string& prefix, const std::string& skip = "") const {
    std::vector<NamedTensor> out;
    const ParamLayout layout(config_);
    for (const TensorSpec& t : layout.tensors())
      if (t.name != skip) out.push_back(NamedTensor::f32(prefix + t.name, t.shape, params_.data() + t.offset));
    return out;
  }
  std::string write(const std::vector<NamedTensor>& ts) {
    const std::string p = path("w.safetensors");
    coconut::write_safetensors(p, ts);
    return p;
  }
  std::string write_config(const std::function<void(nlohmann::json&)>& edit) {
    std::ifstream in(kFixture + "/config.json");
    nlohmann::json j = nlohmann::json::parse(in);
    edit(j);
    const std::string p = path("config.json");
    std::ofstream(p) << j.dump();
    return p;
  }

  coconut::test::ScratchDir scratch_{"coconut_hf"};
  GPT2Config config_;
  std::vector<float> params_;
};

TEST_F(HFWeightsTest, ReadsFixtureConfig) {
  EXPECT_EQ(config_.vocab_size, 97);
  EXPECT_EQ(config_.max_positions, 64);
  EXPECT_EQ(config_.n_layer, 2);
  EXPECT_EQ(config_.n_head, 4);
  EXPECT_EQ(config_.d_model, 64);
  EXPECT_FLOAT_EQ(config_.layer_norm_eps, 1e-5f);
}

// The imported buffer agrees with torch's own sums of each parameter, and the reference
// batch's gradients are named and shaped exactly like our layout.
TEST_F(HFWeightsTest, ImportMatchesTorchChecksumsAndReferenceShapes) {
  const SafetensorsFile ref = SafetensorsFile::open(kFixture + "/reference.safetensors");
  const ParamLayout layout(config_);
  EXPECT_EQ(layout.find("wte.weight").shape, (std::vector<int64_t>{97, 64}));
  for (const TensorSpec& t : layout.tensors()) {
    const std::vector<float> sums = ref.read_f32("checksum." + t.name);
    double sum = 0, sumsq = 0;
    for (size_t i = 0; i < t.numel; ++i) {
      const double x = params_[t.offset + i];
      sum += x;
      sumsq += x * x;
    }
    EXPECT_NEAR(sum, sums[0], 1e-5 * (std::abs(sums[0]) + 1)) << t.name;
    EXPECT_NEAR(sumsq, sums[1], 1e-5 * sums[1]) << t.name;
    EXPECT_EQ(ref.info("grad." + t.name).shape, t.shape) << t.name;
  }
  // Biases and LayerNorm weights were perturbed away from HF's 0 / 1 init.
  const ParamView v = bind_params(config_, params_.data());
  EXPECT_NE(v.layers[1].fc_b[0], 0.0f);
  EXPECT_NE(v.lnf_w[0], 1.0f);

  // Batch shapes, and labels are the tokens or -100.
  EXPECT_EQ(ref.info("logits").shape, (std::vector<int64_t>{2, 32, 97}));
  const std::vector<int64_t> ids = ref.read_i64("input_ids");
  const std::vector<int64_t> labels = ref.read_i64("labels");
  ASSERT_EQ(ids.size(), 64u);
  int ignored = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_TRUE(ids[i] >= 0 && ids[i] < 97);
    EXPECT_TRUE(labels[i] == ids[i] || labels[i] == -100);
    ignored += labels[i] == -100;
  }
  EXPECT_EQ(ignored, 10);
  EXPECT_EQ(ref.info("adamw_losses").shape, std::vector<int64_t>{10});
}

TEST_F(HFWeightsTest, ExportThenImportGivesEqualBits) {
  const std::string out = path("export");
  export_hf_gpt2(out, config_, params_.data());
  const SafetensorsFile f = SafetensorsFile::open(out + "/model.safetensors");
  EXPECT_TRUE(f.contains("transformer.wte.weight"));
  EXPECT_FALSE(f.contains("lm_head.weight"));
  EXPECT_EQ(f.metadata().at("format"), "pt");

  const GPT2Config c2 = read_hf_config(out + "/config.json");
  EXPECT_EQ(c2.vocab_size, config_.vocab_size);
  EXPECT_EQ(c2.max_positions, config_.max_positions);
  EXPECT_EQ(c2.n_layer, config_.n_layer);
  EXPECT_EQ(c2.n_head, config_.n_head);
  EXPECT_EQ(c2.d_model, config_.d_model);
  EXPECT_EQ(c2.layer_norm_eps, config_.layer_norm_eps);
  std::vector<float> again(params_.size(), -1.0f);
  import_hf_gpt2(out + "/model.safetensors", c2, again.data());
  EXPECT_EQ(std::memcmp(again.data(), params_.data(), params_.size() * sizeof(float)), 0);
}

TEST_F(HFWeightsTest, AcceptsUnprefixedNamesMaskBuffersAndTiedHead) {
  std::vector<NamedTensor> ts = tensors("");
  const std::vector<float> mask(64 * 64, 1.0f);
  const float masked_bias = -1e4f;
  ts.push_back(NamedTensor::f32("h.0.attn.bias", {1, 1, 64, 64}, mask.data()));
  ts.push_back(NamedTensor::f32("h.1.attn.masked_bias", {}, &masked_bias));
  ts.push_back(NamedTensor::f32("lm_head.weight", {97, 64}, params_.data()));  // wte is first in the layout
  std::vector<float> got(params_.size());
  import_hf_gpt2(write(ts), config_, got.data());
  EXPECT_EQ(std::memcmp(got.data(), params_.data(), params_.size() * sizeof(float)), 0);
}

TEST_F(HFWeightsTest, MissingTensor) {
  const std::string p = write(tensors("transformer.", "h.1.ln_2.bias"));
  std::vector<float> got(params_.size());
  expect_error([&] { import_hf_gpt2(p, config_, got.data()); }, {p, "missing", "'h.1.ln_2.bias'", "[64]"});
}

TEST_F(HFWeightsTest, ShapeMismatchNamesBothShapes) {
  std::vector<NamedTensor> ts = tensors("transformer.", "wpe.weight");
  ts.push_back(NamedTensor::f32("transformer.wpe.weight", {32, 64}, params_.data()));
  const std::string p = write(ts);
  std::vector<float> got(params_.size());
  expect_error([&] { import_hf_gpt2(p, config_, got.data()); }, {p, "'transformer.wpe.weight'", "[32, 64]", "[64, 64]"});
}

TEST_F(HFWeightsTest, ConfigWithFewerOrMoreLayersThanTheFile) {
  const std::string p = kFixture + "/model.safetensors";
  GPT2Config fewer = config_;
  fewer.n_layer = 1;
  std::vector<float> got(ParamLayout(fewer).total());
  expect_error([&] { import_hf_gpt2(p, fewer, got.data()); }, {p, "'transformer.h.1.", "not a parameter"});
  GPT2Config more = config_;
  more.n_layer = 3;
  got.resize(ParamLayout(more).total());
  expect_error([&] { import_hf_gpt2(p, more, got.data()); }, {p, "missing", "'h.2."});
}

TEST_F(HFWeightsTest, DuplicatedTensor) {
  std::vector<NamedTensor> ts = tensors("transformer.");
  ts.push_back(NamedTensor::f32("ln_f.bias", {64}, params_.data()));
  const std::string p = write(ts);
  std::vector<float> got(params_.size());
  expect_error([&] { import_hf_gpt2(p, config_, got.data()); }, {p, "'ln_f.bias'", "twice"});
}

TEST_F(HFWeightsTest, UntiedHeadIsRefused) {
  std::vector<float> head(params_.begin(), params_.begin() + 97 * 64);
  head[5] += 1.0f;
  std::vector<NamedTensor> ts = tensors("transformer.");
  ts.push_back(NamedTensor::f32("lm_head.weight", {97, 64}, head.data()));
  const std::string p = write(ts);
  std::vector<float> got(params_.size());
  expect_error([&] { import_hf_gpt2(p, config_, got.data()); }, {p, "lm_head.weight", "untied"});
}

TEST_F(HFWeightsTest, ConfigErrors) {
  std::string p = write_config([](nlohmann::json& j) { j.erase("n_head"); });
  expect_error([&] { read_hf_config(p); }, {p, "missing key 'n_head'"});
  p = write_config([](nlohmann::json& j) { j["n_embd"] = "64"; });
  expect_error([&] { read_hf_config(p); }, {p, "'n_embd'", "positive integer"});
  p = write_config([](nlohmann::json& j) { j["activation_function"] = "relu"; });
  expect_error([&] { read_hf_config(p); }, {p, "'activation_function'", "relu", "gelu_new"});
  p = write_config([](nlohmann::json& j) { j["n_inner"] = 128; });
  expect_error([&] { read_hf_config(p); }, {p, "'n_inner'", "4 * n_embd"});
  p = write_config([](nlohmann::json& j) { j["n_head"] = 5; });
  expect_error([&] { read_hf_config(p); }, {p, "multiple of n_head"});
  expect_error([&] { read_hf_config(path("absent.json")); }, {"absent.json"});
}

}  // namespace
