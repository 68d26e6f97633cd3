#include "cpu/selection.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <utility>

#include "cpu/reused_scratch.h"
#include "cpu/stage_timer.h"

namespace infllmv2::cpu {
template <typename T>
void BuildCompressedKeys(const Call<T>& c, int64_t b, int64_t h, bool convert_all, CompressedKeys& ck) {
  const EntryPlan& e = c.Entry(b);
  ck.n1 = e.windows;
  ck.n2 = e.level2_windows;
  const T* rows = c.comp + c.CacheOffset(b, h, c.rules.compressed_capacity);
  if constexpr (std::is_same_v<T, Float16>) {
    if (!convert_all) {
      ck.k1_half = reinterpret_cast<const uint16_t*>(rows);
      return;
    }
  }
  ck.k1 = RowsAsFloat(rows, ck.n1, c.p.head_size, ck.k1_buffer);
}

void MergeLse(const float* m, const float* l, int64_t parts, int64_t G, QueryLanes& sq) {
  const int64_t ws = sq.ws;
  for (int64_t g = 0; g < ws; ++g) {
    float mx = kNegInf;
    for (int64_t i = 0; i < parts; ++i) mx = std::max(mx, m[i * ws + g]);
    float sum = 0.0f;
    for (int64_t i = 0; i < parts; ++i)
      if (l[i * ws + g] > 0.0f) sum += l[i * ws + g] * std::exp(m[i * ws + g] - mx);
    sq.lse[g] = g < G && sum > 0.0f ? mx + std::log(sum) : std::numeric_limits<float>::infinity();
  }
}

int64_t SelectFromScores(const CallRules& r, int64_t pos, const float* group_scores, int64_t nvis1,
                         std::vector<uint64_t>& candidates, int32_t* selected) {
  const SelectionSpan sp = SpanOf(r, pos);
  const BlockWindows bw = BlockWindowsOf(r);
  const bool bf16_scores = r.score_precision != 0;
  candidates.clear();
  for (int64_t b = sp.init_hi; b < sp.local_lo; ++b) {
    const int64_t jlo = std::max<int64_t>(0, b * bw.per_block - bw.back);
    const int64_t jhi = std::min(nvis1 - 1, b * bw.per_block + bw.ahead);
    float best = kNegInf;
    for (int64_t j = jlo; j <= jhi; ++j) best = std::max(best, group_scores[j]);
    // score_precision 1: the group sums in bf16 (nearest even) before pooling. Rounding is monotone,
    // so rounding the block's maximum equals the maximum of the rounded sums (one rounding per block).
    if (bf16_scores) best = ToFloat(FromFloat<BFloat16>(best));
    candidates.push_back(RankKey(best, b));
  }
  const int64_t take = sp.take;
  if (take < static_cast<int64_t>(candidates.size()))
    std::nth_element(candidates.begin(), candidates.begin() + take, candidates.end(), std::greater<uint64_t>());
  int64_t n = 0;
  for (int64_t b = 0; b < sp.init_hi; ++b) selected[n++] = static_cast<int32_t>(b);
  for (int64_t i = 0; i < take; ++i) selected[n + i] = BlockOfKey(candidates[i]);
  std::sort(selected + n, selected + n + take);
  n += take;
  for (int64_t b = sp.local_lo; b <= sp.qb; ++b) selected[n++] = static_cast<int32_t>(b);
  return n;
}

template <typename T>
int64_t SelectToken(const Call<T>& c, const Microkernels& mk, const CompressedKeys& ck, const float* q, int64_t b,
                    int64_t pos, TokenStage1Scratch& x, int32_t* list) {
  const auto& a = c.a;
  const int64_t G = c.p.group, D = c.p.head_size;
  const Stage1Levels lv = LevelsOf(c.rules, c.Entry(b), pos);
  x.sq.Set(mk, q, G, D);
  x.scores.resize(static_cast<size_t>(x.sq.ws * lv.nvis1));
  Stage1Scores(mk, x.sq, ck, 0, lv.nvis1, D, c.p.scale, x.scores.data());
  const LseRows rows = LseRowsOf(a, lv);
  x.m.resize(static_cast<size_t>(x.sq.ws));
  x.l.resize(static_cast<size_t>(x.sq.ws));
  mk.stage1_lse_partial(x.scores.data(), x.sq.ws, 0, rows.count, rows.step, x.m.data(), x.l.data());
  MergeLse(x.m.data(), x.l.data(), 1, G, x.sq);
  x.group_scores.resize(static_cast<size_t>(lv.nvis1));
  Stage1GroupSum(mk, x.sq, x.scores.data(), 0, lv.nvis1, x.group_scores.data());
  return SelectFromScores(c.rules, pos, x.group_scores.data(), lv.nvis1, x.candidates, list);
}

template <typename T>
bool SelectDecodeSliced(const Call<T>& c, const Microkernels& mk, const ParallelFor& pf,
                        const std::vector<CompressedKeys>& ck, const std::vector<QueryRows>& q_rows,
                        const std::vector<char>& needs_stage1, int32_t* lists, int64_t* lens,
                        const std::function<void(int64_t)>* attend, double* attend_ms) {
  const auto& a = c.a;
  const auto& p = c.p;
  const int64_t Hkv = p.kv_num_heads, G = p.group, D = p.head_size, K = p.budget, BH = p.batch * Hkv;
  // Contexts within the budget take every block without scoring: no parallel phases to hand out.
  if (std::find(needs_stage1.begin(), needs_stage1.end(), char{1}) == needs_stage1.end()) return false;
  // Raw scores and group sums in slices of the windows; the normalizers' partials with the scores,
  // merged by the last slice of each (b, h) to be scored. The scores are written in full before they are read (no zero
  // fill). The scores and group sums of every (b, h) share one buffer that the calling thread keeps between steps
  // (ReusedScratch): no fresh pages per step. Per (b, h): ws x n1 scores, then n1 group sums.
  const int64_t ws = QueryLanes::ScoreStride(mk, G, D);  // the floats of one window's scores (sq[bh].ws)
  std::vector<float*> scores(static_cast<size_t>(BH), nullptr), group_scores(static_cast<size_t>(BH), nullptr);
  std::vector<size_t> at(static_cast<size_t>(BH), 0);
  std::vector<QueryLanes> sq(static_cast<size_t>(BH));
  std::vector<Stage1Levels> levels(static_cast<size_t>(BH), Stage1Levels{false, 0, 0});
  size_t total = 0;
  for (int64_t bh = 0; bh < BH; ++bh) {
    if (!needs_stage1[bh]) continue;
    levels[bh] = LevelsOf(c.rules, c.Entry(bh / Hkv), c.Past(bh / Hkv));
    sq[bh].Set(mk, q_rows[bh].q, G, D);
    at[bh] = total;
    total += static_cast<size_t>((ws + 1) * std::max<int64_t>(ck[bh].n1, 1));
  }
  const ReusedScratch<float> buffer(total);
  for (int64_t bh = 0; bh < BH; ++bh)
    if (needs_stage1[bh]) {
      scores[bh] = buffer.data() + at[bh];
      group_scores[bh] = scores[bh] + ws * std::max<int64_t>(ck[bh].n1, 1);
    }
  const int64_t S = DecodeSlices(BH);
  auto slice_range = [S](int64_t count, int64_t slice) {
    const int64_t per = ((count + S - 1) / S + kBlockKeys - 1) / kBlockKeys * kBlockKeys;
    return std::pair<int64_t, int64_t>{std::min(count, slice * per), std::min(count, (slice + 1) * per)};
  };
  // Normalizer partials: per slice, the rows it could add itself (scoring phase), then the rows
  // that straddle into the next slice (once all are scored); 2 * S partials per (b, h).
  std::vector<float> lse_m(static_cast<size_t>(BH * 2 * S * ws));
  std::vector<float> lse_l(lse_m.size());
  auto lse_at = [&](int64_t bh, int64_t i) { return static_cast<size_t>((bh * 2 * S + i) * ws); };
  StageTimer phases(c.profile);
  // The normalizers of (b, h) once every slice is scored: the partials of the rows that straddle
  // into the next slice, then all 2 S merged.
  auto finish_normalizers = [&](int64_t bh) {
    const LseRows rows = LseRowsOf(a, levels[bh]);
    for (int64_t slice = 0; slice < S; ++slice) {
      const auto [j0, j1] = slice_range(levels[bh].nvis1, slice);
      const LseSlice ls = LseSliceOf(rows, j0, j1);
      mk.stage1_lse_partial(scores[bh], ws, ls.ready, ls.end, rows.step, lse_m.data() + lse_at(bh, 2 * slice + 1),
                            lse_l.data() + lse_at(bh, 2 * slice + 1));
    }
    MergeLse(lse_m.data() + lse_at(bh, 0), lse_l.data() + lse_at(bh, 0), 2 * S, G, sq[bh]);
  };
  auto rank = [&](int64_t bh) {
    std::vector<uint64_t> candidates;
    lens[bh] =
        SelectFromScores(c.rules, c.Past(bh / Hkv), group_scores[bh], levels[bh].nvis1, candidates, lists + bh * K);
  };
  // One phase where DecodeOnePhase (at least as many (b, h) as cores): the last slice of a (b, h) to be
  // scored (its acquire of the countdown sees every slice's scores) finishes its normalizers, sums
  // all its windows, ranks its blocks and, given `attend`, attends with them (a (b, h) without
  // stage 1: its first slice attends). Fewer (b, h): that slice finishes the normalizers, then a
  // second phase sums the windows in slices, and the last slice of a (b, h) to finish ranks its
  // blocks. Either way no stage waits on a hand-off of its own.
  const bool rank_while_scoring = DecodeOnePhase(BH);
  const bool fused = rank_while_scoring && attend != nullptr;
  enum Part : size_t { kScore, kNormalizers, kGroupSum, kTopK, kAttend };
  std::vector<std::atomic<int64_t>> scoring_left(static_cast<size_t>(BH));
  for (auto& left : scoring_left) left.store(S, std::memory_order_relaxed);
  PartTimes parts(c.profile, static_cast<size_t>(BH * S), 5);
  pf(static_cast<size_t>(BH * S), [&](size_t item) {
    const int64_t bh = static_cast<int64_t>(item) / S, slice = static_cast<int64_t>(item) % S;
    auto t = parts.Now();
    auto part_done = [&](Part part) {
      const auto now = parts.Now();
      parts.Add(item, part, t, now);
      t = now;
    };
    if (!needs_stage1[bh]) {
      if (fused && slice == 0) {
        (*attend)(bh);
        part_done(kAttend);
      }
      return;
    }
    const auto [j0, j1] = slice_range(levels[bh].nvis1, slice);
    Stage1Scores(mk, sq[bh], ck[bh], j0, j1, D, p.scale, scores[bh]);
    part_done(kScore);
    const LseRows rows = LseRowsOf(a, levels[bh]);
    const LseSlice ls = LseSliceOf(rows, j0, j1);
    mk.stage1_lse_partial(scores[bh], ws, ls.begin, ls.ready, rows.step, lse_m.data() + lse_at(bh, 2 * slice),
                          lse_l.data() + lse_at(bh, 2 * slice));
    const bool last = scoring_left[bh].fetch_sub(1, std::memory_order_acq_rel) == 1;
    if (last) finish_normalizers(bh);
    part_done(kNormalizers);
    if (!last || !rank_while_scoring) return;
    Stage1GroupSum(mk, sq[bh], scores[bh], 0, levels[bh].nvis1, group_scores[bh]);
    part_done(kGroupSum);
    rank(bh);
    part_done(kTopK);
    if (!fused) return;
    (*attend)(bh);
    part_done(kAttend);
  });
  double KernelProfile::*const slots[] = {&KernelProfile::score_ms, &KernelProfile::lse_ms,
                                          &KernelProfile::group_sum_ms, &KernelProfile::topk_ms, nullptr};
  const double attended = phases.MarkParts(slots, parts);
  if (attend_ms != nullptr) *attend_ms = attended;
  if (rank_while_scoring) return fused;
  std::vector<std::atomic<int64_t>> summing_left(static_cast<size_t>(BH));
  for (auto& left : summing_left) left.store(S, std::memory_order_relaxed);
  PartTimes sum_parts(c.profile, static_cast<size_t>(BH * S));
  pf(static_cast<size_t>(BH * S), [&](size_t item) {
    const int64_t bh = static_cast<int64_t>(item) / S, slice = static_cast<int64_t>(item) % S;
    if (!needs_stage1[bh]) return;
    const auto start = sum_parts.Now();
    const auto [j0, j1] = slice_range(levels[bh].nvis1, slice);
    Stage1GroupSum(mk, sq[bh], scores[bh], j0, j1, group_scores[bh]);
    const auto summed = sum_parts.Now();
    if (summing_left[bh].fetch_sub(1, std::memory_order_acq_rel) == 1) rank(bh);
    sum_parts.Record(item, start, summed);
  });
  phases.MarkSplit(&KernelProfile::group_sum_ms, &KernelProfile::topk_ms, sum_parts.FirstShare());
  return false;
}

#define INFLLMV2_SELECTION(T)                                                                                        \
  template void BuildCompressedKeys<T>(const Call<T>&, int64_t, int64_t, bool, CompressedKeys&);                     \
  template int64_t SelectToken<T>(const Call<T>&, const Microkernels&, const CompressedKeys&, const float*, int64_t, \
                                  int64_t, TokenStage1Scratch&, int32_t*);                                           \
  template bool SelectDecodeSliced<T>(const Call<T>&, const Microkernels&, const ParallelFor&,                       \
                                      const std::vector<CompressedKeys>&, const std::vector<QueryRows>&,             \
                                      const std::vector<char>&, int32_t*, int64_t*,                                  \
                                      const std::function<void(int64_t)>*, double*);
INFLLMV2_SELECTION(float)
INFLLMV2_SELECTION(Float16)

}  // namespace infllmv2::cpu
