#include "cpu/selection.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

namespace infllmv2::cpu {
namespace {

// A block's rank as one integer: the score's bits mapped to an unsigned order (NaN counts as -inf,
// -0 as +0) above the complemented block index, so a larger key is a higher score or, on a tie,
// a lower index; top-k is then nth_element on plain integers.
inline uint64_t RankKey(float score, int64_t block) {
  if (std::isnan(score)) score = kNegInf;
  uint32_t bits;
  std::memcpy(&bits, &score, sizeof bits);
  bits = score == 0.0f ? 0x80000000u : (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (uint64_t{bits} << 32) | (~static_cast<uint32_t>(block));
}
inline int32_t BlockOfKey(uint64_t key) { return static_cast<int32_t>(~static_cast<uint32_t>(key)); }

}  // namespace

template <typename T>
void BuildCompressedKeys(const Call<T>& c, int64_t b, int64_t h, bool convert_all, CompressedKeys& ck) {
  const EntryPlan& e = c.Entry(b);
  ck.n1 = e.windows;
  ck.n2 = e.level2_windows;
  const T* rows = c.comp + c.CacheOffset(b, h, c.plan.compressed_capacity);
  if constexpr (std::is_same_v<T, Float16>) {
    if (!convert_all) {
      ck.k1_half = reinterpret_cast<const uint16_t*>(rows);
      return;
    }
  }
  ck.k1 = RowsAsFloat(rows, ck.n1, c.p.head_size, ck.k1_buffer);
}

void MergeLse(const float* m, const float* l, int64_t parts, int64_t G, QueryLanes& sq) {
  const int64_t gw = sq.gw;
  for (int64_t g = 0; g < gw; ++g) {
    float mx = kNegInf;
    for (int64_t i = 0; i < parts; ++i) mx = std::max(mx, m[i * gw + g]);
    float sum = 0.0f;
    for (int64_t i = 0; i < parts; ++i)
      if (l[i * gw + g] > 0.0f) sum += l[i * gw + g] * std::exp(m[i * gw + g] - mx);
    sq.lse[g] = g < G && sum > 0.0f ? mx + std::log(sum) : std::numeric_limits<float>::infinity();
  }
}

int64_t SelectFromScores(const AttentionAttributes& a, const CallPlan& plan, int64_t pos, const float* group_scores,
                         int64_t nvis1, std::vector<uint64_t>& candidates, int32_t* selected) {
  const int64_t Bk = a.block_size, kernel = a.compress_kernel, stride = a.compress_stride;
  const int64_t qb = pos / Bk;
  const int64_t local_lo = std::max<int64_t>(0, qb - plan.local_blocks);
  const int64_t init_hi = std::min(plan.init_blocks, local_lo);  // init blocks not already local
  // Windows j of block b run from the first reaching it, ceil((b Bk - kernel + 1) / stride), to the
  // last starting in it, floor((b Bk + Bk - 1) / stride); Bk is a multiple of the stride, so both
  // are b Bk / stride plus a constant (no divisions per block).
  const int64_t per_block = Bk / stride, back = (kernel - 1) / stride, ahead = (Bk - 1) / stride;
  const bool bf16_scores = a.score_precision != 0;
  candidates.clear();
  for (int64_t b = init_hi; b < local_lo; ++b) {
    const int64_t jlo = std::max<int64_t>(0, b * per_block - back);
    const int64_t jhi = std::min(nvis1 - 1, b * per_block + ahead);
    float best = kNegInf;
    for (int64_t j = jlo; j <= jhi; ++j) best = std::max(best, group_scores[j]);
    // score_precision 1: the group sums in bf16 (nearest even) before pooling. Rounding is monotone,
    // so rounding the block's maximum equals the maximum of the rounded sums (one rounding per block).
    if (bf16_scores) best = ToFloat(FromFloat<BFloat16>(best));
    candidates.push_back(RankKey(best, b));
  }
  const int64_t n_forced = init_hi + (qb - local_lo + 1);
  const int64_t take = std::min<int64_t>(plan.budget - n_forced, static_cast<int64_t>(candidates.size()));
  if (take < static_cast<int64_t>(candidates.size()))
    std::nth_element(candidates.begin(), candidates.begin() + take, candidates.end(), std::greater<uint64_t>());
  int64_t n = 0;
  for (int64_t b = 0; b < init_hi; ++b) selected[n++] = static_cast<int32_t>(b);
  for (int64_t i = 0; i < take; ++i) selected[n + i] = BlockOfKey(candidates[i]);
  std::sort(selected + n, selected + n + take);
  n += take;
  for (int64_t b = local_lo; b <= qb; ++b) selected[n++] = static_cast<int32_t>(b);
  return n;
}

template <typename T>
int64_t SelectToken(const Call<T>& c, const Microkernels& mk, const CompressedKeys& ck, const float* q, int64_t pos,
                    TokenStage1Scratch& x, int32_t* list) {
  const auto& a = c.a;
  const int64_t G = c.p.group, D = c.p.head_size;
  const auto lv = LevelsFor(a, ck, pos);
  x.sq.Set(mk, q, G, D);
  x.scores.resize(static_cast<size_t>(x.sq.gw * lv.nvis1));
  Stage1Scores(mk, x.sq, ck, 0, lv.nvis1, D, c.p.scale, x.scores.data());
  const LseRows rows = LseRowsOf(a, lv);
  x.m.resize(static_cast<size_t>(x.sq.gw));
  x.l.resize(static_cast<size_t>(x.sq.gw));
  mk.stage1_lse_partial(x.scores.data(), x.sq.gw, 0, rows.count, rows.step, x.m.data(), x.l.data());
  MergeLse(x.m.data(), x.l.data(), 1, G, x.sq);
  x.group_scores.resize(static_cast<size_t>(lv.nvis1));
  Stage1GroupSum(mk, x.sq, x.scores.data(), 0, lv.nvis1, x.group_scores.data());
  return SelectFromScores(a, c.plan, pos, x.group_scores.data(), lv.nvis1, x.candidates, list);
}

template void BuildCompressedKeys<float>(const Call<float>&, int64_t, int64_t, bool, CompressedKeys&);
template void BuildCompressedKeys<Float16>(const Call<Float16>&, int64_t, int64_t, bool, CompressedKeys&);
template int64_t SelectToken<float>(const Call<float>&, const Microkernels&, const CompressedKeys&, const float*,
                                    int64_t, TokenStage1Scratch&, int32_t*);
template int64_t SelectToken<Float16>(const Call<Float16>&, const Microkernels&, const CompressedKeys&, const float*,
                                      int64_t, TokenStage1Scratch&, int32_t*);

}  // namespace infllmv2::cpu
