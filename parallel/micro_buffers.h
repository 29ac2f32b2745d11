// One micro-batch's buffers on one CPU pipeline stage (parallel/cpu_stage_compute.cpp), and
// the bytes they hold per row, which is what the scheduler and the simulator are told.
//
// Every buffer here is a MeteredVector (runtime/memory_meter.h), so the activation
// memory of a step is measured where it is allocated. Under ActivationPolicy::Keep the
// Activations keep every layer's buffers of every pass; under Recompute only each
// layer's cache (q|k|v and its gradient) and output, the stage input and the
// final-norm states stay per micro-batch (model/gpt2.h).
#pragma once

#include <cstdint>
#include <vector>

#include "model/batch.h"
#include "model/gpt2.h"
#include "parallel/partition.h"
#include "runtime/memory_meter.h"

namespace coconut::parallel {

struct StagePlace {
  StageLayers layers;
  bool first = false, last = false;  // embeds the tokens / applies the final norm and LM head
};

struct MicroBuffers {
  // Sizes every buffer for batch b on this stage; stage 0 also embeds the tokens.
  MicroBuffers(const model::GPT2& model, const model::SequenceBatch& b, const StagePlace& place,
               model::ActivationPolicy policy);

  model::Activations acts;           // this stage's layers only; x0 holds the stage input
  MeteredVector<float> embeds;       // stage 0: token embeddings, thought rows overwritten
  std::vector<uint8_t> is_thought;   // stage 0: rows whose input is a fed-back state
  MeteredVector<float> d_out;        // gradient w.r.t. the stage output (d_hidden on the last stage)
  MeteredVector<float> d_in;         // gradient w.r.t. the stage input (d_embeds on stage 0)
  // thoughts[p]: the states pass p feeds back, packed in the order of passes[p].feedback.
  // thought_grads[p]: their gradients as computed by pass p+1's backward on stage 0,
  // indexed by that consuming pass (thought_grads[p+1] answers thoughts[p]).
  std::vector<MeteredVector<float>> thoughts, thought_grads;
};

// Bytes a micro-batch of sequences of T columns holds on this stage per row (column of
// one sequence), by policy: its Activations and the [T*B, C] buffers above. The
// per-pass workspace, the backward scratch and the LM-head scratch are per stage, not
// per micro-batch, and are not included.
double micro_bytes_per_row(const model::GPT2Config& config, int T, const StagePlace& place,
                           model::ActivationPolicy policy);

}  // namespace coconut::parallel
