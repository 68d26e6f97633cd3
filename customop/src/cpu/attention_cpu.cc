// CPU kernel of SwitchableAttention: the drivers. One call runs the plan's stages in order:
//   1. KV cache write and 2. level-1 compressed keys (cache_write.cc),
//   3. block selection for sparse entries (selection.cc),
//   4. attention over the selected (or all) blocks (block_attention.cc).
// Two drivers of stages 3 and 4: RunPrefill, whose work items are (batch entry, kv head, tile of
// kQueryTile tokens), each selecting for its own tokens then attending with them; and RunDecode
// (one-token steps), whose items are slices of the token's windows or blocks, merged afterwards,
// so that every thread works. Per row the arithmetic is the same in both modes, so a budget
// covering every block gives bit-identical results to dense mode. Nothing is proportional to S x T.
#include "cpu/attention_cpu.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "common/call_plan.h"
#include "cpu/block_attention.h"
#include "cpu/cache_write.h"
#include "cpu/call_context.h"
#include "cpu/guarded_parallel_for.h"
#include "cpu/query_lanes.h"
#include "cpu/selection.h"
#include "cpu/stage_timer.h"

namespace infllmv2::cpu {
namespace {

constexpr int64_t kQueryTile = 16;  // prefill tokens per work item

// The plan of token s of entry b (common/call_rules.h: PlanToken); a sparse token within the
// budget gets its list 0..len-1 written.
template <typename T>
TokenPlan PlanTokenList(const Call<T>& c, int64_t b, int64_t s, int32_t* list) {
  const TokenPlan tp = PlanToken(c.rules, c.Entry(b), c.Past(b) + s);
  for (int64_t blk = 0; blk < tp.len; ++blk) list[blk] = static_cast<int32_t>(blk);
  return tp;
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

// SerialFor as a ParallelFor, made once (the calling thread runs every item).
const ParallelFor& SerialParallelFor() {
  static const ParallelFor serial = SerialFor;
  return serial;
}

// Level-1 compressed keys of every (b, h) whose entry has a token that outgrows the budget (fp32
// for prefill, which scores them once per token).
template <typename T>
std::vector<CompressedKeys> StageOneKeys(const Call<T>& c, const ParallelFor& pf) {
  const int64_t Hkv = c.p.kv_num_heads, BH = c.p.batch * Hkv;
  std::vector<CompressedKeys> ck(static_cast<size_t>(BH));
  // A decode step's keys are used where they lie (no conversion): no work to hand to the pool.
  (c.plan.single_token ? SerialParallelFor() : pf)(static_cast<size_t>(BH), [&](size_t bh) {
    const int64_t b = static_cast<int64_t>(bh) / Hkv;
    if (c.Entry(b).needs_stage1)
      BuildCompressedKeys(c, b, static_cast<int64_t>(bh) % Hkv, !c.plan.single_token, ck[bh]);
  });
  return ck;
}

// Stages 3 and 4 of a prefill (S > 1): one item per (b, h, tile of kQueryTile tokens) selects for
// its tokens, then attends with them, so that selection lists live per item (O(threads x tile x
// budget) scratch). The stage split is the phase's wall time divided in proportion to the items'
// time in each part.
template <typename T>
void RunPrefill(const Call<T>& c, const ParallelFor& pf) {
  const auto& p = c.p;
  const Microkernels& mk = SelectMicrokernels();
  const int64_t Hkv = p.kv_num_heads, S = p.seq_len, G = p.group, D = p.head_size, K = p.budget;
  const int64_t BH = p.batch * Hkv, Bk = c.a.block_size;
  StageTimer timer(c.profile);
  const std::vector<CompressedKeys> ck = StageOneKeys(c, pf);
  timer.Mark(&KernelProfile::compress_ms);
  const int64_t tiles = (S + kQueryTile - 1) / kQueryTile;
  PartTimes parts(c.profile, static_cast<size_t>(BH * tiles));
  pf(static_cast<size_t>(BH * tiles), [&](size_t item) {
    const auto start = parts.Now();
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
      const TokenPlan tp = PlanTokenList(c, b, s, list);
      tb.len[s - t0] = tp.needs_stage1
                           ? SelectToken(c, mk, ck[bh], qr.q + (s - t0) * qr.token_stride, b, c.Past(b) + s, x, list)
                           : tp.len;
      tb.dense_lo[s - t0] = tp.dense_lo;
      WriteSelection(c, bh, s, tb.len[s - t0], list);
    }
    const auto selected = parts.Now();
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
    for (int64_t s = t0; s < t1; ++s) WriteRows(c, bh, s, st.l.data() + (s - t0) * G, st.acc.data() + (s - t0) * G * D);
    parts.Record(item, start, selected);
  });
  timer.MarkSplit(&KernelProfile::select_ms, &KernelProfile::attend_ms, parts.FirstShare());
}

// Stages 3 and 4 of a one-token step (decode): selection, then attention, each split into slices
// of the windows or blocks so that every thread works (SelectDecodeSliced, AttendDecodeSliced).
// The token's query rows are prepared once per (b, h) for stage 1 and every attention slice.
template <typename T>
void RunDecode(const Call<T>& c, const ParallelFor& pf) {
  const auto& p = c.p;
  const Microkernels& mk = SelectMicrokernels();
  const int64_t Hkv = p.kv_num_heads, K = p.budget, BH = p.batch * Hkv;
  StageTimer timer(c.profile);
  const std::vector<CompressedKeys> ck = StageOneKeys(c, pf);
  timer.Mark(&KernelProfile::compress_ms);
  std::vector<std::vector<float>> q_bufs(static_cast<size_t>(BH));
  std::vector<QueryRows> q_rows(static_cast<size_t>(BH));
  for (int64_t bh = 0; bh < BH; ++bh) q_rows[bh] = QueryRowsOf(c, bh / Hkv, 0, 1, bh % Hkv, q_bufs[bh]);
  std::vector<int32_t> lists(static_cast<size_t>(BH * K));
  std::vector<int64_t> lens(static_cast<size_t>(BH), 0), dense_lo(static_cast<size_t>(BH), 0);
  std::vector<char> needs_stage1(static_cast<size_t>(BH), 0);
  for (int64_t bh = 0; bh < BH; ++bh) {
    const TokenPlan tp = PlanTokenList(c, bh / Hkv, 0, lists.data() + bh * K);
    lens[bh] = tp.len;
    dense_lo[bh] = tp.dense_lo;
    needs_stage1[bh] = tp.needs_stage1;
  }
  // Where DecodeOnePhase (at least as many (b, h) as cores), each attends as soon as its list is
  // final, in the selection's phase (no barrier between the stages); else the attention is sliced
  // after it.
  const std::function<void(int64_t)> attend = [&](int64_t bh) {
    WriteSelection(c, bh, 0, lens[bh], lists.data() + bh * K);
    AttendDecodeWhole(c, mk, q_rows[bh], bh, lens[bh], dense_lo[bh], lists.data() + bh * K);
  };
  double attend_ms = 0;
  if (SelectDecodeSliced(c, mk, pf, ck, q_rows, needs_stage1, lists.data(), lens.data(), &attend, &attend_ms)) {
    timer.MarkMoving(&KernelProfile::select_ms, &KernelProfile::attend_ms, attend_ms);
    return;
  }
  timer.Mark(&KernelProfile::select_ms);
  for (int64_t bh = 0; bh < BH; ++bh) WriteSelection(c, bh, 0, lens[bh], lists.data() + bh * K);
  AttendDecodeSliced(c, mk, pf, q_rows, lens.data(), dense_lo.data(), lists.data());
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
  Call<T> c{{plan.rules, data}, attrs, params, plan, nullptr, profile};

  StageTimer timer(profile);
  // A decode step into shared buffers writes one row per (b, h) (and at most one compressed key):
  // too little to hand to the pool; copies into separate present buffers are spread over it.
  const ParallelFor& serial = SerialParallelFor();
  WriteKeyValueCache(c, plan.single_token && plan.rules.kv_in_place ? serial : pf);
  timer.Mark(&KernelProfile::prepare_ms);

  std::vector<T> compressed_scratch;
  if (plan.compute_compressed) {
    T* comp = data.present_compressed_key;
    if (plan.compressed_to_scratch) {
      compressed_scratch.resize(
          static_cast<size_t>(params.batch * params.kv_num_heads * plan.rules.compressed_capacity * params.head_size));
      comp = compressed_scratch.data();
    }
    WriteCompressedKeys(c, comp, plan.single_token && plan.rules.compressed_in_place ? serial : pf);
    c.comp = comp;
  }
  timer.Mark(&KernelProfile::compress_ms);

  if (plan.single_token)
    RunDecode(c, pf);
  else
    RunPrefill(c, pf);
  return "";
}

}  // namespace

template <typename T>
std::string RunAttention(const AttentionAttributes& attrs, const AttentionParams& params, const AttentionData<T>& data,
                         const ParallelFor& pf, KernelProfile* profile) {
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
