// Stage 4 on CUDA (mirrors cpu/block_attention.cc): FlashAttention-2-style attention on tensor
// cores (mma.sync m16n8k16, ldmatrix, cp.async), online softmax in the exp2 domain, fp32
// accumulation. Tile shapes come from kernel_traits.h (AttnTraits: rows per CTA, warps, keys per
// tile, stages, shared bytes); each (type, head size) is compiled in its own file under
// instantiations/ through attention_launch.cuh.
//
// The rows of a CTA are (token, head) pairs of one kv head, row R = s * G + g (the GQA regrouping:
// one K/V tile serves every head of the group), so any G works. Each token sees either a key range
// (dense: from DenseFirstKey, or sparse within the budget: from 0) up to its position, or its
// selection list (sparse, stage 1); a CTA visits only the key tiles some token sees, in ascending
// order.
//
// Pipeline per tile (two stages): the next tile's index is found (from the tokens' ranges or lists)
// before the current tile is computed, and its K and V are issued with cp.async into the other
// stage, so they load while Q K^T, the softmax and P V of the current tile run. Two barriers per
// tile. Masks are applied only where a row does not see the whole tile (the boundary tiles: the
// diagonal, a range start, a selected block narrower than the tile, the cache end).
#pragma once

#include "cuda/kernel_args.h"
#include "cuda/kernel_traits.h"
#include "cuda/launch_shape.h"

namespace infllmv2::cuda {

constexpr int kNoKey = 0x7fffffff;

template <class T, int D, bool kDecode>
using AttnTraitsOf = AttnTraits<static_cast<int>(sizeof(T)), D, kDecode>;

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
  // Visible keys of the tile [k0, k0 + kTile) as bits.
  template <int kTile>
  IL_DEVICE uint64_t Mask(int k0, int Bk) const {
    if (pos < 0) return 0;
    const int hi = last < k0 + kTile - 1 ? last : k0 + kTile - 1;
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
// one holding `base` up to the entry's total, cut into equal runs of whole kTile-key tiles.
template <int kTile>
IL_DEVICE void SplitKeyRange(int base, int total, int splits, int split, int* first, int* last) {
  const int tile0 = base / kTile, tiles = (total + kTile - 1) / kTile - tile0;
  const int per = (tiles + splits - 1) / splits;
  *first = (tile0 + split * per) * kTile;
  *last = *first + per * kTile - 1;
}

// The rows [row_tile * Tr::kRows, +Tr::kRows) of kv head blockIdx.y of entry blockIdx.z, block
// Tr::kThreads, Tr::kSmemBytes of dynamic shared memory. kSplit false: all of their keys, output
// O / l in T. kSplit true (split_kv.cuh): only split `split` of a.kv_splits of their keys (range
// mode: a run of key tiles; list mode: a run of list entries), output the unnormalized partial (O,
// running max m in the log2 domain, sum l) in fp32 to `part`, record
// ((b * S + s) * H + n) * kv_splits + split of D + 2 floats; an empty split writes the neutral
// partial (0, -inf, 0).
template <class T, class Tr, bool kSplit>
IL_DEVICE void AttentionRows(const KernelArgs<T>& a, int row_tile, int split, float* part) {
  constexpr int D = Tr::kHeadSize, kRows = Tr::kRows, kThreads = Tr::kThreads, kTile = Tr::kKeyTile;
  constexpr int kStride = Tr::kStride, kChunks = Tr::kChunks, kTileElems = kTile * kStride;
  constexpr uint64_t kFullTile = kTile >= 64 ? ~uint64_t{0} : (uint64_t{1} << kTile) - 1;
  static_assert(kThreads >= kRows, "one thread per token slot");
  IL_DYNAMIC_SHARED(smem, Tr::kSmemBytes);
  // Q staging (with Q in registers it overlays the K/V stages: it is dead before the first load);
  // stage st holds K at sKV + 2 st tiles and V right after it.
  T* const sQ = reinterpret_cast<T*>(smem);
  T* const sKV = reinterpret_cast<T*>(smem + (Tr::kQInRegisters ? 0 : Tr::kQBytes));
  IL_SHARED uint64_t sMask[kRows];
  IL_SHARED int sNext[kRows];

  const CallRules& p = a.rules;
  const int G = p.group, S = p.seq_len, h = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z);
  const int row0 = row_tile * kRows;
  const int t0 = row0 / G;
  const int t1 = (row0 + kRows - 1) / G + 1 < S ? (row0 + kRows - 1) / G + 1 : S;
  const int n_tok = t1 - t0;
  const EntryPlan e = PlanEntry(p, a.d.seqlens_k, b);
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const T* keys = a.d.present_key + a.CacheOffset(b, h, p.present_capacity);
  const T* vals = a.d.present_value + a.CacheOffset(b, h, p.present_capacity);
  const int Bk = p.block_size;

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
          SplitKeyRange<kTile>(e.sparse ? 0 : DenseFirstKey(p, e.past + t0), e.total, a.kv_splits, split, &first,
                               &last);
          tv.lo = tv.lo > first ? tv.lo : first;
          tv.last = pos < last ? pos : last;
        }
      }
    }
  }

  // K and V of the tile at k0 into stage st, one cp.async group each; rows at or past the entry's
  // total are zero (a shared buffer may hold anything there).
  auto load_tile = [&](int k0, int st) {
    T* sK = sKV + 2 * st * kTileElems;
    for (int c = tid; c < kTile * kChunks; c += kThreads) {
      const int r = c / kChunks, ch = c % kChunks, key = k0 + r;
      const bool ok = key < e.total;
      CpAsync16(&sK[r * kStride + ch * 8], ok ? keys + static_cast<int64_t>(key) * D + ch * 8 : keys, ok ? 16 : 0);
    }
    CpAsyncCommit();
    for (int c = tid; c < kTile * kChunks; c += kThreads) {
      const int r = c / kChunks, ch = c % kChunks, key = k0 + r;
      const bool ok = key < e.total;
      CpAsync16(&sK[kTileElems + r * kStride + ch * 8], ok ? vals + static_cast<int64_t>(key) * D + ch * 8 : vals,
                ok ? 16 : 0);
    }
    CpAsyncCommit();
  };
  auto min_next = [&]() {
    int next = kNoKey;
    for (int i = 0; i < n_tok; ++i) next = sNext[i] < next ? sNext[i] : next;
    return next;
  };

  // Q rows of this CTA into the staging area (then, at D <= 128, into registers as A fragments:
  // one 16-row slice per warp).
  for (int c = tid; c < kRows * kChunks; c += kThreads) {
    const int r = c / kChunks, ch = c % kChunks, R = row0 + r;
    const T* src = a.q;
    int bytes = 0;
    if (R < S * G) {
      src = a.q + (static_cast<int64_t>(b * S + R / G) * a.q_heads + h * G + R % G) * D + ch * 8;
      bytes = 16;
    }
    CpAsync16(&sQ[r * kStride + ch * 8], src, bytes);
  }
  CpAsyncCommit();
  if (tid < kRows) sNext[tid] = tid < n_tok ? tv.NextKey(0, Bk) : kNoKey;
  CpAsyncWait<0>();
  SyncThreads();
  uint32_t qa[Tr::kQInRegisters ? D / 16 : 1][4];
  if constexpr (Tr::kQInRegisters) {
    for (int kk = 0; kk < D / 16; ++kk)
      LdMatrixX4(qa[kk], &sQ[(warp * 16 + lane % 16) * kStride + kk * 16 + 8 * (lane / 16)]);
  }
  int k0 = min_next();
  SyncThreads();  // every warp has its Q fragments (and every thread the first tile) before stage 0 is written
  if (k0 != kNoKey) load_tile(k0, 0);

  // Token slot of this lane's two rows (g and g + 8 of the warp's slice); -1 past the rows.
  int slot[2];
  for (int i = 0; i < 2; ++i) {
    const int R = row0 + warp * 16 + g + 8 * i;
    slot[i] = R < S * G ? R / G - t0 : -1;
  }
  float o[D / 8][4];
  for (auto& x : o) x[0] = x[1] = x[2] = x[3] = 0.0f;
  float m[2] = {-kInf, -kInf}, l[2] = {0.0f, 0.0f};  // m: running max of the scaled scores, log2 domain
  const bool softcap = p.softcap > 0.0f;
  // exp2 of (raw score x c - m): the softmax scale and log2(e) in one multiplier (after the softcap,
  // which needs the natural-domain score, c is log2(e) alone).
  const float c_log2 = softcap ? 1.4426950408889634f : p.scale * 1.4426950408889634f;

  for (int st = 0; k0 != kNoKey; st ^= 1) {
    // Masks of this tile and the next tile's index: the tokens' lists are read one tile ahead of
    // the loads they decide.
    if (tid < n_tok) {
      sMask[tid] = tv.Mask<kTile>(k0, Bk);
      sNext[tid] = tv.NextKey(k0 + kTile, Bk);
    }
    CpAsyncWait<1>();  // this tile's K landed (its V may still be in flight)
    SyncThreads();     // K, sMask, sNext visible; every warp done with the previous tile (its stage is free)
    const int k1 = min_next();
    if (k1 != kNoKey) {
      load_tile(k1, st ^ 1);
    } else {  // two empty groups keep the wait counts below uniform
      CpAsyncCommit();
      CpAsyncCommit();
    }
    const T* sK = sKV + 2 * st * kTileElems;
    const T* sV = sK + kTileElems;

    // S = Q K^T: kTile / 8 n-tiles of 8 keys, fp32.
    float s[kTile / 8][4];
    for (auto& x : s) x[0] = x[1] = x[2] = x[3] = 0.0f;
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t q[4];
      if constexpr (Tr::kQInRegisters) {
        for (int i = 0; i < 4; ++i) q[i] = qa[kk][i];
      } else {
        LdMatrixX4(q, &sQ[(warp * 16 + lane % 16) * kStride + kk * 16 + 8 * (lane / 16)]);
      }
      for (int np = 0; np < kTile / 16; ++np) {
        uint32_t kb[4];
        LdMatrixX4(kb, &sK[(np * 16 + lane % 8 + 8 * (lane / 16)) * kStride + kk * 16 + 8 * ((lane / 8) % 2)]);
        Mma16816<T>(s[2 * np], q, kb, s[2 * np]);
        Mma16816<T>(s[2 * np + 1], q, kb + 2, s[2 * np + 1]);
      }
    }
    // Softcap (natural domain, then log2), the mask on boundary tiles only, row maxima over the 4
    // lanes of a row.
    const uint64_t mask[2] = {slot[0] >= 0 ? sMask[slot[0]] : 0, slot[1] >= 0 ? sMask[slot[1]] : 0};
    if (softcap) {
      IL_UNROLL
      for (int j = 0; j < kTile / 8; ++j) {
        IL_UNROLL
        for (int i = 0; i < 4; ++i) s[j][i] = p.softcap * Tanh(s[j][i] * p.scale / p.softcap);
      }
    }
    if (mask[0] != kFullTile || mask[1] != kFullTile) {
      IL_UNROLL
      for (int j = 0; j < kTile / 8; ++j) {
        IL_UNROLL
        for (int i = 0; i < 4; ++i)
          if (!((mask[i / 2] >> (8 * j + 2 * t + i % 2)) & 1)) s[j][i] = -kInf;
      }
    }
    float mx[2] = {-kInf, -kInf};
    for (int j = 0; j < kTile / 8; ++j)
      for (int i = 0; i < 4; ++i) mx[i / 2] = s[j][i] > mx[i / 2] ? s[j][i] : mx[i / 2];
    float alpha[2];
    for (int i = 0; i < 2; ++i) {
      mx[i] = fmaxf(mx[i], ShflXor(mx[i], 1));
      mx[i] = fmaxf(mx[i], ShflXor(mx[i], 2));
      const float m_new = fmaxf(m[i], mx[i] * c_log2);
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
    // P = exp2(S c - m) as A fragments (16-bit) of P V; the C layout of two n-tiles is the A layout.
    uint32_t pa[kTile / 16][4];
    for (int j = 0; j < kTile / 8; ++j) {
      float pr[4];
      for (int i = 0; i < 4; ++i) {
        pr[i] = s[j][i] == -kInf ? 0.0f : Exp2(Fma(s[j][i], c_log2, -m[i / 2]));
        l[i / 2] += pr[i];
      }
      pa[j / 2][(j % 2) * 2] = Pack2<T>(pr[0], pr[1]);
      pa[j / 2][(j % 2) * 2 + 1] = Pack2<T>(pr[2], pr[3]);
    }
    CpAsyncWait<2>();  // this tile's V landed (the next tile's K and V may be in flight)
    SyncThreads();
    // O += P V: V rows are keys (k), columns head dims (n): ldmatrix.trans gives the B fragments.
    for (int dp = 0; dp < D / 16; ++dp)
      for (int kk = 0; kk < kTile / 16; ++kk) {
        uint32_t vb[4];
        LdMatrixX4Trans(vb, &sV[(kk * 16 + lane % 8 + 8 * ((lane / 8) % 2)) * kStride + dp * 16 + 8 * (lane / 16)]);
        Mma16816<T>(o[2 * dp], pa[kk], vb, o[2 * dp]);
        Mma16816<T>(o[2 * dp + 1], pa[kk], vb + 2, o[2 * dp + 1]);
      }
    k0 = k1;
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

// grid (ceil(S * G / Tr::kRows), Hkv, B), block Tr::kThreads, Tr::kSmemBytes dynamic shared memory.
template <class T, class Tr>
IL_GLOBAL void IL_LAUNCH_BOUNDS(Tr::kThreads, Tr::kMinCtasPerSm) BlockAttentionKernel(KernelArgs<T> a) {
  AttentionRows<T, Tr, false>(a, static_cast<int>(blockIdx.x), 0, nullptr);
}

}  // namespace infllmv2::cuda
