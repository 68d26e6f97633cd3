// Stages 1 and 2 on CUDA (mirrors cpu/cache_write.cc): the KV cache write with in-kernel rotary
// (packed or separate QKV, shared past/present buffers), the rotated query rows, and the
// incremental level-1 compressed keys. One source for nvcc and the host emulation.
#pragma once

#include "cuda/kernel_args.h"

namespace infllmv2::cuda {

constexpr int kCacheThreads = 128;
constexpr int kCacheRowsPerBlock = 16;

// grid (CacheWriteTiles, B * Hkv): present rows [r0, r0 + 16) of (b, h). Rows < past: copied
// (unless in place); [past, past + S): the new (rotated) key and the value; the rest: zero (unless
// in place). In place only the new rows are written, so the grid covers S rows from the entry's
// past instead of the whole capacity (a decode step: one tile, not capacity / 16).
template <class T>
IL_GLOBAL void KvCacheWriteKernel(KernelArgs<T> a) {
  const CallRules& p = a.rules;
  const int bh = static_cast<int>(blockIdx.y), b = bh / p.kv_num_heads, h = bh % p.kv_num_heads;
  const EntryPlan e = PlanEntry(p, a.d.seqlens_k, b);
  if (!e.valid) return;  // lengths the buffers cannot hold: nothing written (docs/op-spec.md)
  const int D = p.head_size;
  const int r0 = (p.kv_in_place ? static_cast<int>(e.past) : 0) + static_cast<int>(blockIdx.x) * kCacheRowsPerBlock;
  const int64_t r_end =
      p.kv_in_place && e.past + p.seq_len < p.present_capacity ? e.past + p.seq_len : p.present_capacity;
  T* pk = a.d.present_key + a.CacheOffset(b, h, p.present_capacity);
  T* pv = a.d.present_value + a.CacheOffset(b, h, p.present_capacity);
  const T* qk = p.kv_in_place ? nullptr : a.d.past_key + a.CacheOffset(b, h, p.past_capacity);
  const T* qv = p.kv_in_place ? nullptr : a.d.past_value + a.CacheOffset(b, h, p.past_capacity);
  const int half = p.rotary_dim / 2;
  for (int idx = static_cast<int>(threadIdx.x); idx < kCacheRowsPerBlock * D; idx += kCacheThreads) {
    const int r = r0 + idx / D, i = idx % D;
    if (r >= r_end) break;
    const int s = r - static_cast<int>(e.past);
    if (s >= 0 && s < p.seq_len) {
      StoreGlobal(pv + static_cast<int64_t>(r) * D + i, LoadGlobal(a.ValueInput(b, s, h) + i));
      const T* k = a.KeyInput(b, s, h);
      if (!p.do_rotary) {
        StoreGlobal(pk + static_cast<int64_t>(r) * D + i, LoadGlobal(k + i));
      } else {
        const int64_t pos = RotaryPosition(e, r);
        StoreGlobal(pk + static_cast<int64_t>(r) * D + i,
                    FromF32<T>(RotaryElement(k, i, p.rotary_dim, p.rotary_interleaved,
                                             a.d.cos_cache + static_cast<int64_t>(pos) * half,
                                             a.d.sin_cache + static_cast<int64_t>(pos) * half)));
      }
    } else if (!p.kv_in_place) {
      const bool from_past = r < e.past;
      StoreGlobal(pk + static_cast<int64_t>(r) * D + i,
                  from_past ? LoadGlobal(qk + static_cast<int64_t>(r) * D + i) : T{0});
      StoreGlobal(pv + static_cast<int64_t>(r) * D + i,
                  from_past ? LoadGlobal(qv + static_cast<int64_t>(r) * D + i) : T{0});
    }
  }
}

// grid (B * S), the query heads of one token, rotated, rounded to T (as GQA stores them) into
// out [B, S, H, D]. Only when the op rotates or the input is packed.
template <class T>
IL_GLOBAL void QueryPrepKernel(KernelArgs<T> a, T* out) {
  const CallRules& p = a.rules;
  const int bs = static_cast<int>(blockIdx.x), b = bs / p.seq_len, s = bs % p.seq_len, D = p.head_size;
  const EntryPlan e = PlanEntry(p, a.d.seqlens_k, b);
  const int64_t pos = RotaryPosition(e, e.past + s);
  const int half = p.rotary_dim / 2;
  for (int idx = static_cast<int>(threadIdx.x); idx < p.num_heads * D; idx += kCacheThreads) {
    const int n = idx / D, i = idx % D;
    const T* x = a.QueryInput(b, s, n);
    StoreGlobal(out + static_cast<int64_t>(bs) * p.num_heads * D + idx,
                p.do_rotary ? FromF32<T>(RotaryElement(x, i, p.rotary_dim, p.rotary_interleaved,
                                                       a.d.cos_cache + static_cast<int64_t>(pos) * half,
                                                       a.d.sin_cache + static_cast<int64_t>(pos) * half))
                            : LoadGlobal(x + i));
  }
}

constexpr int kCompressRowsPerBlock = 8;

// Tiles of the cache-write grid: every present row, or in place the S new rows of an entry.
inline int64_t CacheWriteTiles(const CallRules& p) {
  return ((p.kv_in_place ? p.seq_len : p.present_capacity) + kCacheRowsPerBlock - 1) / kCacheRowsPerBlock;
}
// Tiles of the compression grid: every compressed row, or in place the windows a call of S tokens
// can complete (at most S / stride + 1 past the past's windows; 0 past windows on a first prompt).
inline int64_t CompressTiles(const CallRules& p) {
  const int64_t rows = p.compressed_in_place ? p.seq_len / p.compress_stride + 1 : p.compressed_capacity;
  return (rows + kCompressRowsPerBlock - 1) / kCompressRowsPerBlock;
}

// grid (CompressTiles, B * Hkv): compressed rows [j0, j0 + 8) of (b, h). j < past_windows: copied
// from past_compressed_key (unless in place); j < windows: the fp32 mean of the window's present
// keys, stored in T; the rest zero (unless in place). In place only the new windows are written,
// and the grid starts at the entry's past windows. Runs after the cache write (same stream).
template <class T>
IL_GLOBAL void CompressKernel(KernelArgs<T> a) {
  const CallRules& p = a.rules;
  const int bh = static_cast<int>(blockIdx.y), b = bh / p.kv_num_heads, h = bh % p.kv_num_heads;
  const EntryPlan e = PlanEntry(p, a.d.seqlens_k, b);
  if (!e.valid) return;  // lengths the buffers cannot hold: nothing written (docs/op-spec.md)
  const int D = p.head_size;
  const int j0 = (p.compressed_in_place ? static_cast<int>(e.past_windows) : 0) +
                 static_cast<int>(blockIdx.x) * kCompressRowsPerBlock;
  T* dst = a.comp + a.CacheOffset(b, h, p.compressed_capacity);
  const T* keys = a.d.present_key + a.CacheOffset(b, h, p.present_capacity);
  const float inv = 1.0f / static_cast<float>(p.compress_kernel);
  for (int idx = static_cast<int>(threadIdx.x); idx < kCompressRowsPerBlock * D; idx += kCacheThreads) {
    const int j = j0 + idx / D, i = idx % D;
    if (j >= p.compressed_capacity || (p.compressed_in_place && j >= e.windows)) break;
    if (j < e.past_windows) {
      if (!p.compressed_in_place)
        StoreGlobal(dst + static_cast<int64_t>(j) * D + i,
                    LoadGlobal(a.d.past_compressed_key + a.CacheOffset(b, h, p.past_compressed_capacity) +
                               static_cast<int64_t>(j) * D + i));
    } else if (j < e.windows) {
      float sum = 0.0f;
      const int t0 = j * p.compress_stride;
      for (int t = t0; t < t0 + p.compress_kernel; ++t)
        sum += ToF32(LoadGlobal(keys + static_cast<int64_t>(t) * D + i));
      StoreGlobal(dst + static_cast<int64_t>(j) * D + i, FromF32<T>(sum * inv));
    } else if (!p.compressed_in_place) {
      StoreGlobal(dst + static_cast<int64_t>(j) * D + i, T{0});
    }
  }
}

}  // namespace infllmv2::cuda
