// Stage 3 on CUDA (mirrors cpu/selection.cc): the selection lists. Tokens that do not outgrow the
// budget (and dense or padding tokens) get their rows from SelectionFillKernel; the others from
// stage 1, three kernels with the CPU kernel's rules, so that `selected_blocks` is the CPU kernel's:
//   Stage1LseKernel    scores on tensor cores, per-row normalizer partials per window chunk;
//   Stage1GroupKernel  the partials merged, scores again, group sums, block max-pool;
//   Stage1TopKKernel   init and local blocks forced, top-k of the rest (ties: lower block index).
#pragma once

#include "cuda/kernel_args.h"
#include "cuda/launch_shape.h"

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

// ---- Stage 1 ----
//
// Rows. Per kv head h of entry b, the A tile of the tensor-core GEMM is 16 (token, query head)
// rows: a unit of tpt = 16 / G consecutive tokens of the call when G <= 16 (row r: token r / G,
// head r % G), or one token in ht = ceil(G / 16) head tiles when G > 16 (tile i: heads 16 i..).
// The B tiles are 64 level-1 compressed keys ("windows") at a time, 16 per warp.
// Windows. A unit's windows are cut into `splits` chunks of `chunk` windows (a multiple of 64 and
// of the windows per block), one CTA each, so that a decode token fills the GPU; the normalizer
// partials of the chunks merge with the log-sum-exp rule, in chunk order. Every score is computed
// twice (once for the normalizer, once for the group sums): the normalizer must be complete before
// the first group sum, and storing the scores would cost G x 4 bytes per window per token.
// Per token at pos (the CPU kernel's rules, common/call_rules.h):
//   x_j[g] = scale * q_g . K1_j over the visible windows j < nvis1;
//   lse[g]  = log-sum-exp over the level-2 rows J < nvis2 (lse_approx, nvis2 > 0:
//             0.25 (((x_4J + x_4J+st) + x_4J+2st) + x_4J+3st), st = kernel / stride) or over x_j;
//   group_j = sum_g exp(x_j[g] - lse[g]), bf16 (nearest even) when score_precision is 1;
//   block   = max of group_j over its windows; then the top-k.
// Everything is in the exp2 domain (x log2 e); fp32 throughout; no atomics, fixed orders.
constexpr int kS1Threads = 128;
constexpr int kS1Warps = kS1Threads / 32;
constexpr int kS1Tile = 16 * kS1Warps;   // windows per key tile
constexpr int kS1XStride = kS1Tile + 4;  // padded fp32 rows of the score tiles
constexpr int kS1PoolFloats = 4096;      // block maxima of a group CTA: tokens x blocks of its chunk
constexpr int kS1MaxStep = 21;           // kernel / stride with lse_approx: 3 st - 3 < one tile
constexpr int kStage1MaxHead = 128;      // head size: the group kernel's static shared memory (48 KB)
constexpr int kStage1MaxGroup = 256;     // G: normalizers of one unit in shared memory
constexpr int kStage1MaxBlocks = 8192;   // top-k keys: the block index in 13 bits
constexpr int64_t kS1ScoreScratchBytes = int64_t{64} << 20;  // block scores per token chunk
constexpr float kLog2e = 1.4426950408889634f;

// A normalizer partial in the log2 domain: max m and sum l of 2^(y - m).
struct alignas(8) Stage1Partial {
  float m, l;
};

// The launch geometry of stage 1, chosen on the host from host facts (Stage1ShapeOf), plus the
// scratch of one token chunk [s0, s0 + s_count) of the call.
struct Stage1Shape {
  int tpt = 1;     // tokens per unit
  int ht = 1;      // 16-row head tiles per unit
  int splits = 1;  // window chunks per unit
  int chunk = kS1Tile;
  int nblk = 1;    // blocks per row of the block-score scratch
  int tokens = 1;  // tokens per launch (token chunk), a multiple of tpt unless it is S
  int s0 = 0, s_count = 0, units = 0;
  Stage1Partial* part = nullptr;  // [B, Hkv, units * ht, splits, 16]
  float* scores = nullptr;        // [B, Hkv, s_count, nblk]: the candidate blocks' scores
};

inline int64_t Stage1Gcd(int64_t a, int64_t b) { return b == 0 ? a : Stage1Gcd(b, a % b); }

// Fill target as the attention kernels' (launch_shape.h): about 2 CTAs per SM of a 132-SM GPU.
// `forced` >= 1: about that many chunks (RunOptions::stage1_splits).
inline Stage1Shape Stage1ShapeOf(const AttentionAttributes& attrs, const AttentionParams& params, int forced = 0) {
  Stage1Shape sh;
  const int64_t G = params.group, S = params.seq_len, BH = params.batch * params.kv_num_heads;
  sh.tpt = G <= 16 ? static_cast<int>(16 / G) : 1;
  sh.ht = static_cast<int>((G + 15) / 16);
  const int64_t n1 = NumWindows(params.total_sequence_length, attrs.compress_kernel, attrs.compress_stride);
  const int64_t nblk = (params.total_sequence_length + attrs.block_size - 1) / attrs.block_size;
  sh.nblk = static_cast<int>(nblk > 1 ? nblk : 1);
  int64_t tokens = S;
  const int64_t per_token = BH * sh.nblk * static_cast<int64_t>(sizeof(float));
  if (tokens * per_token > kS1ScoreScratchBytes) {
    tokens = kS1ScoreScratchBytes / per_token / sh.tpt * sh.tpt;
    if (tokens < sh.tpt) tokens = sh.tpt;
  }
  sh.tokens = static_cast<int>(tokens);
  const int64_t pb = attrs.block_size / attrs.compress_stride;
  const int64_t unit = kS1Tile / Stage1Gcd(kS1Tile, pb) * pb;  // lcm(64, pb)
  const int64_t ctas = (tokens + sh.tpt - 1) / sh.tpt * BH;
  int64_t want = ctas <= 0 || 2 * ctas > kTargetCtas ? 1 : (kTargetCtas + ctas - 1) / ctas;
  if (forced > 0) want = forced;
  const int64_t cap = (n1 + kS1Tile - 1) / kS1Tile;  // at least a tile per chunk
  if (want > cap) want = cap;
  if (want < 1) want = 1;
  int64_t chunk = ((n1 + want - 1) / want + unit - 1) / unit * unit;
  const int64_t pool = kS1PoolFloats / sh.tpt * pb / unit * unit;  // block maxima fit shared memory
  if (chunk > pool) chunk = pool;
  if (chunk < unit) chunk = unit;
  sh.chunk = static_cast<int>(chunk);
  sh.splits = static_cast<int>(n1 > chunk ? (n1 + chunk - 1) / chunk : 1);
  return sh;
}

// One token of a unit as the stage-1 kernels see it; active: it outgrows the budget.
struct Stage1Token {
  int s, active, use_k2, nvis1, nvis2, init_hi, local_lo;
};

IL_DEVICE Stage1Token Stage1TokenOf(const CallRules& p, const EntryPlan& e, const Stage1Shape& sh, int unit, int i) {
  Stage1Token k{};
  k.s = sh.s0 + unit * sh.tpt + i;
  if (i >= sh.tpt || k.s >= sh.s0 + sh.s_count) return k;
  const int64_t pos = e.past + k.s;
  if (!PlanToken(p, e, pos).needs_stage1) return k;
  const Stage1Levels lv = LevelsOf(p, e, pos);
  const SelectionSpan sp = SpanOf(p, pos);
  k.active = 1;
  k.use_k2 = lv.use_k2 ? 1 : 0;
  k.nvis1 = static_cast<int>(lv.nvis1);
  k.nvis2 = static_cast<int>(lv.nvis2);
  k.init_hi = static_cast<int>(sp.init_hi);
  k.local_lo = static_cast<int>(sp.local_lo);
  return k;
}

// Token slot (in the unit) of row r of head tile `tile`, and its query head; -1: no row.
IL_DEVICE int Stage1RowToken(int G, int tpt, int tile, int r, int* head) {
  if (G <= 16) {
    *head = r % G;
    return r < tpt * G ? r / G : -1;
  }
  *head = tile * 16 + r;
  return *head < G ? 0 : -1;
}

// The 16 query rows of head tile `tile` into sQ (cp.async; rows of inactive tokens not loaded),
// then into this warp's A fragments.
template <class T, int D>
IL_DEVICE void Stage1LoadQ(const KernelArgs<T>& a, int b, int h, int tile, const Stage1Token* tok, T* sQ,
                           uint32_t (*qa)[4]) {
  constexpr int kStride = D + 8, kChunks = D / 8;
  const CallRules& p = a.rules;
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32;
  const int tpt = p.group <= 16 ? 16 / p.group : 1;
  for (int c = tid; c < 16 * kChunks; c += kS1Threads) {
    const int r = c / kChunks, ch = c % kChunks;
    int head;
    const int slot = Stage1RowToken(p.group, tpt, tile, r, &head);
    if (slot < 0 || !tok[slot].active) continue;
    const T* src =
        a.q +
        (static_cast<int64_t>(b * p.seq_len + tok[slot].s) * a.q_heads + static_cast<int64_t>(h) * p.group + head) * D +
        ch * 8;
    CpAsync16(&sQ[r * kStride + ch * 8], src, 16);
  }
  CpAsyncCommit();
  CpAsyncWait<0>();
  SyncThreads();
  for (int kk = 0; kk < D / 16; ++kk) LdMatrixX4(qa[kk], &sQ[(lane % 16) * kStride + kk * 16 + 8 * (lane / 16)]);
}

// Windows [w, hi) (at most one tile) of the level-1 keys into sK; rows past hi are not loaded.
template <class T, int D>
IL_DEVICE void Stage1LoadK(const T* k1, int w, int hi, T* sK) {
  constexpr int kStride = D + 8, kChunks = D / 8;
  const int n = hi - w < kS1Tile ? hi - w : kS1Tile;
  for (int c = static_cast<int>(threadIdx.x); c < n * kChunks; c += kS1Threads) {
    const int r = c / kChunks, ch = c % kChunks;
    CpAsync16(&sK[r * kStride + ch * 8], k1 + static_cast<int64_t>(w + r) * D + ch * 8, 16);
  }
  CpAsyncCommit();
  CpAsyncWait<0>();
}

// This warp's 16 windows of the tile: acc[j] are rows (g, g + 8) x windows 16 warp + 8 j + 2t..+1.
template <class T, int D>
IL_DEVICE void Stage1Mma(const uint32_t (*qa)[4], const T* sK, float acc[2][4]) {
  constexpr int kStride = D + 8;
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  for (int j = 0; j < 2; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t kb[4];
    LdMatrixX4(kb, &sK[(warp * 16 + lane % 8 + 8 * (lane / 16)) * kStride + kk * 16 + 8 * ((lane / 8) % 2)]);
    Mma16816<T>(acc[0], qa[kk], kb, acc[0]);
    Mma16816<T>(acc[1], qa[kk], kb + 2, acc[1]);
  }
}

// Pass 1, grid (units x ht x splits, Hkv, B), block 128: the normalizer partial of each row of one
// head tile over one window chunk [W0, W1): level-1 rows j in the chunk, or level-2 rows J with
// 4 J in the chunk (which read up to 3 st - 3 windows past it). The scores of two consecutive
// tiles stay in shared memory, so a level-2 row is added one tile late. A CTA with nothing to do
// writes the neutral partial (-inf, 0).
template <class T, int D>
IL_GLOBAL void Stage1LseKernel(KernelArgs<T> a, Stage1Shape sh) {
  constexpr int kStride = D + 8;
  alignas(16) IL_SHARED T sQ[16 * kStride];
  alignas(16) IL_SHARED T sK[kS1Tile * kStride];
  IL_SHARED float sX[2][16][kS1XStride];
  IL_SHARED float sM[kS1Threads], sL[kS1Threads];
  IL_SHARED Stage1Token sTok[16];

  const CallRules& p = a.rules;
  const int split = static_cast<int>(blockIdx.x) % sh.splits, tile = static_cast<int>(blockIdx.x) / sh.splits;
  const int unit = tile / sh.ht, hti = tile % sh.ht;
  const int h = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z);
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const EntryPlan e = PlanEntry(p, a.d.seqlens_k, b);
  if (tid < 16) sTok[tid] = Stage1TokenOf(p, e, sh, unit, tid);
  SyncThreads();
  int n1 = 0, any_k2 = 0;
  for (int i = 0; i < sh.tpt; ++i)
    if (sTok[i].active) {
      n1 = sTok[i].nvis1 > n1 ? sTok[i].nvis1 : n1;
      any_k2 |= sTok[i].use_k2;
    }
  const int st = p.compress_kernel / p.compress_stride;
  const int W0 = split * sh.chunk, W1 = W0 + sh.chunk;
  const int halo = any_k2 && 3 * st - 3 > 0 ? 3 * st - 3 : 0;
  const int hi = n1 < W1 + halo ? n1 : W1 + halo;  // windows read: [W0, hi)

  // This thread's row (r = tid / 8) and its share of the row's windows (every eighth).
  const int r = tid / 8, sub = tid % 8;
  int head;
  const int slot = Stage1RowToken(p.group, sh.tpt, hti, r, &head);
  const Stage1Token me = slot >= 0 ? sTok[slot] : Stage1Token{};
  float m = -kInf, l = 0.0f;
  auto add = [&](float y) {  // online max and sum, log2 domain
    if (y > m) {
      l = Fma(l, Exp2(m - y), 1.0f);
      m = y;
    } else {
      l += Exp2(y - m);
    }
  };
  if (W0 < hi) {
    uint32_t qa[D / 16][4];
    Stage1LoadQ<T, D>(a, b, h, hti, sTok, sQ, qa);
    const T* k1 = a.comp + a.CacheOffset(b, h, p.compressed_capacity);
    const int tiles = (hi - W0 + kS1Tile - 1) / kS1Tile;
    for (int it = 0; it <= tiles; ++it) {
      const int w = W0 + it * kS1Tile;
      if (it == tiles && !any_k2) break;
      if (w < hi) {
        Stage1LoadK<T, D>(k1, w, hi, sK);
        SyncThreads();
        if (w + 16 * warp < hi) {
          float acc[2][4];
          Stage1Mma<T, D>(qa, sK, acc);
          for (int j = 0; j < 2; ++j)
            for (int i = 0; i < 4; ++i)
              sX[it % 2][g + 8 * (i / 2)][16 * warp + 8 * j + 2 * t + i % 2] = acc[j][i] * p.scale;
        }
      }
      SyncThreads();
      if (me.active && !me.use_k2) {  // level-1 rows of this tile
        const int end = me.nvis1 < W1 ? me.nvis1 : W1;
        for (int j = w + sub; j < end && j < w + kS1Tile; j += 8) add(sX[it % 2][r][j - w] * kLog2e);
      } else if (me.active && it > 0) {  // level-2 rows J with 4 J in the previous tile
        auto x = [&](int j) { return sX[((j - W0) / kS1Tile) % 2][r][(j - W0) % kS1Tile]; };
        const int lo = (w - kS1Tile) / 4, end = (w < W1 ? w : W1) / 4;
        for (int J = lo + sub; J < end && J < me.nvis2; J += 8)
          add(0.25f * (((x(4 * J) + x(4 * J + st)) + x(4 * J + 2 * st)) + x(4 * J + 3 * st)) * kLog2e);
      }
      SyncThreads();  // sK and the older score tile are rewritten next
    }
  }
  sM[tid] = m;
  sL[tid] = l;
  SyncThreads();
  if (tid < 16) {
    float mx = -kInf;
    for (int i = 0; i < 8; ++i) mx = sM[tid * 8 + i] > mx ? sM[tid * 8 + i] : mx;
    float sum = 0.0f;
    for (int i = 0; i < 8; ++i)
      if (sL[tid * 8 + i] > 0.0f) sum = Fma(sL[tid * 8 + i], Exp2(sM[tid * 8 + i] - mx), sum);
    const int64_t at =
        ((static_cast<int64_t>(b) * p.kv_num_heads + h) * sh.units * sh.ht + tile) * sh.splits * 16 + split * 16 + tid;
    StoreGlobal(sh.part + at, Stage1Partial{mx, sum});
  }
}

// Pass 2, grid (units x splits, Hkv, B), block 128: the blocks of one chunk, [W0, W1) / (Bk /
// stride), for the unit's tokens: the normalizers merged from every chunk's partials (chunk order),
// the windows the blocks pool over scored again, group sums (heads in order), rounded when
// score_precision is 1, max-pooled; each token's candidate blocks [init_hi, local_lo) written to
// the block-score scratch.
template <class T, int D>
IL_GLOBAL void Stage1GroupKernel(KernelArgs<T> a, Stage1Shape sh) {
  constexpr int kStride = D + 8;
  alignas(16) IL_SHARED T sQ[16 * kStride];
  alignas(16) IL_SHARED T sK[kS1Tile * kStride];
  IL_SHARED float sE[16][kS1XStride];
  IL_SHARED float sGrp[16 * kS1Tile];
  IL_SHARED float sBlk[kS1PoolFloats];
  IL_SHARED float sLse[kStage1MaxGroup];
  IL_SHARED Stage1Token sTok[16];

  const CallRules& p = a.rules;
  const int split = static_cast<int>(blockIdx.x) % sh.splits, unit = static_cast<int>(blockIdx.x) / sh.splits;
  const int h = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z);
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int G = p.group;
  const EntryPlan e = PlanEntry(p, a.d.seqlens_k, b);
  if (tid < 16) sTok[tid] = Stage1TokenOf(p, e, sh, unit, tid);
  SyncThreads();
  const BlockWindows bw = BlockWindowsOf(p);
  const int pb = static_cast<int>(bw.per_block), back = static_cast<int>(bw.back), ahead = static_cast<int>(bw.ahead);
  int n1 = 0, init_min = kStage1MaxBlocks, local_max = 0;
  for (int i = 0; i < sh.tpt; ++i)
    if (sTok[i].active) {
      n1 = sTok[i].nvis1 > n1 ? sTok[i].nvis1 : n1;
      init_min = sTok[i].init_hi < init_min ? sTok[i].init_hi : init_min;
      local_max = sTok[i].local_lo > local_max ? sTok[i].local_lo : local_max;
    }
  const int B0 = split * sh.chunk / pb, B1 = (split + 1) * sh.chunk / pb;
  const int blo = B0 > init_min ? B0 : init_min, bhi = B1 < local_max ? B1 : local_max;
  if (blo >= bhi) return;  // uniform: no candidate block of any token here
  const int nb = bhi - blo;
  const int wlo = blo * pb - back > 0 ? blo * pb - back : 0;
  const int whi = (bhi - 1) * pb + ahead + 1 < n1 ? (bhi - 1) * pb + ahead + 1 : n1;

  // Normalizers of the unit's rows (every head tile), log2 domain; +inf where nothing is visible.
  for (int i = tid; i < sh.ht * 16; i += kS1Threads) {
    const Stage1Partial* pp =
        sh.part +
        ((static_cast<int64_t>(b) * p.kv_num_heads + h) * sh.units * sh.ht + unit * sh.ht + i / 16) * sh.splits * 16 +
        i % 16;
    float mx = -kInf;
    for (int c = 0; c < sh.splits; ++c) {
      const float mc = LoadGlobal(pp + c * 16).m;
      mx = mc > mx ? mc : mx;
    }
    float sum = 0.0f;
    for (int c = 0; c < sh.splits; ++c) {
      const Stage1Partial q = LoadGlobal(pp + c * 16);
      if (q.l > 0.0f) sum = Fma(q.l, Exp2(q.m - mx), sum);
    }
    sLse[i] = sum > 0.0f ? mx + Log(sum) * kLog2e : kInf;
  }
  for (int i = tid; i < sh.tpt * nb; i += kS1Threads) sBlk[i] = -kInf;

  uint32_t qa[D / 16][4];
  if (sh.ht == 1) Stage1LoadQ<T, D>(a, b, h, 0, sTok, sQ, qa);  // also orders sLse and sBlk
  SyncThreads();
  const T* k1 = a.comp + a.CacheOffset(b, h, p.compressed_capacity);
  for (int w = wlo; w < whi; w += kS1Tile) {
    const int wend = w + kS1Tile < whi ? w + kS1Tile : whi;
    Stage1LoadK<T, D>(k1, w, whi, sK);
    for (int hti = 0; hti < sh.ht; ++hti) {
      if (sh.ht > 1) Stage1LoadQ<T, D>(a, b, h, hti, sTok, sQ, qa);  // its barrier also covers sK
      SyncThreads();
      if (w + 16 * warp < whi) {
        float acc[2][4];
        Stage1Mma<T, D>(qa, sK, acc);
        for (int j = 0; j < 2; ++j)
          for (int i = 0; i < 4; ++i) {
            const int row = g + 8 * (i / 2), col = 16 * warp + 8 * j + 2 * t + i % 2;
            int head;
            const int slot = Stage1RowToken(G, sh.tpt, hti, row, &head);
            const bool on = slot >= 0 && sTok[slot].active && w + col < sTok[slot].nvis1;
            sE[row][col] = on ? Exp2(acc[j][i] * p.scale * kLog2e - sLse[hti * 16 + row]) : 0.0f;
          }
      }
      SyncThreads();
      // Group sums of this head tile's rows, added to the earlier tiles' (heads in order).
      for (int i = tid; i < sh.tpt * kS1Tile; i += kS1Threads) {
        const int tok = i / kS1Tile, col = i % kS1Tile;
        if (w + col >= wend) continue;
        float sum = hti == 0 ? 0.0f : sGrp[i];
        const int r0 = G <= 16 ? tok * G : 0, r1 = G <= 16 ? r0 + G : (G - 16 * hti < 16 ? G - 16 * hti : 16);
        for (int row = r0; row < r1; ++row) sum += sE[row][col];
        sGrp[i] = sum;
      }
      SyncThreads();  // sE and sQ are rewritten next
    }
    // Max-pool into the blocks with a window in [w, wend): b pb - back <= wend - 1, b pb + ahead >= w.
    const int plo_raw = w - ahead <= 0 ? 0 : (w - ahead + pb - 1) / pb, phi_raw = (wend - 1 + back) / pb + 1;
    const int plo = plo_raw > blo ? plo_raw : blo, phi = phi_raw < bhi ? phi_raw : bhi;
    for (int i = tid; i < sh.tpt * (phi - plo > 0 ? phi - plo : 0); i += kS1Threads) {
      const int tok = i / (phi - plo), bb = plo + i % (phi - plo);
      const Stage1Token& k = sTok[tok];
      if (!k.active) continue;
      int jlo = bb * pb - back, jhi = bb * pb + ahead;
      jlo = jlo > w ? jlo : w;
      jhi = jhi < wend - 1 ? jhi : wend - 1;
      jhi = jhi < k.nvis1 - 1 ? jhi : k.nvis1 - 1;
      float best = sBlk[tok * nb + bb - blo];
      for (int j = jlo; j <= jhi; ++j) {
        float v = sGrp[tok * kS1Tile + j - w];
        if (p.score_precision != 0) v = ToF32(FromF32<BFloat16>(v));  // score_precision 1: bf16 (RNE)
        best = best < v ? v : best;
      }
      sBlk[tok * nb + bb - blo] = best;
    }
    SyncThreads();  // sGrp and sK are rewritten next
  }
  for (int i = tid; i < sh.tpt * nb; i += kS1Threads) {
    const int tok = i / nb, bb = blo + i % nb;
    const Stage1Token& k = sTok[tok];
    if (!k.active || bb < k.init_hi || bb >= k.local_lo) continue;
    const int64_t row = (static_cast<int64_t>(b) * p.kv_num_heads + h) * sh.s_count + (k.s - sh.s0);
    StoreGlobal(sh.scores + row * sh.nblk + bb, sBlk[i]);
  }
}

// Sum of v over the CTA, returned to every thread, with one barrier: `red` holds two alternating
// sets of kS1Warps ints (a set is rewritten two calls later, after every thread passed the
// barrier of the call between, so after every read of it).
IL_DEVICE int Stage1BlockSum(int v, int* red, int& parity) {
  for (int o = 16; o > 0; o /= 2) v += ShflXor(v, o);
  int* set = red + parity * kS1Warps;
  parity ^= 1;
  if (threadIdx.x % 32 == 0) set[threadIdx.x / 32] = v;
  SyncThreads();
  int s = 0;
  for (int w = 0; w < kS1Warps; ++w) s += set[w];
  return s;
}

// Pass 3, grid (s_count, Hkv, B), block 128: the selection row of one token that outgrows the
// budget: init blocks, the `take` candidates with the largest rank keys (score, then the lower
// block index), the local blocks; sorted, -1 padded.
template <class T>
IL_GLOBAL void Stage1TopKKernel(KernelArgs<T> a, Stage1Shape sh) {
  IL_SHARED float sBlock[kStage1MaxBlocks];
  IL_SHARED int sCnt[kS1Threads];
  IL_SHARED int sRed[2 * kS1Warps];

  const CallRules& p = a.rules;
  const int s = sh.s0 + static_cast<int>(blockIdx.x), h = static_cast<int>(blockIdx.y),
            b = static_cast<int>(blockIdx.z);
  const EntryPlan e = PlanEntry(p, a.d.seqlens_k, b);
  const int pos = static_cast<int>(e.past) + s;
  if (!PlanToken(p, e, pos).needs_stage1) return;  // uniform over the CTA
  const int tid = static_cast<int>(threadIdx.x);
  int32_t* row = a.sel + ((static_cast<int64_t>(b) * p.kv_num_heads + h) * p.seq_len + s) * p.budget;
  const SelectionSpan span = SpanOf(p, pos);
  const int qb = static_cast<int>(span.qb), local_lo = static_cast<int>(span.local_lo);
  const int init_hi = static_cast<int>(span.init_hi), n_forced = static_cast<int>(span.n_forced);
  const int take = static_cast<int>(span.take);
  if (qb >= kStage1MaxBlocks) {  // refused on the host (present capacity); never reached
    for (int i = tid; i < p.budget; i += kS1Threads) StoreGlobal(row + i, int32_t{-1});
    return;
  }
  const float* scores =
      sh.scores + ((static_cast<int64_t>(b) * p.kv_num_heads + h) * sh.s_count + (s - sh.s0)) * sh.nblk;
  for (int bb = init_hi + tid; bb < local_lo; bb += kS1Threads) sBlock[bb] = LoadGlobal(scores + bb);
  SyncThreads();

  // The take-th largest rank key (keys are distinct) by bisection, first on the score's 32 bits,
  // then, only if that threshold ties more candidates than the budget has room for, on the low 13
  // bits of the complemented block index (blocks < 8192: the upper 19 are all ones). Then the
  // candidates at or above it, compacted in block order.
  const int n_cand = local_lo - init_hi;
  uint64_t thr = 0;  // take == n_cand: every candidate; take == 0: none (chosen() checks)
  int parity = 0;
  auto count_from = [&](uint64_t th) {
    int cnt = 0;
    for (int bb = init_hi + tid; bb < local_lo; bb += kS1Threads) cnt += RankKey(sBlock[bb], bb) >= th ? 1 : 0;
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
  const int per = (n_cand + kS1Threads - 1) / kS1Threads;
  const int c0 = init_hi + tid * per, c1 = c0 + per < local_lo ? c0 + per : local_lo;
  auto chosen = [&](int bb) { return take > 0 && RankKey(sBlock[bb], bb) >= thr; };
  int mine = 0;
  for (int bb = c0; bb < c1; ++bb) mine += chosen(bb) ? 1 : 0;
  sCnt[tid] = mine;
  SyncThreads();
  int at = init_hi;
  for (int i = 0; i < tid; ++i) at += sCnt[i];
  for (int bb = c0; bb < c1; ++bb)
    if (chosen(bb)) StoreGlobal(row + at++, int32_t{bb});
  const int n = n_forced + take;
  for (int i = tid; i < p.budget; i += kS1Threads) {
    if (i < init_hi)
      StoreGlobal(row + i, int32_t{i});
    else if (i >= init_hi + take && i < n)
      StoreGlobal(row + i, int32_t{local_lo + (i - init_hi - take)});
    else if (i >= n)
      StoreGlobal(row + i, int32_t{-1});
  }
}

}  // namespace infllmv2::cuda
