// launcher/device_step.h for builds without the CUDA backend: train.device: cuda is
// refused with the reason (preflight reports it before anything is written).
#include "launcher/device_step.h"

#include "runtime/check.h"

namespace coconut::launcher {

bool device_available(std::string* why) {
  if (why) *why = "this coconut was built without the CUDA backend (configure with -DCOCONUT_CUDA=ON where nvcc is)";
  return false;
}

std::unique_ptr<DeviceStep> make_device_step(const TrainConfig&, const model::GPT2&, const model::AdamW&,
                                             const DevicePlacement&) {
  std::string why;
  device_available(&why);
  COCONUT_FAIL("train.device: cuda: {}", why);
}

std::unique_ptr<parallel::StageCompute> make_device_stage_compute(const TrainConfig&, model::GPT2&,
                                                                  const parallel::StagePlace&, int) {
  std::string why;
  device_available(&why);
  COCONUT_FAIL("train.device: cuda: {}", why);
}

std::unique_ptr<model::Decoder> make_device_decoder(const TrainConfig&, const model::GPT2&, model::ThoughtSource, int) {
  std::string why;
  device_available(&why);
  COCONUT_FAIL("decoding on cuda: {}", why);
}

}  // namespace coconut::launcher
