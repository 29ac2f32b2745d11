// Greedy generation of many batches through the pipeline stages of one replica, with a
// batch in flight on every stage: how a pipeline run evaluates (curriculum::evaluate's
// BatchGenerator), each rank holding only its stage's parameters.
//
// The replica's S ranks run the same driver in lockstep, tick by tick, over S lanes,
// each lane decoding one batch (curriculum::BatchDecoding) on its own per-stage KV
// caches (model::StageDecoder). At tick t lane t mod S enters stage 0 with its next
// forward (a new batch when it has none), and stage s works on the lane that entered
// s ticks before, taking its rows from stage s - 1 and sending its own to stage s + 1.
// The lane that leaves the last stage at tick t has its greedy tokens and final hidden
// states broadcast to the replica; every rank then takes the same decisions for it, and
// at tick t + 1 it enters stage 0 again, with its thoughts, as the ring schedule of
// training feeds them back. So every stage is busy while there are S batches or more,
// and each batch runs exactly the forwards that generate_greedy runs on one decoder:
// the same generations, bit for bit.
#pragma once

#include <vector>

#include "curriculum/generate.h"
#include "model/gpt2.h"
#include "parallel/comm.h"
#include "parallel/partition.h"

namespace coconut::launcher {

// Collective over `pipeline` (the replica's ranks by stage, rank s running
// partition[s]); every rank passes the same batches and options. Returns each batch's
// generations, in order, on every rank: those of the first batches only when
// options.stop_requested stopped it (agreed over the ranks: the same on every rank).
std::vector<std::vector<curriculum::Generation>> generate_through_stages(
    const model::GPT2& model, parallel::Communicator& pipeline, const std::vector<parallel::StageLayers>& partition,
    const std::vector<std::vector<const curriculum::BuiltSample*>>& batches, const curriculum::Tokenizer& tok,
    const curriculum::GenerateOptions& options);

}  // namespace coconut::launcher
