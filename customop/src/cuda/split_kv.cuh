// Split-KV (flash-decoding) attention on CUDA, for calls with few query rows (decode, short
// chunks): the plain attention grid has ceil(S * G / rows per CTA) x Hkv x B CTAs, so one decode
// token at 128k with Hkv = 2 and B = 1 is 2 CTAs that each walk the whole cache. Here every such CTA's keys are
// cut into a.kv_splits parts processed by separate CTAs (block_attention.cuh's AttentionRows with
// kSplit): range mode (dense, sparse within the budget) in equal runs of key tiles from the
// entry's first visible tile to its total, list mode (sparse past the budget) in equal runs of
// selection-list entries. Each writes an unnormalized partial (O, running max, sum) in fp32; the
// combine kernel merges the partials of a row with the log-sum-exp rule and writes the output in T.
//
// The split count is chosen on the host from host facts only (launch_shape.h: ChooseKvSplits: batch, heads, S,
// total_sequence_length, budget, mode), never from seqlens_k: no host synchronization, so a decode
// step stays CUDA-graph capturable; the per-entry lengths are applied on the device, where a
// split with nothing to see (an entry shorter than the splits) writes the neutral partial.
#pragma once

#include <cstdint>

#include "cuda/block_attention.cuh"

namespace infllmv2::cuda {

// grid (ceil(S * G / Tr::kRows) * kv_splits, Hkv, B), block Tr::kThreads, Tr::kSmemBytes dynamic
// shared memory; blockIdx.x = row tile * kv_splits + split.
template <class T, class Tr>
IL_GLOBAL void IL_LAUNCH_BOUNDS(Tr::kThreads, Tr::kMinCtasPerSm) SplitKvAttentionKernel(KernelArgs<T> a, float* part) {
  const int x = static_cast<int>(blockIdx.x);
  AttentionRows<T, Tr, true>(a, x / a.kv_splits, x % a.kv_splits, part);
}

// grid ceil(B * S * H / 4), block 128: warp w merges row blockIdx.x * 4 + w (row (b * S + s) * H + n):
// M = max m_i, L = sum l_i 2^(m_i - M), O = sum O_i 2^(m_i - M) / L (0 when no split saw a key).
// Splits are merged in index order (deterministic).
template <class T, int D>
IL_GLOBAL void IL_LAUNCH_BOUNDS(32 * kCombineWarps, 1) KvCombineKernel(KernelArgs<T> a, const float* part) {
  const CallRules& p = a.rules;
  const int n = a.kv_splits, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kCombineWarps + static_cast<int>(threadIdx.x) / 32;
  if (row >= static_cast<int64_t>(p.batch) * p.seq_len * p.num_heads) return;
  const float* rec = part + row * n * (D + 2);
  float mx = -kInf;
  for (int i = 0; i < n; ++i) mx = fmaxf(mx, rec[i * (D + 2) + D]);
  float acc[D / 32], sum = 0.0f;
  for (auto& x : acc) x = 0.0f;
  if (mx != -kInf)
    for (int i = 0; i < n; ++i) {
      const float mi = rec[i * (D + 2) + D];
      if (mi == -kInf) continue;  // neutral partial
      const float w = Exp2(mi - mx);
      sum += rec[i * (D + 2) + D + 1] * w;
      for (int j = 0; j < D / 32; ++j) acc[j] += rec[i * (D + 2) + 32 * j + lane] * w;
    }
  const int64_t b = row / (static_cast<int64_t>(p.seq_len) * p.num_heads);
  const bool valid = LengthFaultOf(p, TotalLength(a.d.seqlens_k, b)) == LengthFault::kNone;
  const float inv = !valid ? QuietNaN() : sum > 0.0f ? 1.0f / sum : 0.0f;  // invalid entry: NaN rows
  T* out = a.d.output + row * D;
  for (int j = 0; j < D / 32; ++j) out[32 * j + lane] = FromF32<T>(acc[j] * inv);
}

}  // namespace infllmv2::cuda
