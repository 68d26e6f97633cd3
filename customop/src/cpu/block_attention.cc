#include "cpu/block_attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <type_traits>

#include "cpu/query_lanes.h"

namespace infllmv2::cpu {
namespace {

// x[i] <- cap * tanh(x[i] / cap) for i < count when cap > 0 (GQA's softcap of attention scores).
inline void Softcap(float cap, float* x, int64_t count) {
  if (cap > 0.0f)
    for (int64_t i = 0; i < count; ++i) x[i] = cap * std::tanh(x[i] / cap);
}

// The score and p.V microkernels on rows of the cache's type: fp32 rows as they are, fp16 rows
// converted inside the microkernels (keys a tile of 8 at a time, values as they are loaded).
inline void ScoreTile(const Microkernels& mk, const float* qt, int64_t gw, const float* k, int n, int64_t d,
                      float scale, float* out, const void* pf, int64_t pf_lines) {
  mk.scores_key_major(qt, gw, k, n, d, scale, out, pf, pf_lines);
}
inline void ScoreTile(const Microkernels& mk, const float* qt, int64_t gw, const Float16* k, int n, int64_t d,
                      float scale, float* out, const void* pf, int64_t pf_lines) {
  mk.scores_key_major_half(qt, gw, reinterpret_cast<const uint16_t*>(k), n, d, scale, out, pf, pf_lines);
}
inline void FewRowsScoreTile(const Microkernels& mk, const QueryLanes& ql, const float* k, int n, int64_t d,
                             float scale, float* out, const void* pf, int64_t pf_lines) {
  mk.scores_few_rows(ql.few_rows.data(), static_cast<int>(ql.rows), k, n, d, scale, out, ql.ws, pf, pf_lines);
}
inline void FewRowsScoreTile(const Microkernels& mk, const QueryLanes& ql, const Float16* k, int n, int64_t d,
                             float scale, float* out, const void* pf, int64_t pf_lines) {
  mk.scores_few_rows_half(ql.few_rows.data(), static_cast<int>(ql.rows), reinterpret_cast<const uint16_t*>(k), n, d,
                          scale, out, ql.ws, pf, pf_lines);
}
inline void AccumulateTile(const Microkernels& mk, float* acc, int64_t as, int rows, const float* p, int64_t pr,
                           int64_t pk, const float* v, int n, int64_t d, const void* pf, int64_t pf_lines) {
  mk.accumulate(acc, as, rows, p, pr, pk, v, n, d, pf, pf_lines);
}
inline void AccumulateTile(const Microkernels& mk, float* acc, int64_t as, int rows, const float* p, int64_t pr,
                           int64_t pk, const Float16* v, int n, int64_t d, const void* pf, int64_t pf_lines) {
  mk.accumulate_half(acc, as, rows, p, pr, pk, reinterpret_cast<const uint16_t*>(v), n, d, pf, pf_lines);
}

inline void AccumulateLanesTile(const Microkernels& mk, float* acc, const float* p, const float* v, int n, int64_t d,
                                const void* pf, int64_t pf_lines) {
  mk.accumulate_lanes(acc, p, v, n, d, pf, pf_lines);
}
inline void AccumulateLanesTile(const Microkernels& mk, float* acc, const float* p, const Float16* v, int n, int64_t d,
                                const void* pf, int64_t pf_lines) {
  mk.accumulate_lanes_half(acc, p, reinterpret_cast<const uint16_t*>(v), n, d, pf, pf_lines);
}

// Rows r < rows of row-major accumulators (stride D) to and from the lane-major layout (vector
// r / W's block of [D][W] at (r / W) * D * W; padding lanes 0).
void RowsToLanes(const float* acc, int64_t rows, int64_t D, int64_t W, float* lanes) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < D; ++i) lanes[(r / W) * D * W + i * W + r % W] = acc[r * D + i];
}
void LanesToRows(const float* lanes, int64_t rows, int64_t D, int64_t W, float* acc) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < D; ++i) acc[r * D + i] = lanes[(r / W) * D * W + i * W + r % W];
}

}  // namespace

template <typename T>
void AttendBlocks(const Call<T>& c, const Microkernels& mk, const AttendWork& w, RowStates& st, Scratch& sc) {
  const auto& a = c.a;
  const auto& p = c.p;
  const int64_t D = p.head_size, G = p.group, Bk = a.block_size, W = mk.width;
  const int64_t b = w.b, h = w.h, t0 = w.t0, n_blocks = w.n_blocks;
  const int32_t* blocks = w.blocks;
  const auto& lists = w.tokens->list;
  const auto& list_len = w.tokens->len;
  const auto& dense_lo = w.tokens->dense_lo;
  const int64_t total = c.Total(b), past = c.Past(b), tokens = w.t1 - t0, rows = tokens * G;
  const T* keys = c.d.present_key + c.CacheOffset(b, h, p.present_capacity);
  const T* vals = c.d.present_value + c.CacheOffset(b, h, p.present_capacity);
  QueryLanes ql;
  ql.Set(mk, w.q.q, G, D, tokens, w.q.token_stride, true);
  const int64_t gw = ql.gw;
  sc.km.resize(static_cast<size_t>(kBlockKeys * W));
  sc.lo.resize(static_cast<size_t>(gw));
  sc.hi.resize(static_cast<size_t>(gw));
  st.m.resize(std::max(st.m.size(), static_cast<size_t>(gw)), kNegInf);  // lanes past the rows: padding
  st.l.resize(std::max(st.l.size(), static_cast<size_t>(gw)), 0.0f);
  std::vector<int64_t> cursor(static_cast<size_t>(tokens), 0);
  std::vector<int64_t> attending;  // tokens attending to the current block (reused across blocks)
  std::vector<char> vector_used(static_cast<size_t>(gw / W));
  // A decode step's few heads (QueryLanes::FewRows): scored by the few-rows kernel and accumulated
  // as rows, both at a cost proportional to the heads rather than to the vector width.
  const bool few = !ql.few_rows.empty();
  const bool lanes = LaneMajorAccumulators(mk, D) && !few;
  if (lanes) {
    sc.acc_lanes.assign(static_cast<size_t>(gw * D), 0.0f);
    RowsToLanes(st.acc.data(), rows, D, W, sc.acc_lanes.data());
  }
  float* acc_of_vectors = lanes ? sc.acc_lanes.data() : st.acc.data();  // vector v's rows at + v * W * D
  for (int64_t bi = 0; bi < n_blocks; ++bi) {
    const int64_t blk = blocks[bi];
    const int64_t k0 = blk * Bk;
    const int64_t k_end = std::min(k0 + Bk, total);
    // Sparse lists advance their cursor to this block.
    attending.clear();
    for (int64_t t = 0; t < tokens; ++t) {
      if (past + t0 + t >= total) continue;
      if (list_len[t] >= 0) {
        while (cursor[t] < list_len[t] && lists[t][cursor[t]] < blk) ++cursor[t];
        if (cursor[t] >= list_len[t] || lists[t][cursor[t]] != blk) continue;
      }
      attending.push_back(t);
    }
    if (attending.empty()) continue;
    // The next block's key and value rows stream into L2 while this block computes (keys during
    // the first scored lane vector's scores, values during its accumulations): decode reads
    // scattered blocks, often evicted by a model's other layers, where hardware prefetch stops.
    const char* next_k = nullptr;
    const char* next_v = nullptr;
    int64_t next_lines = 0;
    if (bi + 1 < n_blocks) {
      const int64_t r0 = blocks[bi + 1] * Bk, nr = std::min(std::min(Bk, int64_t{kBlockKeys}), total - r0);
      next_k = reinterpret_cast<const char*>(keys + r0 * D);
      next_v = reinterpret_cast<const char*>(vals + r0 * D);
      next_lines = (nr * D * static_cast<int64_t>(sizeof(T)) + 63) / 64;
    }
    for (int64_t x0 = k0; x0 < k_end; x0 += kBlockKeys) {  // 64-key tiles of the block
      const int64_t x1 = std::min(x0 + kBlockKeys, k_end);
      const int n = static_cast<int>(x1 - x0);
      // Visible keys of each lane (none for rows of tokens that do not attend to this tile).
      std::fill(sc.lo.begin(), sc.lo.end(), 0);
      std::fill(sc.hi.begin(), sc.hi.end(), 0);
      std::fill(vector_used.begin(), vector_used.end(), 0);
      bool any = false;
      for (int64_t t : attending) {
        const int64_t pos = past + t0 + t;
        const int64_t lo = std::max(x0, list_len[t] < 0 ? dense_lo[t] : int64_t{0});
        const int64_t hi = std::min(x1, pos + 1);  // token-level causal mask
        if (hi <= lo) continue;
        any = true;
        std::fill(sc.lo.begin() + t * G, sc.lo.begin() + (t + 1) * G, static_cast<int32_t>(lo - x0));
        std::fill(sc.hi.begin() + t * G, sc.hi.begin() + (t + 1) * G, static_cast<int32_t>(hi - x0));
        for (int64_t v = t * G / W; v <= ((t + 1) * G - 1) / W; ++v) vector_used[v] = 1;
      }
      if (!any) continue;
      // fp16 rows: a tile that several lane vectors score (prefill) is converted to fp32 once; one
      // that a single vector scores (decode) is converted inside the microkernels as they read it.
      const float* kf = nullptr;
      const float* vf = nullptr;
      if constexpr (!std::is_same_v<T, float>) {
        if (std::count(vector_used.begin(), vector_used.end(), 1) > 1) {
          kf = RowsAsFloat(keys + x0 * D, n, D, sc.rows_k);
          vf = RowsAsFloat(vals + x0 * D, n, D, sc.rows_v);
        }
      }
      float* x = sc.km.data();
      // One lane vector at a time, scores -> softmax -> p.V, so that its score tile (64 x W) stays in L1.
      for (int64_t v = 0; v < gw / W; ++v) {
        if (!vector_used[v]) continue;
        const int64_t r0 = v * W, r_end = std::min(rows, r0 + W);
        // This vector carries the prefetch streams (K and V, pf_lines each) if it is the block's
        // first scored one; the V stream is shared out over its accumulate calls.
        const int64_t pf_lines = x0 == k0 ? next_lines : 0, v_calls = (r_end - r0 + kMaxRows - 1) / kMaxRows;
        int64_t v_left = pf_lines;
        const char* v_at = next_v;
        next_lines = 0;
        if (few)
          FewRowsScoreTile(mk, ql, keys + x0 * D, n, D, p.scale, x, next_k, pf_lines);
        else if (kf != nullptr)
          mk.scores_key_major(ql.qt.data() + r0 * D, W, kf, n, D, p.scale, x, next_k, pf_lines);
        else
          ScoreTile(mk, ql.qt.data() + r0 * D, W, keys + x0 * D, n, D, p.scale, x, next_k, pf_lines);
        // Few rows: compact scores, ws floats a key (QueryLanes::ws), W / ws keys a vector.
        const int64_t xs = few ? ql.ws : W;
        Softcap(a.softcap, x, n * xs);
        mk.softmax_update_key_major(x, xs, sc.lo.data() + r0, sc.hi.data() + r0, st.m.data() + r0, st.l.data() + r0,
                                    acc_of_vectors + r0 * D, r_end - r0, D, lanes);
        if (lanes) {  // the whole vector in one call (lanes that see no key here have p = 0)
          if (vf != nullptr)
            mk.accumulate_lanes(acc_of_vectors + r0 * D, x, vf, n, D, next_v, pf_lines);
          else
            AccumulateLanesTile(mk, acc_of_vectors + r0 * D, x, vals + x0 * D, n, D, next_v, pf_lines);
          continue;
        }
        for (int64_t r = r0; r < r_end;) {  // runs of up to kMaxRows rows that see keys here
          if (sc.hi[r] <= sc.lo[r]) {
            ++r;
            continue;
          }
          int64_t r1 = r + 1;
          while (r1 < r_end && r1 - r < kMaxRows && sc.hi[r1] > sc.lo[r1]) ++r1;
          const int64_t v_lines = std::min(v_left, (pf_lines + v_calls - 1) / v_calls);
          if (vf != nullptr)
            mk.accumulate(st.acc.data() + r * D, D, static_cast<int>(r1 - r), x + (r - r0), 1, xs, vf, n, D, v_at,
                          v_lines);
          else
            AccumulateTile(mk, st.acc.data() + r * D, D, static_cast<int>(r1 - r), x + (r - r0), 1, xs, vals + x0 * D,
                           n, D, v_at, v_lines);
          v_at += 64 * v_lines;
          v_left -= v_lines;
          r = r1;
        }
        for (; v_left > 0; --v_left, v_at += 64) __builtin_prefetch(v_at, 0, 2);  // rows that saw no keys
      }
    }
  }
  if (lanes) LanesToRows(sc.acc_lanes.data(), rows, D, W, st.acc.data());
}

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

void MergePartials(const float* m, const float* l, const float* acc, int64_t parts, int64_t G, int64_t D, float* l_out,
                   float* acc_out) {
  for (int64_t g = 0; g < G; ++g) {
    float mx = kNegInf;
    for (int64_t i = 0; i < parts; ++i) mx = std::max(mx, m[i * G + g]);
    for (int64_t i = 0; i < parts; ++i) {
      const int64_t at = i * G + g;
      if (l[at] == 0.0f) continue;
      const float w = std::exp(m[at] - mx);
      l_out[g] += l[at] * w;
      const float* pa = acc + at * D;
      for (int64_t k = 0; k < D; ++k) acc_out[g * D + k] += pa[k] * w;
    }
  }
}

namespace {

// Slice `slice` of `slices` of the blocks `u` of (b, h) = bh: its softmax state into st.
template <typename T>
void AttendDecodeSlice(const Call<T>& c, const Microkernels& mk, const QueryRows& q, int64_t bh,
                       const std::vector<int32_t>& u, int64_t slice, int64_t slices, int64_t len, int64_t dense_lo,
                       RowStates& st) {
  const int64_t Hkv = c.p.kv_num_heads;
  const int64_t n = static_cast<int64_t>(u.size());
  const int64_t lo = n * slice / slices, hi = n * (slice + 1) / slices;
  st.Reset(c.p.group, c.p.head_size);
  Scratch sc;
  TokenBlocks tb;
  tb.list = {u.data()};
  tb.len = {len < 0 ? -1 : n};
  tb.dense_lo = {dense_lo};
  AttendWork w;
  w.b = bh / Hkv;
  w.h = bh % Hkv;
  w.t0 = 0;
  w.t1 = 1;
  w.q = q;
  w.blocks = u.data() + lo;
  w.n_blocks = hi - lo;
  w.tokens = &tb;
  AttendBlocks(c, mk, w, st, sc);
}

}  // namespace

template <typename T>
void AttendDecodeWhole(const Call<T>& c, const Microkernels& mk, const QueryRows& q, int64_t bh, int64_t len,
                       int64_t dense_lo, const int32_t* list) {
  const int64_t G = c.p.group, D = c.p.head_size;
  if (len == 0) {
    const std::vector<float> l(static_cast<size_t>(G), 0.0f), acc(static_cast<size_t>(G * D), 0.0f);
    WriteRows(c, bh, 0, l.data(), acc.data());
    return;
  }
  const std::vector<int32_t> u = BlocksOf(len, dense_lo, c.Past(bh / c.p.kv_num_heads), c.a.block_size, list);
  RowStates st;
  AttendDecodeSlice(c, mk, q, bh, u, 0, 1, len, dense_lo, st);
  WriteRows(c, bh, 0, st.l.data(), st.acc.data());
}

template <typename T>
void AttendDecodeSliced(const Call<T>& c, const Microkernels& mk, const ParallelFor& pf,
                        const std::vector<QueryRows>& q_rows, const int64_t* lens, const int64_t* dense_lo,
                        const int32_t* lists) {
  constexpr int64_t kMinBlocksPerSlice = 8;  // slices of fewer blocks are merged away (not tuned)
  const auto& p = c.p;
  const int64_t Hkv = p.kv_num_heads, G = p.group, D = p.head_size, K = p.budget, BH = p.batch * Hkv;
  std::vector<std::vector<int32_t>> union_blocks(static_cast<size_t>(BH));
  std::vector<int64_t> slices(static_cast<size_t>(BH));
  const int64_t S = DecodeSlices(BH);
  for (int64_t bh = 0; bh < BH; ++bh) {
    union_blocks[bh] = BlocksOf(lens[bh], dense_lo[bh], c.Past(bh / Hkv), c.a.block_size, lists + bh * K);
    slices[bh] = std::clamp<int64_t>(static_cast<int64_t>(union_blocks[bh].size()) / kMinBlocksPerSlice, 1, S);
  }
  std::vector<float> part_m(static_cast<size_t>(BH * S * G), kNegInf);
  std::vector<float> part_l(static_cast<size_t>(BH * S * G), 0.0f);
  std::vector<float> part_acc(static_cast<size_t>(BH * S * G * D), 0.0f);
  // The last slice of a (b, h) to finish merges the partials and writes its output rows, in the
  // same phase (one hand-off to the pool fewer); its acquire of the countdown sees every slice's
  // partials. A (b, h) without blocks writes zeros from its one slice.
  std::vector<std::atomic<int64_t>> slices_left(static_cast<size_t>(BH));
  for (int64_t bh = 0; bh < BH; ++bh) slices_left[bh].store(slices[bh], std::memory_order_relaxed);
  pf(static_cast<size_t>(BH * S), [&](size_t item) {
    const int64_t bh = static_cast<int64_t>(item) / S, slice = static_cast<int64_t>(item) % S;
    if (slice >= slices[bh]) return;
    if (lens[bh] != 0) {
      RowStates st;
      AttendDecodeSlice(c, mk, q_rows[bh], bh, union_blocks[bh], slice, slices[bh], lens[bh], dense_lo[bh], st);
      std::copy(st.m.begin(), st.m.begin() + G, part_m.begin() + item * G);
      std::copy(st.l.begin(), st.l.begin() + G, part_l.begin() + item * G);
      std::copy(st.acc.begin(), st.acc.end(), part_acc.begin() + item * G * D);
    }
    if (slices_left[bh].fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    std::vector<float> l(static_cast<size_t>(G), 0.0f), acc(static_cast<size_t>(G * D), 0.0f);
    if (lens[bh] != 0) {
      const size_t at = bh * S * G;
      MergePartials(part_m.data() + at, part_l.data() + at, part_acc.data() + at * D, slices[bh], G, D, l.data(),
                    acc.data());
    }
    WriteRows(c, bh, 0, l.data(), acc.data());
  });
}

#define INFLLMV2_BLOCK_ATTENTION(T)                                                                                    \
  template void AttendBlocks<T>(const Call<T>&, const Microkernels&, const AttendWork&, RowStates&, Scratch&);         \
  template void WriteRows<T>(const Call<T>&, int64_t, int64_t, const float*, const float*);                            \
  template void AttendDecodeWhole<T>(const Call<T>&, const Microkernels&, const QueryRows&, int64_t, int64_t, int64_t, \
                                     const int32_t*);                                                                  \
  template void AttendDecodeSliced<T>(const Call<T>&, const Microkernels&, const ParallelFor&,                         \
                                      const std::vector<QueryRows>&, const int64_t*, const int64_t*, const int32_t*);
INFLLMV2_BLOCK_ATTENTION(float)
INFLLMV2_BLOCK_ATTENTION(Float16)

}  // namespace infllmv2::cpu
