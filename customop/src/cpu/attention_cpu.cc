// CPU kernel of SwitchableAttention. One tile strategy for both modes:
//   work item = (batch entry, kv head, tile of kQueryTile query tokens);
//   each query row (token x head of the kv group) keeps an online-softmax state (m, l, acc[D]);
//   the item walks the union of the blocks its rows attend to in ascending order, converts each
//   K/V block to fp32 once and updates every row that attends to it.
// Dense rows attend to every block up to their own, sparse rows to their selected blocks. Per row
// the arithmetic is identical in both modes, so a budget covering every block gives bit-identical
// results to dense mode. Nothing is proportional to S x T.
#include "cpu/attention_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/mode_select.h"

namespace infllmv2::cpu {
namespace {

constexpr int64_t kQueryTile = 16;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline float Dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t i = 0; i < n; i += 8)  // D is a multiple of 8 (CheckInputs)
    for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

template <typename T>
inline void ToFloatRow(const T* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = ToFloat(src[i]);
}

// Rotary embedding of one head vector, in place on fp32 values (GQA's convention).
inline void ApplyRotary(float* x, int64_t rotary_dim, bool interleaved, const float* cos_row,
                        const float* sin_row) {
  const int64_t half = rotary_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const int64_t i0 = interleaved ? 2 * i : i;
    const int64_t i1 = interleaved ? 2 * i + 1 : i + half;
    const float x0 = x[i0], x1 = x[i1], c = cos_row[i], s = sin_row[i];
    x[i0] = x0 * c - x1 * s;
    x[i1] = x1 * c + x0 * s;
  }
}

// Everything one call shares across work items (read-only during the parallel phases).
template <typename T>
struct Call {
  const AttentionAttributes& a;
  const AttentionParams& p;
  const AttentionData<T>& d;
  std::vector<float> q;   // rotated query, fp32 of the T-rounded value: [B, S, H, D]
  const T* comp = nullptr;  // level-1 compressed keys [B, Hkv, comp_capacity, D]
  int64_t comp_capacity = 0;

  int64_t Total(int64_t b) const { return TotalLength(d.seqlens_k, b); }
  int64_t Past(int64_t b) const { return PastLength(p, Total(b)); }
  int64_t RotaryPosition(int64_t b, int64_t s) const {  // GQA: padded positions use 1
    const int64_t pos = Past(b) + s;
    return pos < Total(b) ? pos : 1;
  }
  // Pointer to head n of token (b, s) in the query input; n counts q heads, then k, then v heads
  // when packed.
  const T* QueryInput(int64_t b, int64_t s, int64_t n) const {
    const int64_t heads = p.packed_qkv ? p.num_heads + 2 * p.kv_num_heads : p.num_heads;
    return d.query + ((b * p.seq_len + s) * heads + n) * p.head_size;
  }
  const T* KeyInput(int64_t b, int64_t s, int64_t h) const {
    if (p.packed_qkv) return QueryInput(b, s, p.num_heads + h);
    return d.key + ((b * p.seq_len + s) * p.kv_num_heads + h) * p.head_size;
  }
  const T* ValueInput(int64_t b, int64_t s, int64_t h) const {
    if (p.packed_qkv) return QueryInput(b, s, p.num_heads + p.kv_num_heads + h);
    return d.value + ((b * p.seq_len + s) * p.kv_num_heads + h) * p.head_size;
  }
  size_t CacheOffset(int64_t b, int64_t h, int64_t capacity) const {
    return static_cast<size_t>(((b * p.kv_num_heads + h) * capacity) * p.head_size);
  }
};

// Phase 1: rotate (optionally) the queries into fp32.
template <typename T>
void PrepareQueries(Call<T>& c, const ParallelFor& pf) {
  const auto& p = c.p;
  const int64_t D = p.head_size;
  c.q.resize(static_cast<size_t>(p.batch * p.seq_len * p.num_heads * D));
  pf(static_cast<size_t>(p.batch * p.seq_len), [&](size_t bs) {
    const int64_t b = static_cast<int64_t>(bs) / p.seq_len, s = static_cast<int64_t>(bs) % p.seq_len;
    std::vector<float> cs(static_cast<size_t>(p.rotary_dim));
    if (c.a.do_rotary) {
      const int64_t half = p.rotary_dim / 2, pos = c.RotaryPosition(b, s);
      ToFloatRow(c.d.cos_cache + pos * half, cs.data(), half);
      ToFloatRow(c.d.sin_cache + pos * half, cs.data() + half, half);
    }
    for (int64_t n = 0; n < p.num_heads; ++n) {
      float* dst = c.q.data() + ((b * p.seq_len + s) * p.num_heads + n) * D;
      ToFloatRow(c.QueryInput(b, s, n), dst, D);
      if (c.a.do_rotary) {
        ApplyRotary(dst, p.rotary_dim, c.a.rotary_interleaved != 0, cs.data(), cs.data() + p.rotary_dim / 2);
        for (int64_t i = 0; i < D; ++i) dst[i] = ToFloat(FromFloat<T>(dst[i]));  // as GQA stores it in T
      }
    }
  });
}

// Phase 2: past + new (rotated) keys and values into present_key/present_value.
template <typename T>
void WriteKeyValueCache(Call<T>& c, bool shared, const ParallelFor& pf) {
  const auto& p = c.p;
  const int64_t D = p.head_size, cap = p.present_capacity;
  pf(static_cast<size_t>(p.batch * p.kv_num_heads), [&](size_t bh) {
    const int64_t b = static_cast<int64_t>(bh) / p.kv_num_heads, h = static_cast<int64_t>(bh) % p.kv_num_heads;
    T* pk = c.d.present_key + c.CacheOffset(b, h, cap);
    T* pv = c.d.present_value + c.CacheOffset(b, h, cap);
    const int64_t past = c.Past(b);
    if (!shared) {
      std::memset(static_cast<void*>(pk), 0, sizeof(T) * static_cast<size_t>(cap * D));
      std::memset(static_cast<void*>(pv), 0, sizeof(T) * static_cast<size_t>(cap * D));
      if (past > 0) {
        std::memcpy(pk, c.d.past_key + c.CacheOffset(b, h, p.past_capacity), sizeof(T) * static_cast<size_t>(past * D));
        std::memcpy(pv, c.d.past_value + c.CacheOffset(b, h, p.past_capacity), sizeof(T) * static_cast<size_t>(past * D));
      }
    }
    std::vector<float> row(static_cast<size_t>(D)), cs(static_cast<size_t>(p.rotary_dim));
    for (int64_t s = 0; s < p.seq_len; ++s) {
      const int64_t at = past + s;
      std::memcpy(pv + at * D, c.ValueInput(b, s, h), sizeof(T) * static_cast<size_t>(D));
      const T* k = c.KeyInput(b, s, h);
      if (!c.a.do_rotary) {
        std::memcpy(pk + at * D, k, sizeof(T) * static_cast<size_t>(D));
        continue;
      }
      const int64_t half = p.rotary_dim / 2, pos = c.RotaryPosition(b, s);
      ToFloatRow(c.d.cos_cache + pos * half, cs.data(), half);
      ToFloatRow(c.d.sin_cache + pos * half, cs.data() + half, half);
      ToFloatRow(k, row.data(), D);
      ApplyRotary(row.data(), p.rotary_dim, c.a.rotary_interleaved != 0, cs.data(), cs.data() + half);
      for (int64_t i = 0; i < D; ++i) pk[at * D + i] = FromFloat<T>(row[i]);
    }
  });
}

// Phase 3: level-1 compressed keys of every complete window of the present keys. Windows that
// lie entirely in the past are copied from past_compressed_key when given; new ones are the fp32
// mean of the window's keys, stored in T.
template <typename T>
void WriteCompressedKeys(Call<T>& c, T* out, int64_t capacity, bool shared, const ParallelFor& pf) {
  const auto& p = c.p;
  const auto& a = c.a;
  const int64_t D = p.head_size;
  pf(static_cast<size_t>(p.batch * p.kv_num_heads), [&](size_t bh) {
    const int64_t b = static_cast<int64_t>(bh) / p.kv_num_heads, h = static_cast<int64_t>(bh) % p.kv_num_heads;
    T* dst = out + c.CacheOffset(b, h, capacity);
    const T* keys = c.d.present_key + c.CacheOffset(b, h, p.present_capacity);
    const int64_t n_total = NumWindows(c.Total(b), a.compress_kernel, a.compress_stride);
    const bool use_past = p.has_past_compressed && !p.is_first_prompt;
    const int64_t n_past = use_past ? NumWindows(c.Past(b), a.compress_kernel, a.compress_stride) : 0;
    if (!shared) {
      std::memset(static_cast<void*>(dst), 0, sizeof(T) * static_cast<size_t>(capacity * D));
      if (n_past > 0)
        std::memcpy(dst, c.d.past_compressed_key + c.CacheOffset(b, h, p.past_compressed_capacity),
                    sizeof(T) * static_cast<size_t>(n_past * D));
    }
    std::vector<float> sum(static_cast<size_t>(D));
    const float inv = 1.0f / static_cast<float>(a.compress_kernel);
    for (int64_t j = n_past; j < n_total; ++j) {
      std::fill(sum.begin(), sum.end(), 0.0f);
      for (int64_t t = j * a.compress_stride; t < j * a.compress_stride + a.compress_kernel; ++t)
        for (int64_t i = 0; i < D; ++i) sum[i] += ToFloat(keys[t * D + i]);
      for (int64_t i = 0; i < D; ++i) dst[j * D + i] = FromFloat<T>(sum[i] * inv);
    }
  });
}

// Online-softmax state of one query row.
struct RowState {
  float m = kNegInf;
  float l = 0.0f;
  float* acc = nullptr;  // [D]
};

// Updates `row` with keys [i0, i1) of a block whose fp32 keys/values start at kf/vf (row i0 of
// the block is kf + (i0 - block_start) * D).
inline void UpdateRow(RowState& row, const float* q, const float* kf, const float* vf, int64_t n, int64_t D,
                      float scale, float softcap, float* scores) {
  float mb = kNegInf;
  for (int64_t i = 0; i < n; ++i) {
    float s = Dot(q, kf + i * D, D) * scale;
    if (softcap > 0.0f) s = softcap * std::tanh(s / softcap);
    scores[i] = s;
    mb = std::max(mb, s);
  }
  if (mb > row.m) {
    const float corr = std::exp(row.m - mb);
    for (int64_t k = 0; k < D; ++k) row.acc[k] *= corr;
    row.l *= corr;
    row.m = mb;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float e = std::exp(scores[i] - row.m);
    row.l += e;
    const float* v = vf + i * D;
    for (int64_t k = 0; k < D; ++k) row.acc[k] += e * v[k];
  }
}

// Stage 1 + selection for one token (docs/op-spec.md "Sparse mode"). Writes the sorted selected
// block indices into `selected` and returns their count.
struct SelectionScratch {
  std::vector<float> k1f, k2f;   // fp32 level-1 keys [N1, D] (when T != float), level-2 keys [N2, D]
  std::vector<float> shared, s1, block_score;
  std::vector<int32_t> candidates;
};

template <typename T>
int64_t SelectBlocks(const Call<T>& c, const float* k1, int64_t n1_total, const float* k2, int64_t n2_total,
                     const float* q_group, int64_t pos, SelectionScratch& sc, int32_t* selected) {
  const auto& a = c.a;
  const auto& p = c.p;
  const int64_t D = p.head_size, Bk = a.block_size;
  const int64_t qb = pos / Bk;
  const int64_t budget = a.Budget();
  const int64_t n_blocks = qb + 1;
  if (n_blocks <= budget) {  // every past block fits the budget: no scoring needed
    for (int64_t b = 0; b < n_blocks; ++b) selected[b] = static_cast<int32_t>(b);
    return n_blocks;
  }
  const int64_t l1 = a.compress_kernel, s1 = a.compress_stride;
  const int64_t nvis1 = std::min(n1_total, NumWindows(pos + 1, l1, s1));
  const int64_t nvis2 = std::min(n2_total, NumWindows(pos + 1, 4 * l1, 4 * s1));
  sc.shared.assign(static_cast<size_t>(nvis1), 0.0f);
  sc.s1.resize(static_cast<size_t>(nvis1));
  for (int64_t g = 0; g < p.group; ++g) {
    const float* q = q_group + g * D;
    float mx = kNegInf;
    for (int64_t j = 0; j < nvis1; ++j) {
      sc.s1[j] = Dot(q, k1 + j * D, D) * p.scale;
      mx = std::max(mx, sc.s1[j]);
    }
    if (nvis1 == 0) continue;
    float lse;
    if (a.lse_approx && nvis2 > 0) {
      float m2 = kNegInf;
      for (int64_t j = 0; j < nvis2; ++j) m2 = std::max(m2, Dot(q, k2 + j * D, D) * p.scale);
      double sum = 0.0;
      for (int64_t j = 0; j < nvis2; ++j) sum += std::exp(Dot(q, k2 + j * D, D) * p.scale - m2);
      lse = m2 + static_cast<float>(std::log(sum));
    } else {  // exact normalizer over the level-1 keys (also the fallback when no level-2 key is visible)
      double sum = 0.0;
      for (int64_t j = 0; j < nvis1; ++j) sum += std::exp(sc.s1[j] - mx);
      lse = mx + static_cast<float>(std::log(sum));
    }
    for (int64_t j = 0; j < nvis1; ++j) sc.shared[j] += std::exp(sc.s1[j] - lse);
  }
  // Forced blocks: init blocks and the local window (own block included).
  const int64_t local_lo = std::max<int64_t>(0, qb - a.LocalBlocks());
  const int64_t init_hi = std::min(a.init_blocks, local_lo);  // init blocks not already local
  // Candidates: blocks in [init_hi, local_lo), scored by the max over intersecting windows.
  sc.candidates.clear();
  sc.block_score.resize(static_cast<size_t>(n_blocks));
  for (int64_t b = init_hi; b < local_lo; ++b) {
    const int64_t jlo = std::max<int64_t>(0, (b * Bk - l1 + 1 + s1 - 1) / s1);  // ceil, numerator >= -l1+1
    const int64_t jhi = std::min(nvis1 - 1, (b * Bk + Bk - 1) / s1);
    float best = kNegInf;
    for (int64_t j = std::max<int64_t>(jlo, 0); j <= jhi; ++j) best = std::max(best, sc.shared[j]);
    if (std::isnan(best)) best = kNegInf;
    sc.block_score[b] = best;
    sc.candidates.push_back(static_cast<int32_t>(b));
  }
  const int64_t n_forced = init_hi + (qb - local_lo + 1);
  const int64_t take = std::min<int64_t>(budget - n_forced, static_cast<int64_t>(sc.candidates.size()));
  auto better = [&](int32_t x, int32_t y) {
    const float sx = sc.block_score[x], sy = sc.block_score[y];
    return sx > sy || (sx == sy && x < y);
  };
  if (take < static_cast<int64_t>(sc.candidates.size()))
    std::nth_element(sc.candidates.begin(), sc.candidates.begin() + take, sc.candidates.end(), better);
  int64_t n = 0;
  for (int64_t b = 0; b < init_hi; ++b) selected[n++] = static_cast<int32_t>(b);
  std::sort(sc.candidates.begin(), sc.candidates.begin() + take);
  for (int64_t i = 0; i < take; ++i) selected[n++] = sc.candidates[i];
  for (int64_t b = local_lo; b <= qb; ++b) selected[n++] = static_cast<int32_t>(b);
  return n;
}

// Phase 4: attention for one work item (b, h, tile of query tokens).
template <typename T>
void AttendTile(const Call<T>& c, int64_t b, int64_t h, int64_t t0, int64_t t1, const T* comp,
                int64_t comp_capacity) {
  const auto& a = c.a;
  const auto& p = c.p;
  const int64_t D = p.head_size, G = p.group, Bk = a.block_size, K = p.budget;
  const int64_t total = c.Total(b), past = c.Past(b);
  const bool sparse = UseSparse(a, p.mode, total);
  const int64_t n_tok = t1 - t0;
  const T* keys = c.d.present_key + c.CacheOffset(b, h, p.present_capacity);
  const T* vals = c.d.present_value + c.CacheOffset(b, h, p.present_capacity);

  // Block list per token (sorted ascending); empty for padded rows.
  std::vector<int32_t> lists(static_cast<size_t>(n_tok * std::max<int64_t>(K, 1)));
  std::vector<int64_t> list_len(static_cast<size_t>(n_tok), 0), list_lo(static_cast<size_t>(n_tok), 0);
  SelectionScratch sc;
  const float* k1 = nullptr;
  const float* k2 = nullptr;
  int64_t n1 = 0, n2 = 0;
  if (sparse) {
    n1 = NumWindows(total, a.compress_kernel, a.compress_stride);
    n2 = NumWindows(total, 4 * a.compress_kernel, 4 * a.compress_stride);
    const T* kc = comp + c.CacheOffset(b, h, comp_capacity);
    if constexpr (std::is_same_v<T, float>) {
      k1 = kc;
    } else {
      sc.k1f.resize(static_cast<size_t>(n1 * D));
      ToFloatRow(kc, sc.k1f.data(), n1 * D);
      k1 = sc.k1f.data();
    }
    // level-2 key j = mean of the level-1 keys 4j + m * (l1 / s1), m = 0..3 (same tokens as the
    // 4*l1 window at stride 4*s1).
    sc.k2f.assign(static_cast<size_t>(n2 * D), 0.0f);
    const int64_t step = a.compress_kernel / a.compress_stride;
    for (int64_t j = 0; j < n2; ++j)
      for (int64_t m = 0; m < 4; ++m)
        for (int64_t i = 0; i < D; ++i) sc.k2f[j * D + i] += 0.25f * k1[(4 * j + m * step) * D + i];
    k2 = sc.k2f.data();
  }
  for (int64_t t = 0; t < n_tok; ++t) {
    const int64_t s = t0 + t, pos = past + s;
    int32_t* sel_out = c.d.selected_blocks ? c.d.selected_blocks + ((b * p.kv_num_heads + h) * p.seq_len + s) * K : nullptr;
    if (sel_out) std::fill(sel_out, sel_out + K, -1);
    if (pos >= total) continue;  // right padding of a ragged first prompt: output 0
    if (!sparse) {
      const int64_t lo = a.local_window_size > 0 ? std::max<int64_t>(0, pos - a.local_window_size + 1) : 0;  // ORT 1.29 GQA: the last local_window_size keys
      list_lo[t] = lo;
      list_len[t] = -1;  // dense: the range [lo / Bk, pos / Bk], expanded lazily below
      continue;
    }
    int32_t* sel = lists.data() + t * K;
    const float* qg = c.q.data() + ((b * p.seq_len + s) * p.num_heads + h * G) * D;
    list_len[t] = SelectBlocks(c, k1, n1, k2, n2, qg, pos, sc, sel);
    if (sel_out) std::copy(sel, sel + list_len[t], sel_out);
  }

  // Online softmax over the union of blocks, ascending.
  std::vector<float> acc(static_cast<size_t>(n_tok * G * D), 0.0f);
  std::vector<RowState> rows(static_cast<size_t>(n_tok * G));
  for (size_t r = 0; r < rows.size(); ++r) rows[r].acc = acc.data() + r * D;
  std::vector<float> scores(static_cast<size_t>(Bk));
  std::vector<float> kvf;
  if constexpr (!std::is_same_v<T, float>) kvf.resize(static_cast<size_t>(2 * Bk * D));
  std::vector<int64_t> cursor(static_cast<size_t>(n_tok), 0);
  auto block_at = [&](int64_t t) -> int64_t {  // next block of token t, or -1 when done
    const int64_t pos = past + t0 + t;
    if (pos >= total) return -1;
    if (list_len[t] < 0) {  // dense range
      const int64_t blk = list_lo[t] / Bk + cursor[t];
      return blk <= pos / Bk ? blk : -1;
    }
    return cursor[t] < list_len[t] ? lists[t * K + cursor[t]] : -1;
  };
  for (;;) {
    int64_t blk = -1;
    for (int64_t t = 0; t < n_tok; ++t) {
      const int64_t x = block_at(t);
      if (x >= 0 && (blk < 0 || x < blk)) blk = x;
    }
    if (blk < 0) break;
    const int64_t k0 = blk * Bk, k_end = std::min(k0 + Bk, total);
    const float* kf;
    const float* vf;
    if constexpr (std::is_same_v<T, float>) {
      kf = keys + k0 * D;
      vf = vals + k0 * D;
    } else {
      ToFloatRow(keys + k0 * D, kvf.data(), (k_end - k0) * D);
      ToFloatRow(vals + k0 * D, kvf.data() + Bk * D, (k_end - k0) * D);
      kf = kvf.data();
      vf = kvf.data() + Bk * D;
    }
    for (int64_t t = 0; t < n_tok; ++t) {
      if (block_at(t) != blk) continue;
      ++cursor[t];
      const int64_t pos = past + t0 + t;
      const int64_t lo = std::max(k0, list_len[t] < 0 ? list_lo[t] : int64_t{0});
      const int64_t hi = std::min(k_end, pos + 1);  // token-level causal mask
      if (hi <= lo) continue;
      const float* qg = c.q.data() + ((b * p.seq_len + t0 + t) * p.num_heads + h * G) * D;
      for (int64_t g = 0; g < G; ++g)
        UpdateRow(rows[t * G + g], qg + g * D, kf + (lo - k0) * D, vf + (lo - k0) * D, hi - lo, D, p.scale,
                  a.softcap, scores.data());
    }
  }
  for (int64_t t = 0; t < n_tok; ++t) {
    for (int64_t g = 0; g < G; ++g) {
      const RowState& r = rows[t * G + g];
      T* out = c.d.output + ((b * p.seq_len + t0 + t) * p.num_heads + h * G + g) * D;
      const float inv = r.l > 0.0f ? 1.0f / r.l : 0.0f;
      for (int64_t k = 0; k < D; ++k) out[k] = FromFloat<T>(r.acc[k] * inv);
    }
  }
}

}  // namespace

void SerialFor(size_t total, const std::function<void(size_t)>& fn) {
  for (size_t i = 0; i < total; ++i) fn(i);
}

template <typename T>
std::string RunAttention(const AttentionAttributes& attrs, const AttentionParams& params,
                         const AttentionData<T>& data, const ParallelFor& pf) {
  if (data.seqlens_k == nullptr || data.output == nullptr || data.present_key == nullptr ||
      data.present_value == nullptr)
    return "SwitchableAttention CPU kernel: seqlens_k, output, present_key and present_value are required";
  Call<T> c{attrs, params, data, {}, nullptr, 0};
  const bool shared_kv = params.has_past && data.present_key == data.past_key;
  if (shared_kv != (params.has_past && data.present_value == data.past_value))
    return "past_key/present_key and past_value/present_value must both share a buffer or both not";
  if (shared_kv && params.past_capacity != params.present_capacity)
    return "Shared past/present buffers need past_key dim 2 (" + std::to_string(params.past_capacity) +
           ") >= total_sequence_length (" + std::to_string(params.total_sequence_length) + ")";

  bool any_sparse = false;
  for (int64_t b = 0; b < params.batch; ++b) {
    const bool sp = UseSparse(attrs, params.mode, c.Total(b));
    any_sparse |= sp;
    if (sp && attrs.local_window_size > 0)
      return "local_window_size is only supported in dense mode (batch entry " + std::to_string(b) +
             " runs sparse); set attention_mode=1 or dense_len above the context length";
  }

  PrepareQueries(c, pf);
  WriteKeyValueCache(c, shared_kv, pf);

  std::vector<T> comp_scratch;
  if (data.present_compressed_key != nullptr || any_sparse) {
    T* comp = data.present_compressed_key;
    int64_t cap = params.present_compressed_capacity;
    bool shared_c = params.has_past_compressed && comp == data.past_compressed_key;
    if (comp == nullptr) {
      cap = NumWindows(params.total_sequence_length, attrs.compress_kernel, attrs.compress_stride);
      comp_scratch.resize(static_cast<size_t>(params.batch * params.kv_num_heads * std::max<int64_t>(cap, 1) *
                                              params.head_size));
      comp = comp_scratch.data();
      shared_c = false;
    } else if (shared_c && params.past_compressed_capacity != params.present_compressed_capacity) {
      return "Shared past/present compressed-key buffers need past_compressed_key dim 2 >= " +
             std::to_string(params.present_compressed_capacity);
    }
    WriteCompressedKeys(c, comp, cap, shared_c, pf);
    c.comp = comp;
    c.comp_capacity = cap;
  }

  const int64_t tiles = (params.seq_len + kQueryTile - 1) / kQueryTile;
  pf(static_cast<size_t>(params.batch * params.kv_num_heads * tiles), [&](size_t item) {
    const int64_t tile = static_cast<int64_t>(item) % tiles;
    const int64_t bh = static_cast<int64_t>(item) / tiles;
    const int64_t b = bh / params.kv_num_heads, h = bh % params.kv_num_heads;
    const int64_t t0 = tile * kQueryTile, t1 = std::min(params.seq_len, t0 + kQueryTile);
    AttendTile(c, b, h, t0, t1, c.comp, c.comp_capacity);
  });
  return "";
}

template std::string RunAttention<float>(const AttentionAttributes&, const AttentionParams&,
                                         const AttentionData<float>&, const ParallelFor&);
template std::string RunAttention<Float16>(const AttentionAttributes&, const AttentionParams&,
                                           const AttentionData<Float16>&, const ParallelFor&);

}  // namespace infllmv2::cpu
