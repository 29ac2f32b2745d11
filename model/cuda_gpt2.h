// The GPT-2 decoder on the CUDA backend: the same range primitive as model/gpt2.h
// (forward/backward of layers [l0, l1) over columns [a, b) with the KV cache of all
// earlier columns) composed from the device ops of runtime/cuda/ops.h; the runner that
// executes a batch's pass plan on it is model/cuda_multipass.h. Built only with the
// CUDA backend (COCONUT_HAVE_CUDA); tests/gpu compares it with the CPU model.
//
// Two precisions, one template over the activation storage type:
//   CudaGPT2      fp32 everywhere (the reference path; cuBLAS without TF32).
//   CudaGPT2Bf16  bf16 mixed precision: activations and a bf16 copy of the weights in
//                 bf16, fp32 arithmetic in every op, fp32 gradients and fp32 master
//                 weights (adamw_step refreshes the bf16 copy). Attention (set_attention)
//                 runs in fp32 on an fp32 copy of q|k|v (the KV cache), or on bf16
//                 q|k|v with batched tensor-core products, or fused (flash-style).
//
// Parameters and their gradients are flat device buffers laid out by ParamLayout, so a
// host GPT2 and a CUDA model exchange them with one copy. Activations keep the CPU's
// time-major rows t*B+s. Each model queues its work on its own stream (stream()), a
// blocking one: host copies through DeviceBuffer see its results. Buffers grow only
// when a batch is larger than any before, so repeated latent passes allocate nothing
// and a captured CUDA graph of a step can be replayed (cuda_multipass.h). Dropout draws
// the CPU model's masks bit for bit (same Philox streams/sites).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model/batch.h"
#include "model/gpt2.h"
#include "runtime/cuda/cublas_gemm.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/ops.h"

namespace coconut::model {

// How the CUDA model computes attention (CudaGPT2Of::set_attention).
enum class CudaAttention {
  kFp32,         // fp32 batched cuBLAS products (in the bf16 model on an fp32 copy of q|k|v)
  kBf16Batched,  // bf16 q|k|v, batched tensor-core products, probabilities saved in bf16
  kBf16Flash,    // the fused kernel (gpu::flash_attention_forward): no [T, T] buffers; where
                 // it does not apply (head size other than 64, attention dropout in the
                 // step) the batched bf16 products run instead (pass_attention)
};
const char* attention_name(CudaAttention kind);

// What attention keeps per activation row (CudaGPT2Of::attention_storage): fp32 words
// for the probabilities (H*T fp32 ones, H*T bf16 ones, or the fused attention's H
// log-sum-exps), and, in the bf16 model, whether an fp32 copy of q|k|v is needed (only
// the fp32 attention reads one).
struct AttentionStorage {
  int64_t floats_per_row = 0;
  bool fp32_qkv_copy = false;
};

// Device activations of B sequences of T columns (training: every layer keeps its own).
template <typename Act>
class CudaActivationsOf {
 public:
  // Lays out the activations of B sequences of T columns, growing the buffers as needed
  // (a new buffer is zeroed on `stream`; a reused one is not: every step rewrites it).
  // Each layer keeps what `attention` says for attention (AttentionStorage). training
  // false (decoding, no backward): each layer keeps only its q|k|v (the KV cache, and its
  // fp32 copy where the fp32 attention reads one); the other per-layer buffers are one
  // set that every layer overwrites (the forward reads a layer's input before it writes
  // that layer's output), and there is no dqkv.
  // Training may lay out only the layers [l0, l1) of a pipeline stage (l1 -1: the last
  // layer); the other layers' pointers are null.
  void resize(const GPT2Config& config, int B, int T, const AttentionStorage& attention, cudaStream_t stream,
              bool training = true, int l0 = 0, int l1 = -1);
  void zero_grads(cudaStream_t stream);  // the dqkv that later passes accumulate into
  // Where the buffers are now (a captured CUDA graph holds these addresses).
  std::vector<const void*> buffer_addresses() const;
  // Dropout keys: the counter stream of every row, keyed as Activations' (seed, step,
  // sample id, position id) from host copies of the position ids [T*B] and sample ids [B].
  void set_dropout(uint64_t seed, uint64_t step, const std::vector<int>& pos_ids,
                   const std::vector<int64_t>& sample_ids);

  struct Layer {
    Act* ln1; Act* qkv; Act* att_out; Act* res_mid; Act* ln2; Act* fc; Act* gelu; Act* res_out;  // [T,B,width]
    float* ln1_mean; float* ln1_rstd; float* ln2_mean; float* ln2_rstd;                           // [T,B]
    float* probs;  // [T,B,H,T] probabilities (fp32, or bf16 in bf16 attention), or [T,B,H] log-sum-exp (fused)
    float* qkv32;  // [T,B,3C] fp32 q|k|v that the fp32 attention reads: qkv itself in fp32, null if unused
    float* dqkv;   // [T,B,3C]
  };

  int B = 0, T = 0, C = 0;
  DeviceBuffer<int> pos_ids;       // [T*B]
  DeviceBuffer<uint8_t> key_mask;  // [T*B]
  bool dropout_enabled = false;
  DeviceBuffer<gpu::RowStream> row_streams;  // [T*B]
  Act* x0 = nullptr;                         // [T,B,C] input of layer 0 (embedding output)
  std::vector<Layer> layers;
  Act* lnf = nullptr;  // [T,B,C] final-norm hidden states (fed back as thoughts)
  float* lnf_mean = nullptr;
  float* lnf_rstd = nullptr;

 private:
  DeviceBuffer<Act> storage_;
  DeviceBuffer<float> storage32_;  // statistics, probabilities, fp32 q|k|v
  DeviceBuffer<float> dqkv_;       // all layers' dqkv, zeroed in one call
  int dqkv_layers_ = 0;            // how many layers dqkv_ serves now
};

template <typename Act>
class CudaGPT2Of {
 public:
  explicit CudaGPT2Of(const GPT2Config& config);
  CudaGPT2Of(const CudaGPT2Of&) = delete;
  CudaGPT2Of& operator=(const CudaGPT2Of&) = delete;

  const GPT2Config& config() const { return config_; }
  size_t num_params() const { return params_.size(); }
  float* params() { return params_.data(); }  // device, fp32 master weights
  float* grads() { return grads_.data(); }    // device, fp32
  // The weights the forward reads: the bf16 copy in bf16, params() in fp32. Pass it to
  // gpu::adamw_step as params_bf16 in bf16 (nullptr in fp32).
  Act* params_for_compute();
  CublasContext& cublas() { return cublas_; }
  cudaStream_t stream() const { return stream_.get(); }  // where all of this model's work is queued
  // The attention kernels (CudaAttention); the bf16 kinds need the bf16 model. Default kFp32.
  void set_attention(CudaAttention kind);
  CudaAttention attention() const { return attention_; }
  // The kernel a pass runs, with or without attention dropout: the one set, where it
  // applies (fused: head size 64 and no attention dropout; bf16 batched: head size a
  // multiple of 8), else bf16 batched, else fp32.
  CudaAttention pass_attention(bool attention_dropout) const;
  // Whether the forward saves the [T] probabilities of every row and head (false when
  // every pass runs the fused kernel, which saves one number), and what the activations
  // keep for attention at T columns (CudaActivationsOf::resize).
  bool saves_attention_probabilities() const;
  AttentionStorage attention_storage(int T) const;
  // Sizes the backward scratch and attention workspace for B x T (rows of the largest
  // pass). The passes call it themselves; the runner calls it first, before it takes its
  // plan key, so that the key of a step's first run already holds the grown buffers and
  // the second step of a plan is the one captured.
  void ensure_scratch(int rows, int B, int T);
  // Sizes the LM head's buffers for n rows (with_grad: and the bf16 logits' gradient),
  // as queue_lm_head_loss does: the runner calls it before it takes its plan key.
  void ensure_lm_head(int n, bool with_grad);
  // Where the buffers a step uses besides the activations are now: the backward scratch
  // (it grows when a pass larger than any before comes through, a decoder's included),
  // the LM head's, the parameters and gradients, cuBLAS's workspace. The runner's plan
  // key holds them, so that a graph captured before one of them moved is never replayed.
  std::vector<const void*> buffer_addresses() const;
  Act* wte() { return w_.wte; }  // the compute copy of the token embedding
  float* wte_grad() { return g_.wte; }

  void set_params(const float* host);  // num_params() floats from the host (refreshes the copy)
  // host[begin, end) of a host buffer laid out as the model's into the same range of the
  // master weights (and the bf16 copy); get_grads(host, begin, end) the other way.
  void set_params(const float* host, size_t begin, size_t end);
  void get_grads(float* host, size_t begin, size_t end) const;
  void get_params(float* host) const;
  void get_grads(float* host) const;
  void zero_grads();

  // As GPT2::forward_stage / backward_stage, on device pointers (in, d_out, d_in).
  // layer_done, when given, is called with l right after layer l's backward is queued
  // (its parameter gradients then hold this call's contribution), layers from l1 - 1
  // down to l0: the data-parallel step starts summing a finished layer's gradient there.
  using LayerDone = std::function<void(int layer)>;
  void forward_stage(CudaActivationsOf<Act>& acts, int a, int b, int l0, int l1, const Act* in, bool embed,
                     bool final_norm);
  void backward_stage(CudaActivationsOf<Act>& acts, int a, int b, int l0, int l1, const Act* d_out, Act* d_in,
                      bool embed, bool final_norm, const LayerDone& layer_done = {});

  // Tied LM head + cross-entropy on n gathered device rows with device targets: returns
  // sum(-log p(target)) * scale (waits for the GPU); with d_hidden (device [n, C]) also
  // writes its gradient and accumulates wte's. queue_lm_head_loss only queues the work
  // (no wait: it can be captured into a graph), with the scale that set_loss_scale last
  // put in device memory (read when the kernel runs, so that one captured graph serves
  // every step's scale); read_lm_head_loss(n) waits and sums.
  double lm_head_loss(const Act* hidden, const int* targets, int n, float scale, Act* d_hidden);
  // The LM head's copy of wte padded to padded_vocab() rows, brought up to the current
  // weights (queued): once per step, or once per decoding batch (the weights do not
  // change while it decodes).
  void refresh_lm_head();
  // The tied LM head's fp32 logits of n device rows into the device buffer logits
  // [n, padded_vocab()] (the columns past the vocabulary get 0), from the padded copy as
  // refresh_lm_head last left it; queued, no wait.
  void lm_head_logits(const Act* hidden, int n, float* logits);
  int padded_vocab() const { return (config_.vocab_size + 63) / 64 * 64; }
  void set_loss_scale(float scale);  // a blocking upload: call it outside a capture
  void queue_lm_head_loss(const Act* hidden, const int* targets, int n, Act* d_hidden);
  double read_lm_head_loss(int n);

 private:
  // Typed views of the parameters: Act* for the forward's weights, float* for gradients.
  struct Layer {
    Act* ln1_w; Act* ln1_b; Act* qkv_w; Act* qkv_b; Act* attn_proj_w; Act* attn_proj_b;
    Act* ln2_w; Act* ln2_b; Act* fc_w; Act* fc_b; Act* fc_proj_w; Act* fc_proj_b;
  };
  struct Weights {
    Act* wte; Act* wpe; std::vector<Layer> layers; Act* lnf_w; Act* lnf_b;
  };
  std::vector<CudaAttention> step_attentions() const;  // pass_attention without / with dropout
  void ensure_padded_wte();  // wte_padded_ allocated, with zero rows past the vocabulary

  GPT2Config config_;
  ParamLayout layout_;
  CudaStream stream_;  // before cublas_: the handle is destroyed first
  CudaAttention attention_ = CudaAttention::kFp32;
  DeviceBuffer<float> params_, grads_;
  DeviceBuffer<gpu::bf16> params_bf16_;  // the compute copy (bf16 only)
  Weights w_;
  ParamView g_;
  CublasContext cublas_;
  // Backward scratch (rows of the largest pass) and the attention workspace.
  DeviceBuffer<Act> dres_, dln_, datt_, dfc_, dgelu_, ddrop_, dqkv_act_;
  DeviceBuffer<float> att32_, datt32_;  // bf16 only: fp32 attention output / its gradient
  DeviceBuffer<char> attention_ws_, embedding_ws_;
  DeviceBuffer<float> colsum_ws_;  // the column sums' per-chunk partials (bias and layer-norm gradients)
  DeviceBuffer<Act> wte_padded_;  // the LM head's copy of wte, vocabulary padded with zero rows
  DeviceBuffer<float> logits_, row_loss_;
  DeviceBuffer<float> loss_scale_{1};  // the loss scale the LM head's kernel reads
  DeviceBuffer<gpu::bf16> dlogits_bf16_;
};

using CudaActivations = CudaActivationsOf<float>;
using CudaGPT2 = CudaGPT2Of<float>;
using CudaGPT2Bf16 = CudaGPT2Of<gpu::bf16>;

}  // namespace coconut::model
