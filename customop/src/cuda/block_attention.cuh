// Stage 4 on CUDA (mirrors cpu/block_attention.cc): FlashAttention-2-style attention of 64 query
// rows per CTA over 64-key tiles on tensor cores (mma.sync m16n8k16, ldmatrix, cp.async), online
// softmax, fp32 accumulation. The rows of a CTA are (token, head) pairs of one kv head, row
// R = s * G + g (the GQA regrouping: one K/V tile serves every head of the group), so any G works.
// Each token sees either a key range (dense: from DenseFirstKey, or sparse within the budget: from
// 0) up to its position, or its selection list (sparse, stage 1); a CTA visits only the tiles some
// token sees, in ascending order, and masks per token inside them.
#pragma once

#include "cuda/kernel_args.h"
#include "cuda/launch_shape.h"

namespace infllmv2::cuda {

constexpr int kNoKey = 0x7fffffff;

// What one token of a CTA attends to (held by the thread whose index is the token's slot). The
// split-KV path (split_kv.cuh) narrows it to one split's part: `lo`/`last` in range mode, the list
// entries [cur, end) in list mode; an empty part sees nothing.
struct TokenView {
  int pos = -1;                   // absolute position; -1: padding (sees nothing)
  int lo = 0;                     // range mode: first key
  int last = -1;                  // last key seen (range mode: <= pos; list mode: pos)
  const int32_t* list = nullptr;  // list mode: sorted blocks, -1-padded to the budget
  int cur = 0;                    // list cursor (blocks before it end before the current key)
  int end = 0;                    // list mode: entries [cur, end) are this view's

  IL_DEVICE int NextKey(int k, int Bk) {
    if (pos < 0 || k > last) return kNoKey;
    if (list == nullptr) {
      const int first = k > lo ? k : lo;
      return first <= last ? first : kNoKey;
    }
    while (cur < end && list[cur] >= 0 && (list[cur] + 1) * Bk <= k) ++cur;
    if (cur >= end || list[cur] < 0) return kNoKey;
    const int first = list[cur] * Bk > k ? list[cur] * Bk : k;
    return first <= last ? first : kNoKey;
  }
  // Visible keys of the tile [k0, k0 + 64) as bits.
  IL_DEVICE uint64_t Mask(int k0, int Bk) const {
    if (pos < 0) return 0;
    const int hi = last < k0 + kKeyTile - 1 ? last : k0 + kKeyTile - 1;
    auto bits = [&](int a, int b) -> uint64_t {  // keys [a, b] of the tile
      if (a < k0) a = k0;
      if (b > hi) b = hi;
      if (b < a) return 0;
      const int n = b - a + 1;
      return (n >= 64 ? ~uint64_t{0} : ((uint64_t{1} << n) - 1)) << (a - k0);
    };
    if (list == nullptr) return bits(lo, hi);
    uint64_t m = 0;
    for (int i = cur; i < end && list[i] >= 0 && list[i] * Bk <= hi; ++i)
      m |= bits(list[i] * Bk, list[i] * Bk + Bk - 1);
    return m;
  }
};

// The keys of split `split` of `splits` of a range-mode entry (split-KV path): the tiles from the
// one holding `base` up to the entry's total, cut into equal runs of whole 64-key tiles.
IL_DEVICE void SplitKeyRange(int base, int total, int splits, int split, int* first, int* last) {
  const int tile0 = base / kKeyTile, tiles = (total + kKeyTile - 1) / kKeyTile - tile0;
  const int per = (tiles + splits - 1) / splits;
  *first = (tile0 + split * per) * kKeyTile;
  *last = *first + per * kKeyTile - 1;
}

// The rows [row_tile * 64, +64) of kv head blockIdx.y of entry blockIdx.z, block 128. kSplit false:
// all of their keys, output O / l in T. kSplit true (split_kv.cuh): only split `split` of
// a.kv_splits of their keys (range mode: a run of key tiles; list mode: a run of list entries),
// output the unnormalized partial (O, running max m in the log2 domain, sum l) in fp32 to `part`,
// record ((b * S + s) * H + n) * kv_splits + split of D + 2 floats; an empty split writes the
// neutral partial (0, -inf, 0).
template <class T, int D, bool kSplit>
IL_DEVICE void AttentionRows(const KernelArgs<T>& a, int row_tile, int split, float* part) {
  static_assert(D % 16 == 0 && D <= 256, "head size: multiple of 16");
  constexpr int kStride = D + 8;  // padded shared rows (16-byte aligned, fewer bank conflicts)
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  alignas(16) IL_SHARED T sK[kKeyTile * kStride];
  alignas(16) IL_SHARED T sV[kKeyTile * kStride];
  IL_SHARED uint64_t sMask[kAttnRows];
  IL_SHARED int sNext[kAttnRows];

  const CallRules& p = a.rules;
  const int G = p.group, S = p.seq_len, h = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z);
  const int row0 = row_tile * kAttnRows;
  const int t0 = row0 / G;
  const int t1 = (row0 + kAttnRows - 1) / G + 1 < S ? (row0 + kAttnRows - 1) / G + 1 : S;
  const int n_tok = t1 - t0;
  const EntryPlan e = PlanEntry(p, a.d.seqlens_k, b);
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const T* keys = a.d.present_key + a.CacheOffset(b, h, p.present_capacity);
  const T* vals = a.d.present_value + a.CacheOffset(b, h, p.present_capacity);

  TokenView tv;
  if (tid < n_tok) {
    const int s = t0 + tid, pos = static_cast<int>(e.past) + s;
    const TokenPlan tp = PlanToken(p, e, pos);
    if (pos < e.total) {
      tv.pos = tv.last = pos;
      if (tp.needs_stage1) {
        tv.list = a.sel + ((static_cast<int64_t>(b) * p.kv_num_heads + h) * S + s) * p.budget;
        tv.end = p.budget;
        if constexpr (kSplit) {
          const int per = (p.budget + a.kv_splits - 1) / a.kv_splits;
          tv.cur = split * per < p.budget ? split * per : p.budget;
          tv.end = tv.cur + per < p.budget ? tv.cur + per : p.budget;
        }
      } else {
        tv.lo = static_cast<int>(tp.dense_lo);
        if constexpr (kSplit) {
          int first, last;
          SplitKeyRange(e.sparse ? 0 : DenseFirstKey(p, e.past + t0), e.total, a.kv_splits, split, &first, &last);
          tv.lo = tv.lo > first ? tv.lo : first;
          tv.last = pos < last ? pos : last;
        }
      }
    }
  }

  // Q rows of this CTA into sK, then into registers as A fragments (one 16-row slice per warp).
  for (int c = tid; c < kAttnRows * kChunks; c += kAttnThreads) {
    const int r = c / kChunks, ch = c % kChunks, R = row0 + r;
    const T* src = a.q;
    int bytes = 0;
    if (R < S * G) {
      src = a.q + (static_cast<int64_t>(b * S + R / G) * a.q_heads + h * G + R % G) * D + ch * 8;
      bytes = 16;
    }
    CpAsync16(&sK[r * kStride + ch * 8], src, bytes);
  }
  CpAsyncCommit();
  CpAsyncWait<0>();
  SyncThreads();
  uint32_t qa[D / 16][4];
  for (int kk = 0; kk < D / 16; ++kk)
    LdMatrixX4(qa[kk], &sK[(warp * 16 + lane % 16) * kStride + kk * 16 + 8 * (lane / 16)]);

  // Token slot of this lane's two rows (g and g + 8 of the warp's slice); -1 past the rows.
  int slot[2];
  for (int i = 0; i < 2; ++i) {
    const int R = row0 + warp * 16 + g + 8 * i;
    slot[i] = R < S * G ? R / G - t0 : -1;
  }
  float o[D / 8][4];
  for (auto& x : o) x[0] = x[1] = x[2] = x[3] = 0.0f;
  float m[2] = {-kInf, -kInf}, l[2] = {0.0f, 0.0f};
  const int Bk = p.block_size;

  if (tid < kAttnRows) sNext[tid] = tid < n_tok ? tv.NextKey(0, Bk) : kNoKey;
  SyncThreads();  // also: every warp has its Q fragments before sK is overwritten
  for (;;) {
    int next = kNoKey;
    for (int i = 0; i < n_tok; ++i) next = sNext[i] < next ? sNext[i] : next;
    if (next == kNoKey) break;
    const int k0 = next / kKeyTile * kKeyTile;
    if (tid < n_tok) sMask[tid] = tv.Mask(k0, Bk);
    // K and V tiles; rows at or past the entry's total are zero (a shared buffer may hold anything there).
    for (int c = tid; c < kKeyTile * kChunks; c += kAttnThreads) {
      const int r = c / kChunks, ch = c % kChunks, key = k0 + r;
      const bool ok = key < e.total;
      CpAsync16(&sK[r * kStride + ch * 8], ok ? keys + static_cast<int64_t>(key) * D + ch * 8 : keys, ok ? 16 : 0);
    }
    CpAsyncCommit();
    for (int c = tid; c < kKeyTile * kChunks; c += kAttnThreads) {
      const int r = c / kChunks, ch = c % kChunks, key = k0 + r;
      const bool ok = key < e.total;
      CpAsync16(&sV[r * kStride + ch * 8], ok ? vals + static_cast<int64_t>(key) * D + ch * 8 : vals, ok ? 16 : 0);
    }
    CpAsyncCommit();
    CpAsyncWait<1>();  // K landed; V may still be in flight
    SyncThreads();

    // S = Q K^T: 8 n-tiles of 8 keys, fp32.
    float s[kKeyTile / 8][4];
    for (auto& x : s) x[0] = x[1] = x[2] = x[3] = 0.0f;
    for (int np = 0; np < kKeyTile / 16; ++np)
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t kb[4];
        LdMatrixX4(kb, &sK[(np * 16 + lane % 8 + 8 * (lane / 16)) * kStride + kk * 16 + 8 * ((lane / 8) % 2)]);
        Mma16816<T>(s[2 * np], qa[kk], kb, s[2 * np]);
        Mma16816<T>(s[2 * np + 1], qa[kk], kb + 2, s[2 * np + 1]);
      }
    // Scale, softcap, mask; row maxima over the 4 lanes of a row.
    const uint64_t mask[2] = {slot[0] >= 0 ? sMask[slot[0]] : 0, slot[1] >= 0 ? sMask[slot[1]] : 0};
    float mx[2] = {-kInf, -kInf};
    for (int j = 0; j < kKeyTile / 8; ++j)
      for (int i = 0; i < 4; ++i) {
        const int col = 8 * j + 2 * t + i % 2;
        float x = s[j][i] * p.scale;
        if (p.softcap > 0.0f) x = p.softcap * Tanh(x / p.softcap);
        x = ((mask[i / 2] >> col) & 1) ? x * 1.4426950408889634f : -kInf;  // log2 domain
        s[j][i] = x;
        mx[i / 2] = x > mx[i / 2] ? x : mx[i / 2];
      }
    float alpha[2];
    for (int i = 0; i < 2; ++i) {
      mx[i] = fmaxf(mx[i], ShflXor(mx[i], 1));
      mx[i] = fmaxf(mx[i], ShflXor(mx[i], 2));
      const float m_new = fmaxf(m[i], mx[i]);
      alpha[i] = m_new == -kInf ? 1.0f : Exp2(m[i] - m_new);
      m[i] = m_new;
      l[i] *= alpha[i];
    }
    for (auto& x : o) {
      x[0] *= alpha[0];
      x[1] *= alpha[0];
      x[2] *= alpha[1];
      x[3] *= alpha[1];
    }
    // P = exp2(S - m) as A fragments (16-bit) of P V; the C layout of two n-tiles is the A layout.
    uint32_t pa[kKeyTile / 16][4];
    for (int j = 0; j < kKeyTile / 8; ++j) {
      float pr[4];
      for (int i = 0; i < 4; ++i) {
        pr[i] = s[j][i] == -kInf ? 0.0f : Exp2(s[j][i] - m[i / 2]);
        l[i / 2] += pr[i];
      }
      pa[j / 2][(j % 2) * 2] = Pack2<T>(pr[0], pr[1]);
      pa[j / 2][(j % 2) * 2 + 1] = Pack2<T>(pr[2], pr[3]);
    }
    CpAsyncWait<0>();
    SyncThreads();
    // O += P V: V rows are keys (k), columns head dims (n): ldmatrix.trans gives the B fragments.
    for (int dp = 0; dp < D / 16; ++dp)
      for (int kk = 0; kk < kKeyTile / 16; ++kk) {
        uint32_t vb[4];
        LdMatrixX4Trans(vb, &sV[(kk * 16 + lane % 8 + 8 * ((lane / 8) % 2)) * kStride + dp * 16 + 8 * (lane / 16)]);
        Mma16816<T>(o[2 * dp], pa[kk], vb, o[2 * dp]);
        Mma16816<T>(o[2 * dp + 1], pa[kk], vb + 2, o[2 * dp + 1]);
      }
    if (tid < kAttnRows) sNext[tid] = tid < n_tok ? tv.NextKey(k0 + kKeyTile, Bk) : kNoKey;
    SyncThreads();  // sK/sV free for the next tile, sNext complete
  }

  // O / l (rows that saw nothing: 0), stored in T; or the split's partial.
  for (int i = 0; i < 2; ++i) {
    l[i] += ShflXor(l[i], 1);
    l[i] += ShflXor(l[i], 2);
  }
  for (int i = 0; i < 2; ++i) {
    if (slot[i] < 0) continue;
    const int R = row0 + warp * 16 + g + 8 * i;
    const int64_t row = static_cast<int64_t>(b * S + R / G) * p.num_heads + h * G + R % G;
    if constexpr (kSplit) {  // the unnormalized partial: the combine kernel normalizes
      float* rec = part + (row * a.kv_splits + split) * (D + 2);
      for (int j = 0; j < D / 8; ++j) {
        rec[8 * j + 2 * t] = o[j][2 * i];
        rec[8 * j + 2 * t + 1] = o[j][2 * i + 1];
      }
      if (t == 0) {
        rec[D] = m[i];
        rec[D + 1] = l[i];
      }
    } else {
      T* out = a.d.output + row * D;
      const float inv = !e.valid ? QuietNaN() : l[i] > 0.0f ? 1.0f / l[i] : 0.0f;  // invalid entry: NaN rows
      for (int j = 0; j < D / 8; ++j) {
        out[8 * j + 2 * t] = FromF32<T>(o[j][2 * i] * inv);
        out[8 * j + 2 * t + 1] = FromF32<T>(o[j][2 * i + 1] * inv);
      }
    }
  }
}

// grid (ceil(S * G / 64), Hkv, B), block 128.
template <class T, int D>
IL_GLOBAL void BlockAttentionKernel(KernelArgs<T> a) {
  AttentionRows<T, D, false>(a, static_cast<int>(blockIdx.x), 0, nullptr);
}

}  // namespace infllmv2::cuda
