// A pipeline stage on the CUDA model (stage_compute.h; train.device: cuda with
// parallel.pp > 1): the stage's layers run on this rank's GPU through model/cuda_gpt2.h,
// in fp32 or in bf16 mixed precision, with the micro-batches' activations on the device
// (only the stage's layers laid out). Built only with the CUDA backend.
//
// What stays on the host, so that everything around the ops is the CPU pipeline's code:
//   - the weights: the host model holds the master copy; begin_step uploads the stage's
//     ranges, end_step downloads their gradients; the ZeRO-1 AdamW, the gradient norm
//     over the pipeline and the tied embedding run on the host (PipelineExecutor);
//   - the messages: a send is copied from the device into host memory and goes over MPI,
//     a receive lands in host memory and is copied to the device (bf16 rows travel as
//     fp32, which holds them exactly). Ranks may therefore share a GPU.
// Not yet: NCCL point-to-point messages, device-side AdamW, CUDA graphs, the
// hidden-state loss hook (the <eot> classifier), recomputation.
#pragma once

#include <memory>

#include "model/cuda_gpt2.h"
#include "parallel/stage_compute.h"

namespace coconut::parallel {

// host: the model whose weights and gradients the executor owns (it must outlive the
// compute). Makes GPU local_rank % (visible GPUs) current (select_shared_device).
// bf16: CudaGPT2Bf16, else CudaGPT2 (fp32).
std::unique_ptr<StageCompute> make_cuda_stage_compute(model::GPT2& host, const StagePlace& place, bool bf16,
                                                      model::CudaAttention attention, int local_rank);

}  // namespace coconut::parallel
