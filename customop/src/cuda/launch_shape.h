// The launch shape of the attention kernels that the host chooses from host facts only (no
// kernels here, so host code such as the GPU check's C ABI can include it): the split-KV count
// (split_kv.cuh); the CTA tiles are kernel_traits.h's.
#pragma once

#include <cstdint>

#include "cuda/kernel_traits.h"
#include "infllmv2/attention_params.h"

namespace infllmv2::cuda {

// Fill target: ~132 SMs (H100 SXM: 132, H200: 132, A100: 108) x 2 attention CTAs per SM (the
// traits' kMinCtasPerSm of the decode tile); a target, not tuned on a GPU.
constexpr int kTargetCtas = 132 * 2;
constexpr int kMaxKvSplits = 64;
constexpr int kMinKeysPerSplit = 128;  // below this a split is mostly fixed cost (Q load, combine)
constexpr int kCombineWarps = 4;       // rows per combine CTA (one warp per row)

// Splits per (row tile, kv head, entry): 1 (the plain kernel) when the plain grid already fills
// half the target; else enough to reach the target, at most kMaxKvSplits and at most one per
// kMinKeysPerSplit keys an entry can see (total_sequence_length bounds every entry's total; a
// forced-sparse call past the budget sees budget * block_size keys).
inline int ChooseKvSplits(const AttentionAttributes& attrs, const AttentionParams& params) {
  const int64_t rows = AttentionRowsPerCta(params.seq_len, params.group, params.head_size);
  const int64_t row_tiles = (params.seq_len * params.group + rows - 1) / rows;
  const int64_t ctas = row_tiles * params.kv_num_heads * params.batch;
  if (ctas <= 0 || 2 * ctas > kTargetCtas) return 1;
  int64_t keys = params.total_sequence_length;
  if (params.mode == AttentionMode::kForceSparse && params.budget * attrs.block_size < keys)
    keys = params.budget * attrs.block_size;
  int64_t n = (kTargetCtas + ctas - 1) / ctas;
  const int64_t cap = (keys + kMinKeysPerSplit - 1) / kMinKeysPerSplit;
  if (n > cap) n = cap;
  if (n > kMaxKvSplits) n = kMaxKvSplits;
  return n < 1 ? 1 : static_cast<int>(n);
}

// The split count a call runs with: RunOptions::kv_splits when forced (n >= 1; -1: 1), else
// ChooseKvSplits.
inline int KvSplitsFor(int forced, const AttentionAttributes& attrs, const AttentionParams& params) {
  return forced > 0 ? forced : forced < 0 ? 1 : ChooseKvSplits(attrs, params);
}

}  // namespace infllmv2::cuda
