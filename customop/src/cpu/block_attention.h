// Stage 4 of the CPU kernel: softmax attention of a work item's query rows over a list of key
// blocks (online softmax; the rows in vector lanes, each 64-key tile scored key-major). Dense
// rows attend to every block up to their own (from their first key), sparse rows to their list.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/call_context.h"

namespace infllmv2::cpu {

// Online-softmax state of a set of query rows (token x head), D floats of accumulator each.
struct RowStates {
  std::vector<float> m, l, acc;
  void Reset(int64_t rows, int64_t D) {
    m.assign(static_cast<size_t>(rows), kNegInf);
    l.assign(static_cast<size_t>(rows), 0.0f);
    acc.assign(static_cast<size_t>(rows * D), 0.0f);
  }
};

// Per-thread scratch of the attention loop.
struct Scratch {
  std::vector<float> rows_k, rows_v;  // fp32 copies of a tile's key/value rows (fp16, prefill)
  std::vector<float> km;              // key-major scores [64][width] of one lane vector
  std::vector<int32_t> lo, hi;        // visible keys [lo, hi) of each lane in the current tile
  std::vector<float> acc_lanes;       // small head sizes: the accumulators lane-major, [D][width] per lane vector
};

// Whether a head size takes the lane-major p.V path (Microkernels::accumulate_lanes): below 4
// vectors per row the row kernel has too few independent FMA chains per value load (head sizes
// 8, 16, 32 with AVX-512; D = 8 is not even one vector there).
inline bool LaneMajorAccumulators(const Microkernels& mk, int64_t D) { return D < 4 * mk.width; }

// What each token of a work item attends to: its sorted block list (len >= 0), or every key from
// dense_lo up to its own position (len = -1).
struct TokenBlocks {
  std::vector<const int32_t*> list;
  std::vector<int64_t> len;
  std::vector<int64_t> dense_lo;
};

// One call of AttendBlocks: tokens [t0, t1) of kv head h of entry b walk `blocks` (ascending; the
// union of their lists, or a slice of it), skipping blocks not in their own list.
struct AttendWork {
  int64_t b = 0, h = 0, t0 = 0, t1 = 0;
  QueryRows q{nullptr, 0};
  const int32_t* blocks = nullptr;
  int64_t n_blocks = 0;
  const TokenBlocks* tokens = nullptr;
};

template <typename T>
void AttendBlocks(const Call<T>& c, const Microkernels& mk, const AttendWork& w, RowStates& st, Scratch& sc);

// Ascending block list of one token: its dense range (len -1, keys from dense_lo), or its list.
inline std::vector<int32_t> BlocksOf(int64_t len, int64_t dense_lo, int64_t pos, int64_t Bk, const int32_t* list) {
  std::vector<int32_t> v;
  if (len < 0) {
    for (int64_t blk = dense_lo / Bk; blk <= pos / Bk; ++blk) v.push_back(static_cast<int32_t>(blk));
  } else {
    v.assign(list, list + len);
  }
  return v;
}

// Normalized output rows of token s of (b, h) = bh from its softmax state (l, acc: G heads).
template <typename T>
void WriteRows(const Call<T>& c, int64_t bh, int64_t s, const float* l, const float* acc);

// Merges the partial softmax states of `parts` key slices of one token's G heads (slice i: m and
// l at i * G, acc at i * G * D) into the unnormalized whole (l_out, acc_out: zero on entry), in
// slice order (deterministic); slices that saw no key add nothing. As the CUDA split-KV combine.
void MergePartials(const float* m, const float* l, const float* acc, int64_t parts, int64_t G, int64_t D, float* l_out,
                   float* acc_out);

// Attention of a decode step: the one token of each (b, h) = bh over its blocks (lens[bh] -1:
// dense from dense_lo[bh]; 0: padding, zero rows; else the list at lists + bh * budget), the
// blocks split into up to DecodeSlices(BH) slices of at least kMinBlocksPerSlice run in parallel,
// then merged. Writes the output rows.
// The same for one (b, h) = bh with all its blocks in one go (one slice, no merge), on the calling
// thread: a decode step with at least as many (b, h) as cores attends each as its selection ends.
template <typename T>
void AttendDecodeWhole(const Call<T>& c, const Microkernels& mk, const QueryRows& q, int64_t bh, int64_t len,
                       int64_t dense_lo, const int32_t* list);

template <typename T>
void AttendDecodeSliced(const Call<T>& c, const Microkernels& mk, const ParallelFor& pf,
                        const std::vector<QueryRows>& q_rows, const int64_t* lens, const int64_t* dense_lo,
                        const int32_t* lists);

}  // namespace infllmv2::cpu
