// What every stage of the CPU kernel shares within one call: the attributes, params, the call
// plan, the buffers and a few conversions. Read-only during the parallel phases.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <thread>
#include <type_traits>
#include <vector>

#include "common/call_plan.h"
#include "common/float16.h"
#include "cpu/attention_cpu.h"
#include "cpu/microkernels.h"
#include "infllmv2/attention_data.h"
#include "infllmv2/attention_params.h"

namespace infllmv2::cpu {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// A decode step splits the stage-1 windows and the attended blocks of each (b, h) into slices run
// in parallel: about two work items per core over all (b, h), at most kMaxDecodeSlices per (b, h).
// Fewer slices mean fewer partial states to merge and fewer idle items (docs/benchmarks.md, "Decode
// slices"). From the machine's core count, not the pool's size (which the op does not see), so a
// result does not depend on the session's thread count. INFLLMV2_DECODE_SLICES=N (1-8) sets it (tests, A/B).
constexpr int64_t kMaxDecodeSlices = 8;
// The machine's cores (hardware threads), at least 1.
inline int64_t Cores() {
  static const int64_t cores = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
  return cores;
}
// Whether a decode step over bh_count (b, h) runs as one parallel phase, each (b, h) ranked and
// attended by the thread that scored its last slice: where there are at least as many (b, h) as
// cores. From the machine, not the pool, like DecodeSlices. INFLLMV2_DECODE_ONE_PHASE=0 or 1 sets it
// (tests, A/B).
inline bool DecodeOnePhase(int64_t bh_count) {
  if (const char* forced = std::getenv("INFLLMV2_DECODE_ONE_PHASE"))
    if ((forced[0] == '0' || forced[0] == '1') && forced[1] == '\0') return forced[0] == '1';
  return bh_count >= Cores();
}
inline int64_t DecodeSlices(int64_t bh_count) {
  if (const char* forced = std::getenv("INFLLMV2_DECODE_SLICES")) {
    const long n = std::strtol(forced, nullptr, 10);
    if (n >= 1 && n <= kMaxDecodeSlices) return n;
  }
  const int64_t bh = std::max<int64_t>(bh_count, 1);
  return std::clamp<int64_t>((2 * Cores() + bh - 1) / bh, 1, kMaxDecodeSlices);
}

template <typename T>
inline void ToFloatRow(const T* src, float* dst, int64_t n) {
  if constexpr (std::is_same_v<T, Float16>) {
    SelectMicrokernels().half_to_float(reinterpret_cast<const uint16_t*>(src), dst, n);  // F16C where available
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = ToFloat(src[i]);
  }
}

// Fp32 view of a run of cache rows: the rows themselves for fp32, a converted copy in `buffer` otherwise.
template <typename T>
const float* RowsAsFloat(const T* rows, int64_t count, int64_t D, std::vector<float>& buffer) {
  if constexpr (std::is_same_v<T, float>) {
    return rows;
  } else {
    buffer.resize(static_cast<size_t>(count * D));
    ToFloatRow(rows, buffer.data(), count * D);
    return buffer.data();
  }
}

// Rotary embedding of one head vector, in place on fp32 values (GQA's convention).
inline void ApplyRotary(float* x, int64_t rotary_dim, bool interleaved, const float* cos_row, const float* sin_row) {
  const int64_t half = rotary_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const int64_t i0 = interleaved ? 2 * i : i;
    const int64_t i1 = interleaved ? 2 * i + 1 : i + half;
    const float x0 = x[i0], x1 = x[i1], c = cos_row[i], s = sin_row[i];
    x[i0] = x0 * c - x1 * s;
    x[i1] = x1 * c + x0 * s;
  }
}

// One call as the CPU stages see it: the buffers and their addressing (CallBuffers: the plan's
// rules and the data), the attributes, params and plan.
template <typename T>
struct Call : CallBuffers<T> {
  const AttentionAttributes& a;
  const AttentionParams& p;
  const CallPlan& plan;
  const T* comp = nullptr;  // level-1 compressed keys [B, Hkv, rules.compressed_capacity, D]
  KernelProfile* profile = nullptr;

  const EntryPlan& Entry(int64_t b) const { return plan.entries[static_cast<size_t>(b)]; }
  int64_t Total(int64_t b) const { return Entry(b).total; }
  int64_t Past(int64_t b) const { return Entry(b).past; }
  int64_t RotaryPosition(int64_t b, int64_t s) const { return infllmv2::RotaryPosition(Entry(b), Past(b) + s); }
};

// The fp32 query rows of tokens [s0, s0 + n) of batch entry b, the G heads of kv head h (row
// t * token_stride + g * D): the input itself for fp32 without rotary or packing, else converted
// and rotated (then rounded to T, as GQA stores it) into `buf` by the work item that uses them.
struct QueryRows {
  const float* q;
  int64_t token_stride;
};
template <typename T>
QueryRows QueryRowsOf(const Call<T>& c, int64_t b, int64_t s0, int64_t n, int64_t h, std::vector<float>& buf) {
  const auto& p = c.p;
  const int64_t D = p.head_size, G = p.group;
  if constexpr (std::is_same_v<T, float>) {
    if (!c.a.do_rotary && !p.packed_qkv)
      return {c.d.query + ((b * p.seq_len + s0) * p.num_heads + h * G) * D, p.num_heads * D};
  }
  buf.resize(static_cast<size_t>(n * G * D));
  std::vector<float> cs(static_cast<size_t>(p.rotary_dim));
  const int64_t half = p.rotary_dim / 2;
  for (int64_t s = s0; s < s0 + n; ++s) {
    if (c.a.do_rotary) {
      const int64_t pos = c.RotaryPosition(b, s);
      ToFloatRow(c.d.cos_cache + pos * half, cs.data(), half);
      ToFloatRow(c.d.sin_cache + pos * half, cs.data() + half, half);
    }
    for (int64_t g = 0; g < G; ++g) {
      float* dst = buf.data() + ((s - s0) * G + g) * D;
      ToFloatRow(c.QueryInput(b, s, h * G + g), dst, D);
      if (c.a.do_rotary) {
        ApplyRotary(dst, p.rotary_dim, c.a.rotary_interleaved != 0, cs.data(), cs.data() + half);
        for (int64_t i = 0; i < D; ++i) dst[i] = ToFloat(FromFloat<T>(dst[i]));  // as GQA stores it in T
      }
    }
  }
  return {buf.data(), G * D};
}

}  // namespace infllmv2::cpu
