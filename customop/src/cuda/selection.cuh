// Stage 3 on CUDA (mirrors cpu/selection.cc): the selection lists. Tokens that do not outgrow the
// budget (and dense or padding tokens) get their rows from SelectionFillKernel; Stage1Kernel fills
// the others (scores, normalizers, group sum, block max-pool, top-k with ties to the lower block
// index), with the CPU kernel's rules, so that `selected_blocks` is the CPU kernel's.
#pragma once

#include "cuda/kernel_args.h"

namespace infllmv2::cuda {

constexpr int kSelectThreads = 128;

// grid (S, Hkv, B): row (b, h, s) of the lists: blocks 0..qb for a sparse token within the budget,
// all -1 for dense and padding tokens; rows of stage-1 tokens are left to stage 1.
template <class T>
IL_GLOBAL void SelectionFillKernel(KernelArgs<T> a) {
  const CallRules& p = a.rules;
  const int s = static_cast<int>(blockIdx.x), h = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z);
  const EntryPlan e = PlanEntry(p, a.d.seqlens_k, b);
  const TokenPlan tp = PlanToken(p, e, e.past + s);
  if (tp.needs_stage1) return;
  const int n = tp.len > 0 ? static_cast<int>(tp.len) : 0;
  int32_t* row = a.sel + ((static_cast<int64_t>(b) * p.kv_num_heads + h) * p.seq_len + s) * p.budget;
  for (int i = static_cast<int>(threadIdx.x); i < p.budget; i += kSelectThreads) row[i] = i < n ? i : -1;
}

// scale * q . k in fp32, k in order, one FMA per element: nvcc contracts a multiply-add loop into
// FMAs anyway; spelled out, the host emulation's stage-1 scores are the device's bit for bit.
template <class T>
IL_DEVICE float Stage1Dot(const float* q, const T* k, int d, float scale) {
  float acc = 0.0f;
  for (int i = 0; i < d; ++i) acc = Fma(q[i], ToF32(k[i]), acc);
  return acc * scale;
}

constexpr int kStage1Threads = 128;
constexpr int kStage1Warps = kStage1Threads / 32;
constexpr int kStage1Heads = 16;        // query heads held in shared memory at a time
constexpr int kStage1MaxHead = 128;     // head size
constexpr int kStage1MaxGroup = 256;    // G: one normalizer per head in shared memory
constexpr int kStage1MaxBlocks = 8192;  // block scores in shared memory: positions < 8192 Bk

// Sum of v over the CTA, returned to every thread, with one barrier: `red` holds two alternating
// sets of kStage1Warps ints (a set is rewritten two calls later, after every thread passed the
// barrier of the call between, so after every read of it).
IL_DEVICE int Stage1BlockSum(int v, int* red, int& parity) {
  for (int o = 16; o > 0; o /= 2) v += ShflXor(v, o);
  int* set = red + parity * kStage1Warps;
  parity ^= 1;
  if (threadIdx.x % 32 == 0) set[threadIdx.x / 32] = v;
  SyncThreads();
  int s = 0;
  for (int w = 0; w < kStage1Warps; ++w) s += set[w];
  return s;
}

// Stage 1 of one token that outgrows the budget, grid (S, Hkv, B), block 128 (whole CTAs return
// for the other tokens). Per kv head h and token at pos:
//   1. scores x_j[g] = scale * q_g . K1_j of the G query heads against the visible level-1 keys;
//   2. per head the normalizer lse[g]: log-sum-exp over the visible level-2 scores (lse_approx 1:
//      the mean of four level-1 scores, 0.25 (((x_4J + x_4J+st) + x_4J+2st) + x_4J+3st), st = l/s)
//      or over the level-1 scores (0 or no level-2 window visible); +inf with nothing visible;
//   3. group_j = sum_g exp(x_j[g] - lse[g]), rounded to bf16 (nearest even) when score_precision is 1;
//   4. block score = max of group_j over the windows j in [b Bk/s - (l-1)/s, b Bk/s + (Bk-1)/s];
//   5. init blocks and the local blocks forced, the budget's rest by rank key (ties: lower index),
//      the row sorted and -1 padded.
// Scores are recomputed in the group-sum pass instead of stored (no scratch; O(windows) shared
// memory would not fit at 128k). Deterministic: no atomics, fixed reduction orders.
template <class T>
IL_GLOBAL void Stage1Kernel(KernelArgs<T> a) {
  IL_SHARED float sQ[kStage1Heads * kStage1MaxHead];
  IL_SHARED float sLse[kStage1MaxGroup];
  IL_SHARED float sM[kStage1Threads], sL[kStage1Threads], sGroup[kStage1Threads];
  IL_SHARED float sBlock[kStage1MaxBlocks];
  IL_SHARED int sCnt[kStage1Threads];
  IL_SHARED int sRed[2 * kStage1Warps];

  const CallRules& p = a.rules;
  const int s = static_cast<int>(blockIdx.x), h = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z);
  const EntryPlan e = PlanEntry(p, a.d.seqlens_k, b);
  const int pos = static_cast<int>(e.past) + s;
  if (!PlanToken(p, e, pos).needs_stage1) return;  // uniform over the CTA
  const int tid = static_cast<int>(threadIdx.x);
  const int G = p.group, D = p.head_size, l1 = p.compress_kernel, s1 = p.compress_stride;
  int32_t* row = a.sel + ((static_cast<int64_t>(b) * p.kv_num_heads + h) * p.seq_len + s) * p.budget;
  const SelectionSpan span = SpanOf(p, pos);
  const int qb = static_cast<int>(span.qb), local_lo = static_cast<int>(span.local_lo);
  const int init_hi = static_cast<int>(span.init_hi), n_forced = static_cast<int>(span.n_forced);
  const int take = static_cast<int>(span.take);
  if (qb >= kStage1MaxBlocks) {  // refused on the host (present capacity); never reached
    for (int i = tid; i < p.budget; i += kStage1Threads) row[i] = -1;
    return;
  }
  const Stage1Levels lv = LevelsOf(p, e, pos);
  const int nvis1 = static_cast<int>(lv.nvis1);
  const int lse_rows = static_cast<int>(lv.use_k2 ? lv.nvis2 : lv.nvis1), step = lv.use_k2 ? l1 / s1 : 0;
  const T* k1 = a.comp + a.CacheOffset(b, h, p.compressed_capacity);
  const T* q = a.q + (static_cast<int64_t>(b * p.seq_len + s) * a.q_heads + static_cast<int64_t>(h) * G) * D;

  int loaded = -1;  // first head of the chunk in sQ
  auto load_q = [&](int g0) {
    if (loaded == g0) return;
    SyncThreads();  // nobody reads the previous chunk any more
    const int gc = G - g0 < kStage1Heads ? G - g0 : kStage1Heads;
    for (int i = tid; i < gc * D; i += kStage1Threads) sQ[i] = ToF32(q[static_cast<int64_t>(g0) * D + i]);
    SyncThreads();
    loaded = g0;
  };
  auto score = [&](int j, int gi) {  // head g0 + gi of the chunk in sQ, level-1 window j
    return Stage1Dot(sQ + gi * D, k1 + static_cast<int64_t>(j) * D, D, p.scale);
  };

  // 2. Normalizers, one head chunk at a time: thread t scores rows t / gc, + 128 / gc, ... of head
  //    t % gc (online max and sum), then the partials of a head merge in thread order.
  for (int g0 = 0; g0 < G; g0 += kStage1Heads) {
    load_q(g0);
    const int gc = G - g0 < kStage1Heads ? G - g0 : kStage1Heads;
    const int rstep = kStage1Threads / gc, gi = tid % gc;
    float m = -kInf, l = 0.0f;
    if (tid < gc * rstep)
      for (int r = tid / gc; r < lse_rows; r += rstep) {
        float x;
        if (step == 0) {
          x = score(r, gi);
        } else {
          x = 0.25f * (((score(4 * r, gi) + score(4 * r + step, gi)) + score(4 * r + 2 * step, gi)) +
                       score(4 * r + 3 * step, gi));
        }
        if (x > m) {  // explicit FMAs here and below, as in Stage1Dot
          l = Fma(l, Exp(m - x), 1.0f);
          m = x;
        } else {
          l += Exp(x - m);
        }
      }
    sM[tid] = m;
    sL[tid] = l;
    SyncThreads();
    if (tid < gc) {
      float mx = -kInf;
      for (int i = tid; i < gc * rstep; i += gc) mx = sM[i] > mx ? sM[i] : mx;
      float sum = 0.0f;
      for (int i = tid; i < gc * rstep; i += gc)
        if (sL[i] > 0.0f) sum = Fma(sL[i], Exp(sM[i] - mx), sum);
      sLse[g0 + tid] = sum > 0.0f ? mx + Log(sum) : kInf;
    }
    SyncThreads();
  }

  // 3-4. Group sums of 128 windows at a time, max-pooled into the candidate blocks [init_hi, local_lo).
  const BlockWindows bw = BlockWindowsOf(p);
  const int per_block = static_cast<int>(bw.per_block), back = static_cast<int>(bw.back),
            ahead = static_cast<int>(bw.ahead);
  for (int bb = init_hi + tid; bb < local_lo; bb += kStage1Threads) sBlock[bb] = -kInf;
  for (int j0 = 0; j0 < nvis1; j0 += kStage1Threads) {
    const int j1 = j0 + kStage1Threads < nvis1 ? j0 + kStage1Threads : nvis1;
    float gsum = 0.0f;
    for (int g0 = 0; g0 < G; g0 += kStage1Heads) {
      load_q(g0);
      const int gc = G - g0 < kStage1Heads ? G - g0 : kStage1Heads;
      if (j0 + tid < j1)
        for (int gi = 0; gi < gc; ++gi) gsum += Exp(score(j0 + tid, gi) - sLse[g0 + gi]);
    }
    if (p.score_precision != 0) gsum = ToF32(FromF32<BFloat16>(gsum));  // score_precision 1: bf16 (RNE)
    SyncThreads();                                                      // previous chunk's pooling done reading sGroup
    sGroup[tid] = gsum;
    SyncThreads();
    // Blocks with a window in [j0, j1): b Bk/s - back <= j1 - 1 and b Bk/s + ahead >= j0.
    const int blo_raw = j0 - ahead <= 0 ? 0 : (j0 - ahead + per_block - 1) / per_block;
    const int bhi_raw = (j1 - 1 + back) / per_block;
    const int blo = blo_raw > init_hi ? blo_raw : init_hi, bhi = bhi_raw < local_lo - 1 ? bhi_raw : local_lo - 1;
    for (int bb = blo + tid; bb <= bhi; bb += kStage1Threads) {
      const int wlo = bb * per_block - back, whi = bb * per_block + ahead;
      const int jlo = wlo > j0 ? wlo : j0, jhi = whi < j1 - 1 ? whi : j1 - 1;
      float best = sBlock[bb];
      for (int j = jlo; j <= jhi; ++j) best = best < sGroup[j - j0] ? sGroup[j - j0] : best;
      sBlock[bb] = best;
    }
  }
  SyncThreads();

  // 5. Top-k: the take-th largest rank key (keys are distinct) by bisection, first on the score's
  //    32 bits, then, only if that threshold ties more candidates than the budget has room for, on
  //    the low 13 bits of the complemented block index (blocks < 8192: the upper 19 are all ones).
  //    Then the candidates at or above it, compacted in block order.
  const int n_cand = local_lo - init_hi;
  uint64_t thr = 0;  // take == n_cand: every candidate; take == 0: none (chosen() checks)
  int parity = 0;
  auto count_from = [&](uint64_t t) {
    int cnt = 0;
    for (int bb = init_hi + tid; bb < local_lo; bb += kStage1Threads) cnt += RankKey(sBlock[bb], bb) >= t ? 1 : 0;
    return Stage1BlockSum(cnt, sRed, parity);
  };
  static_assert(kStage1MaxBlocks <= (1 << 13), "the index bisection covers 13 bits");
  if (take > 0 && take < n_cand) {
    for (int bit = 63; bit >= 32; --bit)
      if (count_from(thr | (uint64_t{1} << bit)) >= take) thr |= uint64_t{1} << bit;
    thr |= 0xffffe000u;  // every key with this score has these low bits
    if (count_from(thr) > take)
      for (int bit = 12; bit >= 0; --bit)
        if (count_from(thr | (uint64_t{1} << bit)) >= take) thr |= uint64_t{1} << bit;
  }
  const int per = (n_cand + kStage1Threads - 1) / kStage1Threads;
  const int c0 = init_hi + tid * per, c1 = c0 + per < local_lo ? c0 + per : local_lo;
  auto chosen = [&](int bb) { return take > 0 && RankKey(sBlock[bb], bb) >= thr; };
  int mine = 0;
  for (int bb = c0; bb < c1; ++bb) mine += chosen(bb) ? 1 : 0;
  sCnt[tid] = mine;
  SyncThreads();
  int at = init_hi;
  for (int i = 0; i < tid; ++i) at += sCnt[i];
  for (int bb = c0; bb < c1; ++bb)
    if (chosen(bb)) row[at++] = bb;
  const int n = n_forced + take;
  for (int i = tid; i < p.budget; i += kStage1Threads) {
    if (i < init_hi)
      row[i] = i;
    else if (i >= init_hi + take && i < n)
      row[i] = local_lo + (i - init_hi - take);
    else if (i >= n)
      row[i] = -1;
  }
}

}  // namespace infllmv2::cuda
