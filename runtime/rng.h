// Counter-based random numbers: Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel
// random numbers: as easy as 1, 2, 3", SC'11). A value is a pure function of
// (seed, stream ids, index), so initialisation, dropout and data order come out the
// same whatever the thread count or the PP/DP layout (DESIGN.md section 7).
//
//   CounterRng rng(seed, {kStreamDropout, step, sample_id});
//   float u = rng.uniform();
//
// Layout of one Philox call: key = the 64-bit seed; counter = (block index: 64 bits,
// stream hash: 64 bits). The stream hash is a keyed Philox hash of the ordered stream
// ids, so two different id tuples share a stream with probability about 2^-64.
// Each block gives 4 u32 values; next_u32() walks them in order, so the i-th u32 of a
// stream is word i % 4 of block i / 4, and set_position(i) jumps straight to it.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>

namespace coconut {

// One Philox4x32-10 evaluation: 10 rounds of the counter under the key. Matches
// Random123's philox4x32_10 (tested against its published known-answer vectors).
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

class CounterRng {
 public:
  CounterRng(uint64_t seed, std::initializer_list<uint64_t> stream);

  uint32_t next_u32();
  uint64_t next_u64();  // two u32: low word first
  // Uniform in [0, 1): the top 24 bits of one u32 scaled by 2^-24 (every value exact).
  float uniform();
  // Standard normal by Box-Muller from exactly two u32 (the second value of the pair is
  // dropped, so every normal() consumes the same amount and positions stay predictable).
  float normal();
  // Uniform integer in [0, n), unbiased (Lemire's multiply-and-reject); n >= 1.
  uint64_t below(uint64_t n);

  // Position = number of u32 consumed since the stream start.
  uint64_t position() const { return position_; }
  void set_position(uint64_t u32_index) { position_ = u32_index; }

  // The raw block at a block index of this stream (does not move the position).
  std::array<uint32_t, 4> block(uint64_t block_index) const;
  // What block() computes from: the Philox key and the stream hash (the CUDA dropout
  // runs the same Philox on the device from these, runtime/cuda/ops.h).
  std::array<uint32_t, 2> key() const { return key_; }
  uint64_t stream_hash() const { return stream_hash_; }

 private:
  std::array<uint32_t, 2> key_;
  uint64_t stream_hash_;
  uint64_t position_ = 0;
  // Cache of the block last computed, so next_u32() costs one Philox call per 4 values.
  uint64_t cached_block_ = UINT64_MAX;
  std::array<uint32_t, 4> cache_{};
};

}  // namespace coconut
