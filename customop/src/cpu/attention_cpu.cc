// CPU kernel of SwitchableAttention: the drivers. One call runs the plan's stages in order:
//   1. KV cache write and 2. level-1 compressed keys (cache_write.cc),
//   3. block selection for sparse entries (selection.cc),
//   4. attention over the selected (or all) blocks (block_attention.cc).
// Work items: (batch entry, kv head, tile of kQueryTile tokens) in prefill, each selecting for its
// own tokens then attending with them; for one-token steps (decode) a slice of the token's windows
// or blocks, merged afterwards, so that every thread works. Per row the arithmetic is the same in
// both modes, so a budget covering every block gives bit-identical results to dense mode. Nothing
// is proportional to S x T.
#include "cpu/attention_cpu.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "common/call_plan.h"
#include "cpu/block_attention.h"
#include "cpu/guarded_parallel_for.h"
#include "cpu/cache_write.h"
#include "cpu/call_context.h"
#include "cpu/query_lanes.h"
#include "cpu/selection.h"
#include "cpu/stage_timer.h"

namespace infllmv2::cpu {
namespace {

constexpr int64_t kQueryTile = 16;         // prefill tokens per work item
constexpr int64_t kDecodeSlices = 8;       // decode work split per (b, h) (measured: docs/benchmarks.md)
constexpr int64_t kMinBlocksPerSlice = 8;  // slices of fewer blocks are merged away (not tuned)

// How one token attends before stage 1: a dense range (len -1, from dense_lo), every block
// (they fit the budget; the list is written), a list stage 1 must fill, or nothing (padding).
struct TokenPlan {
  int64_t len = 0;
  int64_t dense_lo = 0;
  bool needs_stage1 = false;
};

template <typename T>
TokenPlan PlanToken(const Call<T>& c, int64_t b, int64_t s, int32_t* list) {
  const int64_t pos = c.Past(b) + s;
  TokenPlan tp;
  if (pos >= c.Total(b)) return tp;
  if (!c.Entry(b).sparse) {
    tp.len = -1;
    tp.dense_lo = c.plan.DenseFirstKey(pos);
  } else if (!c.plan.OutgrowsBudget(pos)) {
    tp.len = pos / c.plan.block_size + 1;
    for (int64_t blk = 0; blk < tp.len; ++blk) list[blk] = static_cast<int32_t>(blk);
  } else {
    tp.needs_stage1 = true;
  }
  return tp;
}

// Explicit block list of one token: its dense range, or its list.
inline std::vector<int32_t> BlocksOf(int64_t len, int64_t dense_lo, int64_t pos, int64_t Bk, const int32_t* list) {
  std::vector<int32_t> v;
  if (len < 0) {
    for (int64_t blk = dense_lo / Bk; blk <= pos / Bk; ++blk) v.push_back(static_cast<int32_t>(blk));
  } else {
    v.assign(list, list + len);
  }
  return v;
}

// Normalized output rows of token s of (b, h) from its softmax state (l, acc: G heads).
template <typename T>
void WriteRows(const Call<T>& c, int64_t bh, int64_t s, const float* l, const float* acc) {
  const auto& p = c.p;
  const int64_t Hkv = p.kv_num_heads, G = p.group, D = p.head_size, b = bh / Hkv, h = bh % Hkv;
  std::vector<float> row;
  for (int64_t g = 0; g < G; ++g) {
    T* out = c.d.output + ((b * p.seq_len + s) * p.num_heads + h * G + g) * D;
    const float inv = l[g] > 0.0f ? 1.0f / l[g] : 0.0f;
    if constexpr (std::is_same_v<T, Float16>) {  // F16C/AVX-512 conversion
      row.resize(static_cast<size_t>(D));
      for (int64_t i = 0; i < D; ++i) row[i] = acc[g * D + i] * inv;
      SelectMicrokernels().float_to_half(row.data(), reinterpret_cast<uint16_t*>(out), D);
    } else {
      for (int64_t i = 0; i < D; ++i) out[i] = FromFloat<T>(acc[g * D + i] * inv);
    }
  }
}

// selected_blocks row of one token (when that output is requested): its list, -1-padded.
template <typename T>
void WriteSelection(const Call<T>& c, int64_t bh, int64_t s, int64_t len, const int32_t* list) {
  if (!c.plan.write_selection) return;
  const int64_t K = c.p.budget;
  int32_t* out = c.d.selected_blocks + (bh * c.p.seq_len + s) * K;
  const int64_t n = std::max<int64_t>(len, 0);
  std::copy(list, list + n, out);
  std::fill(out + n, out + K, -1);
}

// Stages 3 and 4 of one call, per the plan: prefill (S > 1) or a one-token step.
template <typename T>
void RunSelectionAndAttention(const Call<T>& c, const ParallelFor& pf) {
  const auto& a = c.a;
  const auto& p = c.p;
  const Microkernels& mk = SelectMicrokernels();
  const int64_t Hkv = p.kv_num_heads, S = p.seq_len, G = p.group, D = p.head_size, K = p.budget;
  const int64_t BH = p.batch * Hkv, Bk = a.block_size;
  // Level-1 compressed keys (fp32 for prefill) of every entry with a token that outgrows the budget.
  std::vector<CompressedKeys> ck(static_cast<size_t>(BH));
  StageTimer timer(c.profile);
  pf(static_cast<size_t>(BH), [&](size_t bh) {
    const int64_t b = static_cast<int64_t>(bh) / Hkv;
    if (c.Entry(b).needs_stage1) BuildCompressedKeys(c, b, static_cast<int64_t>(bh) % Hkv, !c.plan.single_token, ck[bh]);
  });
  timer.Mark(&KernelProfile::compress_ms);

  if (!c.plan.single_token) {
    // Prefill: one item per (bh, tile of kQueryTile tokens) selects for its tokens, then attends
    // with them, so that selection lists live per item (O(threads x tile x budget) scratch). The
    // stage split is the phase's wall time divided in proportion to the items' time in each part.
    const int64_t tiles = (S + kQueryTile - 1) / kQueryTile;
    std::vector<double> part_ms(c.profile != nullptr ? static_cast<size_t>(2 * BH * tiles) : 0, 0.0);
    pf(static_cast<size_t>(BH * tiles), [&](size_t item) {
      const auto start = std::chrono::steady_clock::now();
      const int64_t bh = static_cast<int64_t>(item) / tiles, tile = static_cast<int64_t>(item) % tiles;
      const int64_t b = bh / Hkv, t0 = tile * kQueryTile, t1 = std::min(S, t0 + kQueryTile), n = t1 - t0;
      std::vector<int32_t> lists(static_cast<size_t>(n * K));
      TokenBlocks tb;
      tb.len.resize(static_cast<size_t>(n));
      tb.dense_lo.resize(static_cast<size_t>(n));
      TokenStage1Scratch x;
      std::vector<float> q_buf;
      const QueryRows qr = QueryRowsOf(c, b, t0, n, bh % Hkv, q_buf);
      for (int64_t s = t0; s < t1; ++s) {
        int32_t* list = lists.data() + (s - t0) * K;
        const TokenPlan tp = PlanToken(c, b, s, list);
        tb.len[s - t0] = tp.needs_stage1
                             ? SelectToken(c, mk, ck[bh], qr.q + (s - t0) * qr.token_stride, c.Past(b) + s, x, list)
                             : tp.len;
        tb.dense_lo[s - t0] = tp.dense_lo;
        WriteSelection(c, bh, s, tb.len[s - t0], list);
      }
      const auto selected = std::chrono::steady_clock::now();
      std::vector<char> used;
      for (int64_t s = t0; s < t1; ++s) {
        const int32_t* list = lists.data() + (s - t0) * K;
        tb.list.push_back(list);
        for (int32_t blk : BlocksOf(tb.len[s - t0], tb.dense_lo[s - t0], c.Past(b) + s, Bk, list)) {
          if (static_cast<size_t>(blk) >= used.size()) used.resize(static_cast<size_t>(blk) + 1, 0);
          used[blk] = 1;
        }
      }
      std::vector<int32_t> u;
      for (size_t blk = 0; blk < used.size(); ++blk)
        if (used[blk]) u.push_back(static_cast<int32_t>(blk));
      RowStates st;
      st.Reset(n * G, D);
      Scratch sc;
      AttendWork w;
      w.b = b;
      w.h = bh % Hkv;
      w.t0 = t0;
      w.t1 = t1;
      w.q = qr;
      w.blocks = u.data();
      w.n_blocks = static_cast<int64_t>(u.size());
      w.tokens = &tb;
      AttendBlocks(c, mk, w, st, sc);
      for (int64_t s = t0; s < t1; ++s)
        WriteRows(c, bh, s, st.l.data() + (s - t0) * G, st.acc.data() + (s - t0) * G * D);
      if (!part_ms.empty()) {
        part_ms[2 * item] = std::chrono::duration<double, std::milli>(selected - start).count();
        part_ms[2 * item + 1] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - selected).count();
      }
    });
    double sel = 0, att = 0;
    for (size_t i = 0; i < part_ms.size(); i += 2) {
      sel += part_ms[i];
      att += part_ms[i + 1];
    }
    timer.MarkSplit(&KernelProfile::select_ms, &KernelProfile::attend_ms, sel + att > 0 ? sel / (sel + att) : 0.0);
    return;
  }

  // Decode (one token per (b, h)): selection, then attention, each split into slices of the
  // windows or blocks so that every thread works. The token's query rows are prepared once per
  // (b, h) for stage 1 and every attention slice.
  std::vector<std::vector<float>> q_bufs(static_cast<size_t>(BH));
  std::vector<QueryRows> q_rows(static_cast<size_t>(BH));
  for (int64_t bh = 0; bh < BH; ++bh) q_rows[bh] = QueryRowsOf(c, bh / Hkv, 0, 1, bh % Hkv, q_bufs[bh]);
  std::vector<int32_t> lists(static_cast<size_t>(BH * K));
  std::vector<int64_t> lens(static_cast<size_t>(BH), 0), dense_lo(static_cast<size_t>(BH), 0);
  std::vector<char> needs_stage1(static_cast<size_t>(BH), 0);
  for (int64_t bh = 0; bh < BH; ++bh) {
    const TokenPlan tp = PlanToken(c, bh / Hkv, 0, lists.data() + bh * K);
    lens[bh] = tp.len;
    dense_lo[bh] = tp.dense_lo;
    needs_stage1[bh] = tp.needs_stage1;
  }
  // Stage 1: raw scores and group sums in slices of the windows, in parallel; the normalizers'
  // partials with the scores, merged in between. The scores are written in full before they are
  // read (no zero fill).
  std::vector<std::unique_ptr<float[]>> scores(static_cast<size_t>(BH));
  std::vector<std::vector<float>> group_scores(static_cast<size_t>(BH));
  std::vector<QueryLanes> sq(static_cast<size_t>(BH));
  std::vector<Stage1Levels> levels(static_cast<size_t>(BH), Stage1Levels{false, 0, 0});
  for (int64_t bh = 0; bh < BH; ++bh) {
    if (!needs_stage1[bh]) continue;
    levels[bh] = LevelsFor(a, ck[bh], c.Past(bh / Hkv));
    sq[bh].Set(mk, q_rows[bh].q, G, D);
    scores[bh].reset(new float[static_cast<size_t>(sq[bh].gw * std::max<int64_t>(ck[bh].n1, 1))]);
    group_scores[bh].resize(static_cast<size_t>(ck[bh].n1));
  }
  auto slice_range = [](int64_t count, int64_t slice) {
    const int64_t per = ((count + kDecodeSlices - 1) / kDecodeSlices + kBlockKeys - 1) / kBlockKeys * kBlockKeys;
    return std::pair<int64_t, int64_t>{std::min(count, slice * per), std::min(count, (slice + 1) * per)};
  };
  // Normalizer partials: per slice, the rows it could add itself (scoring phase), then the rows
  // that straddle into the next slice (afterwards); 2 * kDecodeSlices partials per (b, h).
  const int64_t gw = QueryLanes::LanesFor(mk, G);  // the lanes of one token's heads
  std::vector<float> lse_m(static_cast<size_t>(BH * 2 * kDecodeSlices * gw));
  std::vector<float> lse_l(lse_m.size());
  auto lse_at = [&](int64_t bh, int64_t i) { return static_cast<size_t>((bh * 2 * kDecodeSlices + i) * gw); };
  StageTimer phases(c.profile);
  pf(static_cast<size_t>(BH * kDecodeSlices), [&](size_t item) {
    const int64_t bh = static_cast<int64_t>(item) / kDecodeSlices, slice = static_cast<int64_t>(item) % kDecodeSlices;
    if (!needs_stage1[bh]) return;
    const auto [j0, j1] = slice_range(levels[bh].nvis1, slice);
    Stage1Scores(mk, sq[bh], ck[bh], j0, j1, D, p.scale, scores[bh].get());
    const LseRows rows = LseRowsOf(a, levels[bh]);
    const LseSlice ls = LseSliceOf(rows, j0, j1);
    mk.stage1_lse_partial(scores[bh].get(), gw, ls.begin, ls.ready, rows.step, lse_m.data() + lse_at(bh, 2 * slice),
                          lse_l.data() + lse_at(bh, 2 * slice));
  });
  phases.Mark(&KernelProfile::score_ms);
  for (int64_t bh = 0; bh < BH; ++bh) {
    if (!needs_stage1[bh]) continue;
    const LseRows rows = LseRowsOf(a, levels[bh]);
    for (int64_t slice = 0; slice < kDecodeSlices; ++slice) {
      const auto [j0, j1] = slice_range(levels[bh].nvis1, slice);
      const LseSlice ls = LseSliceOf(rows, j0, j1);
      mk.stage1_lse_partial(scores[bh].get(), gw, ls.ready, ls.end, rows.step, lse_m.data() + lse_at(bh, 2 * slice + 1),
                            lse_l.data() + lse_at(bh, 2 * slice + 1));
    }
    MergeLse(lse_m.data() + lse_at(bh, 0), lse_l.data() + lse_at(bh, 0), 2 * kDecodeSlices, G, sq[bh]);
  }
  phases.Mark(&KernelProfile::lse_ms);
  pf(static_cast<size_t>(BH * kDecodeSlices), [&](size_t item) {
    const int64_t bh = static_cast<int64_t>(item) / kDecodeSlices, slice = static_cast<int64_t>(item) % kDecodeSlices;
    if (!needs_stage1[bh]) return;
    const auto [j0, j1] = slice_range(levels[bh].nvis1, slice);
    Stage1GroupSum(mk, sq[bh], scores[bh].get(), j0, j1, group_scores[bh].data());
  });
  phases.Mark(&KernelProfile::group_sum_ms);
  pf(static_cast<size_t>(BH), [&](size_t bh) {
    if (!needs_stage1[bh]) return;
    std::vector<uint64_t> candidates;
    const int64_t pos = c.Past(static_cast<int64_t>(bh) / Hkv);
    lens[bh] = SelectFromScores(a, c.plan, pos, group_scores[bh].data(), levels[bh].nvis1, candidates,
                                lists.data() + bh * K);
  });
  phases.Mark(&KernelProfile::topk_ms);
  timer.Mark(&KernelProfile::select_ms);
  for (int64_t bh = 0; bh < BH; ++bh) WriteSelection(c, bh, 0, lens[bh], lists.data() + bh * K);

  // Attention: the token's blocks are split into slices whose partial softmax states are merged
  // afterwards (fixed order: deterministic).
  std::vector<std::vector<int32_t>> union_blocks(static_cast<size_t>(BH));
  std::vector<int64_t> slices(static_cast<size_t>(BH));
  for (int64_t bh = 0; bh < BH; ++bh) {
    union_blocks[bh] = BlocksOf(lens[bh], dense_lo[bh], c.Past(bh / Hkv), Bk, lists.data() + bh * K);
    slices[bh] = std::clamp<int64_t>(static_cast<int64_t>(union_blocks[bh].size()) / kMinBlocksPerSlice, 1, kDecodeSlices);
  }
  std::vector<float> part_m(static_cast<size_t>(BH * kDecodeSlices * G), kNegInf);
  std::vector<float> part_l(static_cast<size_t>(BH * kDecodeSlices * G), 0.0f);
  std::vector<float> part_acc(static_cast<size_t>(BH * kDecodeSlices * G * D), 0.0f);
  pf(static_cast<size_t>(BH * kDecodeSlices), [&](size_t item) {
    const int64_t bh = static_cast<int64_t>(item) / kDecodeSlices, slice = static_cast<int64_t>(item) % kDecodeSlices;
    if (slice >= slices[bh] || lens[bh] == 0) return;
    const auto& u = union_blocks[bh];
    const int64_t n = static_cast<int64_t>(u.size());
    const int64_t lo = n * slice / slices[bh], hi = n * (slice + 1) / slices[bh];
    RowStates st;
    st.Reset(G, D);
    Scratch sc;
    TokenBlocks tb;
    tb.list = {u.data()};
    tb.len = {lens[bh] < 0 ? -1 : n};
    tb.dense_lo = {dense_lo[bh]};
    AttendWork w;
    w.b = bh / Hkv;
    w.h = bh % Hkv;
    w.t0 = 0;
    w.t1 = 1;
    w.q = q_rows[bh];
    w.blocks = u.data() + lo;
    w.n_blocks = hi - lo;
    w.tokens = &tb;
    AttendBlocks(c, mk, w, st, sc);
    std::copy(st.m.begin(), st.m.begin() + G, part_m.begin() + item * G);
    std::copy(st.l.begin(), st.l.begin() + G, part_l.begin() + item * G);
    std::copy(st.acc.begin(), st.acc.end(), part_acc.begin() + item * G * D);
  });
  pf(static_cast<size_t>(BH), [&](size_t bh) {
    if (lens[bh] == 0) {
      std::vector<float> zero(static_cast<size_t>(G * D + G), 0.0f);
      WriteRows(c, static_cast<int64_t>(bh), 0, zero.data(), zero.data() + G);
      return;
    }
    std::vector<float> l(static_cast<size_t>(G), 0.0f), acc(static_cast<size_t>(G * D), 0.0f);
    for (int64_t g = 0; g < G; ++g) {
      float m = kNegInf;
      for (int64_t sl = 0; sl < slices[bh]; ++sl) m = std::max(m, part_m[(bh * kDecodeSlices + sl) * G + g]);
      for (int64_t sl = 0; sl < slices[bh]; ++sl) {
        const size_t at = (bh * kDecodeSlices + sl) * G + g;
        if (part_l[at] == 0.0f) continue;
        const float w = std::exp(part_m[at] - m);
        l[g] += part_l[at] * w;
        const float* pa = part_acc.data() + at * D;
        for (int64_t i = 0; i < D; ++i) acc[g * D + i] += pa[i] * w;
      }
    }
    WriteRows(c, static_cast<int64_t>(bh), 0, l.data(), acc.data());
  });
  timer.Mark(&KernelProfile::attend_ms);
}

}  // namespace

void SerialFor(size_t total, const std::function<void(size_t)>& fn) {
  for (size_t i = 0; i < total; ++i) fn(i);
}

namespace {

template <typename T>
std::string RunStages(const AttentionAttributes& attrs, const AttentionParams& params, const AttentionData<T>& data,
                      const ParallelFor& pf, KernelProfile* profile) {
  CallPlan plan;
  const std::string err = BuildCallPlan(attrs, params, data.seqlens_k, FactsOf(data, params), &plan);
  if (!err.empty()) return err;
  Call<T> c{attrs, params, plan, data, nullptr, profile};

  StageTimer timer(profile);
  WriteKeyValueCache(c, pf);
  timer.Mark(&KernelProfile::prepare_ms);

  std::vector<T> compressed_scratch;
  if (plan.compute_compressed) {
    T* comp = data.present_compressed_key;
    if (plan.compressed_to_scratch) {
      compressed_scratch.resize(static_cast<size_t>(params.batch * params.kv_num_heads * plan.compressed_capacity *
                                                    params.head_size));
      comp = compressed_scratch.data();
    }
    WriteCompressedKeys(c, comp, pf);
    c.comp = comp;
  }
  timer.Mark(&KernelProfile::compress_ms);

  RunSelectionAndAttention(c, pf);
  return "";
}

}  // namespace

template <typename T>
std::string RunAttention(const AttentionAttributes& attrs, const AttentionParams& params,
                         const AttentionData<T>& data, const ParallelFor& pf, KernelProfile* profile) {
  try {
    GuardedParallelFor guarded(pf);
    return RunStages(attrs, params, data, guarded.AsParallelFor(), profile);
  } catch (const std::bad_alloc&) {
    return "CPU kernel: out of memory";
  } catch (const std::exception& e) {
    return std::string("CPU kernel: ") + e.what();
  }
}

template std::string RunAttention<float>(const AttentionAttributes&, const AttentionParams&,
                                         const AttentionData<float>&, const ParallelFor&, KernelProfile*);
template std::string RunAttention<Float16>(const AttentionAttributes&, const AttentionParams&,
                                           const AttentionData<Float16>&, const ParallelFor&, KernelProfile*);

}  // namespace infllmv2::cpu
