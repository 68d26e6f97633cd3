// Stage 3 of the CPU kernel: InfLLM-V2 block selection (docs/op-spec.md, "Sparse mode" 2-6).
// Stage-1 scores of the level-1 compressed keys per query head, per-head normalizers (level-2 or
// exact LSE), the group sum over the G heads of a kv head, max-pooling into blocks, top-k.
// Prefill selects per token (SelectToken); decode runs the same steps in parallel slices of the
// windows (SelectDecodeSliced).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "cpu/call_context.h"
#include "cpu/query_lanes.h"

namespace infllmv2::cpu {

// Level-1 compressed keys of one (batch entry, kv head) and how many level-1/level-2 windows exist.
// Level-2 scores are means of level-1 scores (a dot product is linear), so level-2 keys are never
// built. fp16 models: prefill scores the keys once per token, so they are converted to fp32 once
// per call (k1); a decode step scores them once, so the microkernel converts them a tile at a time
// (k1_half).
struct CompressedKeys {
  const float* k1 = nullptr;          // [n1, D] fp32, or null when k1_half is set
  const uint16_t* k1_half = nullptr;  // [n1, D] IEEE half bits (fp16 models, decode)
  int64_t n1 = 0, n2 = 0;
  std::vector<float> k1_buffer;
};

template <typename T>
void BuildCompressedKeys(const Call<T>& c, int64_t b, int64_t h, bool convert_all, CompressedKeys& ck);

// Step 1: raw scores scale * q_g . K1_j of windows [j0, j1) into rows j0..j1-1 of `scores`
// ([window][gw]); keys 64 rows ahead are prefetched at the pace they are read (cold caches).
inline void Stage1Scores(const Microkernels& mk, const QueryLanes& sq, const CompressedKeys& ck, int64_t j0, int64_t j1,
                         int64_t D, float scale, float* scores) {
  if (j1 <= j0) return;
  constexpr int64_t kAhead = 64;
  const int64_t pf_rows = std::max<int64_t>(0, j1 - j0 - kAhead);
  if (!sq.few_rows.empty()) {
    const int rows = static_cast<int>(sq.rows), n = static_cast<int>(j1 - j0);
    if (ck.k1 != nullptr)
      mk.scores_few_rows(sq.few_rows.data(), rows, ck.k1 + j0 * D, n, D, scale, scores + j0 * sq.ws, sq.ws,
                         pf_rows > 0 ? ck.k1 + (j0 + kAhead) * D : nullptr, pf_rows * D * 4 / 64);
    else
      mk.scores_few_rows_half(sq.few_rows.data(), rows, ck.k1_half + j0 * D, n, D, scale, scores + j0 * sq.ws, sq.ws,
                              pf_rows > 0 ? ck.k1_half + (j0 + kAhead) * D : nullptr, pf_rows * D * 2 / 64);
    return;
  }
  if (ck.k1 != nullptr) {
    mk.scores_key_major(sq.qt.data(), sq.gw, ck.k1 + j0 * D, static_cast<int>(j1 - j0), D, scale, scores + j0 * sq.gw,
                        pf_rows > 0 ? ck.k1 + (j0 + kAhead) * D : nullptr, pf_rows * D * 4 / 64);
    return;
  }
  mk.scores_key_major_half(sq.qt.data(), sq.gw, ck.k1_half + j0 * D, static_cast<int>(j1 - j0), D, scale,
                           scores + j0 * sq.gw, pf_rows > 0 ? ck.k1_half + (j0 + kAhead) * D : nullptr,
                           pf_rows * D * 2 / 64);
}

// Step 2: the normalizer of each head: log-sum-exp over the visible level-2 scores (mean of four
// level-1 scores) or, exact, over the visible level-1 scores; +inf when nothing is visible, so
// that the head adds nothing. Taken from partials (max, sum of exps) of disjoint row ranges:
// decode computes one per slice inside its parallel scoring phase, prefill one over all rows.
struct LseRows {
  int64_t count;  // normalizer rows: level-2 windows, or level-1 ones when exact
  int step;       // level-1 rows between the four parts of a level-2 row; 0 when exact
};
inline LseRows LseRowsOf(const AttentionAttributes& a, const Stage1Levels& lv) {
  if (!lv.use_k2) return {lv.nvis1, 0};
  return {lv.nvis2, static_cast<int>(a.compress_kernel / a.compress_stride)};
}

// Normalizer rows owned by the level-1 rows [j0, j1) of a slice: [begin, end), of which [begin,
// ready) read only level-1 rows below j1 (so the slice can add them once it has scored); the rest
// read the next slice's rows and are added after the scoring phase.
struct LseSlice {
  int64_t begin, ready, end;
};
inline LseSlice LseSliceOf(const LseRows& r, int64_t j0, int64_t j1) {
  if (r.step == 0) {
    const int64_t b = std::min(j0, r.count), e = std::min(j1, r.count);
    return {b, e, e};
  }
  const int64_t b = std::min((j0 + 3) / 4, r.count), e = std::min((j1 + 3) / 4, r.count);
  const int64_t last = j1 - 1 - 3 * r.step;  // level-2 row J reads level-1 rows up to 4J + 3 step
  return {b, std::clamp<int64_t>(last >= 0 ? last / 4 + 1 : 0, b, e), e};
}

// Merges `parts` partials (m, l; ws floats each, in order) into sq.lse; padding heads get +inf.
void MergeLse(const float* m, const float* l, int64_t parts, int64_t G, QueryLanes& sq);

// Step 3: group_scores[j] = sum_g exp(scores[j][g] - lse[g]) for windows [j0, j1).
inline void Stage1GroupSum(const Microkernels& mk, const QueryLanes& sq, const float* scores, int64_t j0, int64_t j1,
                           float* group_scores) {
  if (j1 > j0) mk.stage1_group_sum(scores + j0 * sq.ws, sq.ws, j1 - j0, sq.lse.data(), group_scores + j0);
}

// Steps 4-5: block scores (max over the visible windows intersecting each block; rounded to bf16
// when score_precision is 1), then init + local + the budget's rest by rank key (ties: lower
// index). Writes the sorted selection of a token at `pos` into `selected` and returns its length.
int64_t SelectFromScores(const CallRules& r, int64_t pos, const float* group_scores, int64_t nvis1,
                         std::vector<uint64_t>& candidates, int32_t* selected);

// All steps for one prefill token at `pos` of entry b with query rows q (G heads, D apart).
// Returns the selection's length.
struct TokenStage1Scratch {
  QueryLanes sq;
  std::vector<float> scores, group_scores, m, l;
  std::vector<uint64_t> candidates;
};
template <typename T>
int64_t SelectToken(const Call<T>& c, const Microkernels& mk, const CompressedKeys& ck, const float* q, int64_t b,
                    int64_t pos, TokenStage1Scratch& x, int32_t* list);

// The same steps for the one token of each (b, h) of a decode step with needs_stage1[bh] set, each
// step split into DecodeSlices(BH) slices of the windows that run in parallel (the normalizers'
// partials merged, and where DecodeOnePhase the blocks ranked, by the last slice of each (b, h) to
// be scored), so that every thread works. Writes lens[bh] and the list at lists + bh * budget.
// Given `attend` and where DecodeOnePhase (at least as many (b, h) as cores), the same phase calls
// attend(bh) for every (b, h) once its list is final (on the thread that made it), books the time
// spent there in *attend_ms (profiling; not in the selection parts) and returns true; else false
// (the caller attends).
template <typename T>
bool SelectDecodeSliced(const Call<T>& c, const Microkernels& mk, const ParallelFor& pf,
                        const std::vector<CompressedKeys>& ck, const std::vector<QueryRows>& q_rows,
                        const std::vector<char>& needs_stage1, int32_t* lists, int64_t* lens,
                        const std::function<void(int64_t)>* attend = nullptr, double* attend_ms = nullptr);

}  // namespace infllmv2::cpu
