// CPU kernel of SwitchableAttention. One tile strategy for both modes:
//   work item = (batch entry, kv head, tile of kQueryTile query tokens), or for one-token steps
//   (decode) a slice of that token's blocks, merged afterwards;
//   each query row (token x head of the kv group) keeps an online-softmax state (m, l, acc[D]);
//   the rows sit in vector lanes and the item walks the union of the blocks its rows attend to in
//   ascending order, scoring each 64-key tile key-major (key rows as they are, never transposed)
//   and updating every row that attends to it with the SIMD microkernels (microkernels.h).
// Dense rows attend to every block up to their own, sparse rows to their selected blocks. Per row
// the arithmetic is identical in both modes, so a budget covering every block gives bit-identical
// results to dense mode. Nothing is proportional to S x T; in prefill an item also selects the
// blocks of its own tokens first, so selection lists are per item, not per call.
#include "cpu/attention_cpu.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "common/mode_select.h"
#include "cpu/microkernels.h"

namespace infllmv2::cpu {
namespace {

constexpr int64_t kQueryTile = 16;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

template <typename T>
inline void ToFloatRow(const T* src, float* dst, int64_t n) {
  if constexpr (std::is_same_v<T, Float16>) {
    SelectMicrokernels().half_to_float(reinterpret_cast<const uint16_t*>(src), dst, n);  // F16C where available
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = ToFloat(src[i]);
  }
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

// Adds the time since the last mark to *slot when profiling.
class StageTimer {
 public:
  explicit StageTimer(KernelProfile* p) : p_(p), last_(std::chrono::steady_clock::now()) {}
  void Mark(double KernelProfile::*slot) {
    if (p_ == nullptr) return;
    const auto now = std::chrono::steady_clock::now();
    p_->*slot += std::chrono::duration<double, std::milli>(now - last_).count();
    last_ = now;
  }
  // The time since the last mark, `share` of it to `a` and the rest to `b`.
  void MarkSplit(double KernelProfile::*a, double KernelProfile::*b, double share) {
    if (p_ == nullptr) return;
    const auto now = std::chrono::steady_clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - last_).count();
    p_->*a += ms * share;
    p_->*b += ms * (1.0 - share);
    last_ = now;
  }

 private:
  KernelProfile* p_;
  std::chrono::steady_clock::time_point last_;
};

// Everything one call shares across work items (read-only during the parallel phases).
template <typename T>
struct Call {
  const AttentionAttributes& a;
  const AttentionParams& p;
  const AttentionData<T>& d;
  const T* comp = nullptr;  // level-1 compressed keys [B, Hkv, comp_capacity, D]
  int64_t comp_capacity = 0;
  KernelProfile* profile = nullptr;

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

// The fp32 query rows of tokens [s0, s0 + n) of batch entry b, the G heads of kv head h (row
// t * token_stride + g * D): the input itself for fp32 without rotary or packing, else converted
// and rotated (then rounded to T, as GQA stores it) into `buf`, by the work item that uses them
// (a whole-call fp32 copy was S x H x D floats, 0.5 GB at 64k, and its serial zero fill and
// first-touch page faults 5 % of an fp16 4k prefill).
struct QueryRows {
  const float* q;
  int64_t token_stride;
};
template <typename T>
QueryRows QueryRowsOf(const Call<T>& c, int64_t b, int64_t s0, int64_t n, int64_t h, std::vector<float>& buf) {
  const auto& p = c.p;
  const int64_t D = p.head_size, G = p.group;
  if constexpr (std::is_same_v<T, float>) {
    if (!c.a.do_rotary && !p.packed_qkv) return {c.d.query + ((b * p.seq_len + s0) * p.num_heads + h * G) * D, p.num_heads * D};
  }
  buf.resize(static_cast<size_t>(n * G * D));
  std::vector<float> cs(static_cast<size_t>(p.rotary_dim));
  const int64_t half = p.rotary_dim / 2;
  for (int64_t s = s0; s < s0 + n; ++s) {
    if (c.a.do_rotary) {
      const int64_t pos = c.RotaryPosition(b, s);
      ToFloatRow(c.d.cos_cache + pos * half, cs.data(), half);
      ToFloatRow(c.d.sin_cache + pos * half, cs.data() + half, half);
    }
    for (int64_t g = 0; g < G; ++g) {
      float* dst = buf.data() + ((s - s0) * G + g) * D;
      ToFloatRow(c.QueryInput(b, s, h * G + g), dst, D);
      if (c.a.do_rotary) {
        ApplyRotary(dst, p.rotary_dim, c.a.rotary_interleaved != 0, cs.data(), cs.data() + half);
        for (int64_t i = 0; i < D; ++i) dst[i] = ToFloat(FromFloat<T>(dst[i]));  // as GQA stores it in T
      }
    }
  }
  return {buf.data(), G * D};
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

// ---------------------------------------------------------------------------------------------
// Phase 4: selection (sparse entries) and attention. Shapes: one work item covers one (batch
// entry, kv head) and either a tile of kQueryTile tokens (prefill) or, for single-token steps,
// a slice of the blocks or windows (decode), so that decode also uses every thread.

constexpr int64_t kDecodeSlices = 8;   // decode work split; measured (2 threads, G=16, D=128): 2 slices 1.43 ms, 8 slices 0.89 ms, 16 slices 0.91 ms at 128k
constexpr int64_t kMinBlocksPerSlice = 8;  // slices of fewer blocks are merged away (not tuned)

// Fp32 view of a run of cache rows: the rows themselves for fp32, a converted copy otherwise.
template <typename T>
const float* RowsAsFloat(const T* rows, int64_t count, int64_t D, std::vector<float>& buffer) {
  if constexpr (std::is_same_v<T, float>) {
    return rows;
  } else {
    buffer.resize(static_cast<size_t>(count * D));
    ToFloatRow(rows, buffer.data(), count * D);
    return buffer.data();
  }
}

// Level-1 compressed keys (fp32) of one (batch entry, kv head), and how many level-1/level-2
// windows exist. Level-2 scores are derived from level-1 scores: the level-2 key j is the mean of
// the level-1 keys 4j + m * (l1 / s1), m = 0..3 (the same tokens), and a dot product is linear.
// fp16 models keep them as fp16: prefill scores them once per token, so they are converted to
// fp32 once per call (k1); a decode step scores them once, so the scoring microkernel converts
// them a tile of keys at a time (k1_half; a full fp32 copy was 0.13 ms of a 0.72 ms 128k step, on
// one thread).
struct CompressedKeys {
  const float* k1 = nullptr;          // [n1, D] fp32, or null when k1_half is set
  const uint16_t* k1_half = nullptr;  // [n1, D] IEEE half bits (fp16 models, decode)
  int64_t n1 = 0, n2 = 0;
  std::vector<float> k1_buffer;
};

template <typename T>
void BuildCompressedKeys(const Call<T>& c, int64_t b, int64_t h, bool convert_all, CompressedKeys& ck) {
  const auto& a = c.a;
  const int64_t D = c.p.head_size, total = c.Total(b);
  ck.n1 = NumWindows(total, a.compress_kernel, a.compress_stride);
  ck.n2 = NumWindows(total, 4 * a.compress_kernel, 4 * a.compress_stride);
  const T* rows = c.comp + c.CacheOffset(b, h, c.comp_capacity);
  if constexpr (std::is_same_v<T, Float16>) {
    if (!convert_all) {
      ck.k1_half = reinterpret_cast<const uint16_t*>(rows);
      return;
    }
  }
  ck.k1 = RowsAsFloat(rows, ck.n1, D, ck.k1_buffer);
}

// Per-thread scratch of the attention loop.
struct Scratch {
  std::vector<float> rows_k, rows_v;  // fp32 copies of a tile's key/value rows (fp16, prefill)
  std::vector<float> km;              // key-major scores [64][width] of one lane vector
  std::vector<int32_t> lo, hi;        // visible keys [lo, hi) of each lane in the current tile
};

// Query rows in vector lanes, for the key-major kernels (microkernels.h): row r = t * G + g is head
// g of token t; key rows are used as they are, never transposed; score tiles are [key][lanes].
// Stage 1 puts the G heads of one token in lanes, attention the rows of all tokens of its item.
// Measured at 128k decode (2 threads, G = 16, D = 128, stage bench): selection 0.49 ms with
// 4-row x 64-key tiles over transposed key tiles, 0.28-0.30 ms key-major; the scoring pass now
// streams the 4.2 MB of fp32 level-1 keys at about the machine's copy bandwidth. Attention, same
// setting, 8 interleaved runs: dense prefill 4k median 359 -> 354 ms (best 354 -> 345), sparse
// prefill 32k 8.8 -> 8.4 s; with G = 4 (4 tokens per vector) dense prefill 4k 94 -> 89 ms.
struct QueryLanes {
  int64_t gw = 0;          // rows rounded up to the vector width
  // Row r, dim i at ((r / stride) * D + i) * stride + r % stride, stride = gw, or the vector width
  // when blocked; padding rows 0.
  std::vector<float> qt;
  std::vector<float> lse;  // stage 1: [gw] normalizers, +inf on padding heads (they add nothing)
  // Heads g < G of `tokens` tokens, head g of token t at q + t * token_stride + g * D. Blocked: one
  // [D][width] block per lane vector, so that a vector's query and score rows are contiguous (with
  // [D][gw] rows of gw = 256 lanes, 1 KB apart, fell into 4 of L1's 64 sets).
  static int64_t LanesFor(const Microkernels& mk, int64_t rows) { return (rows + mk.width - 1) / mk.width * mk.width; }
  void Set(const Microkernels& mk, const float* q, int64_t G, int64_t D, int64_t tokens = 1,
           int64_t token_stride = 0, bool blocked = false) {
    gw = LanesFor(mk, tokens * G);
    const int64_t stride = blocked ? mk.width : gw;
    qt.assign(static_cast<size_t>(D * gw), 0.0f);
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t g = 0; g < G; ++g) {
        const int64_t r = t * G + g;
        float* dst = qt.data() + (r / stride) * D * stride + r % stride;
        for (int64_t i = 0; i < D; ++i) dst[i * stride] = q[t * token_stride + g * D + i];
      }
    lse.assign(static_cast<size_t>(gw), std::numeric_limits<float>::infinity());
  }
};

// Which level normalizes stage 1 for a token at `pos` (level 2 unless exact or none visible).
struct Stage1Levels {
  bool use_k2;
  int64_t nvis1, nvis2;
};
inline Stage1Levels LevelsFor(const AttentionAttributes& a, const CompressedKeys& ck, int64_t pos) {
  const int64_t nvis1 = std::min(ck.n1, NumWindows(pos + 1, a.compress_kernel, a.compress_stride));
  const int64_t nvis2 = std::min(ck.n2, NumWindows(pos + 1, 4 * a.compress_kernel, 4 * a.compress_stride));
  return {a.lse_approx != 0 && nvis2 > 0, nvis1, nvis2};
}

// Step 1: raw scores scale * q_g . K1_j of windows [j0, j1) into s1 rows j0..j1-1.
inline void Stage1Scores(const Microkernels& mk, const QueryLanes& sq, const CompressedKeys& ck, int64_t j0, int64_t j1,
                         int64_t D, float scale, float* s1) {
  if (j1 <= j0) return;
  // The rows 64 ahead stream into L2 as the scoring proceeds (the same pace as it reads them):
  // 128k decode selection with every cache evicted 0.48 -> 0.32 ms (stage bench, 6 runs),
  // warm unchanged, prefill 16k selection within noise (+2 %).
  constexpr int64_t kAhead = 64;
  const int64_t pf_rows = std::max<int64_t>(0, j1 - j0 - kAhead);
  if (ck.k1 != nullptr) {
    mk.scores_key_major(sq.qt.data(), sq.gw, ck.k1 + j0 * D, static_cast<int>(j1 - j0), D, scale, s1 + j0 * sq.gw,
                        pf_rows > 0 ? ck.k1 + (j0 + kAhead) * D : nullptr, pf_rows * D * 4 / 64);
    return;
  }
  // fp16 rows: converted a tile of keys at a time inside the microkernel.
  mk.scores_key_major_half(sq.qt.data(), sq.gw, ck.k1_half + j0 * D, static_cast<int>(j1 - j0), D, scale,
                           s1 + j0 * sq.gw, pf_rows > 0 ? ck.k1_half + (j0 + kAhead) * D : nullptr, pf_rows * D * 2 / 64);
}

// Step 2: the normalizer of each head: log-sum-exp over the visible level-2 scores (mean of four
// level-1 scores) or, exact, over the visible level-1 scores; +inf when nothing is visible, so
// that the head adds nothing. Taken from partials (max, sum of exps) of disjoint row ranges of
// those scores: decode computes one per slice inside the parallel scoring phase (the serial
// two-pass normalizer was 15 us of a 128k step), prefill one over all rows.
struct LseRows {
  int64_t count;  // normalizer rows: level-2 windows, or level-1 ones when exact
  int step;       // level-1 rows between the four parts of a level-2 row; 0 when exact
};
inline LseRows LseRowsOf(const AttentionAttributes& a, const Stage1Levels& lv) {
  if (!lv.use_k2) return {lv.nvis1, 0};
  return {lv.nvis2, static_cast<int>(a.compress_kernel / a.compress_stride)};
}

// Normalizer rows owned by the level-1 rows [j0, j1) of a slice: [begin, end), of which [begin,
// ready) read only level-1 rows below j1 (so the slice can add them once it has scored); the rest
// read the next slice's rows and are added after the scoring phase.
struct LseSlice {
  int64_t begin, ready, end;
};
inline LseSlice LseSliceOf(const LseRows& r, int64_t j0, int64_t j1) {
  if (r.step == 0) {
    const int64_t b = std::min(j0, r.count), e = std::min(j1, r.count);
    return {b, e, e};
  }
  const int64_t b = std::min((j0 + 3) / 4, r.count), e = std::min((j1 + 3) / 4, r.count);
  const int64_t last = j1 - 1 - 3 * r.step;  // level-2 row J reads level-1 rows up to 4J + 3 step
  return {b, std::clamp<int64_t>(last >= 0 ? last / 4 + 1 : 0, b, e), e};
}

// Merges `parts` partials (m, l; gw floats each, in order) into sq.lse; padding heads get +inf.
inline void MergeLse(const float* m, const float* l, int64_t parts, int64_t G, QueryLanes& sq) {
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

// Step 3: shared[j] = sum_g exp(s1[j][g] - lse[g]) for windows [j0, j1).
inline void Stage1Shared(const Microkernels& mk, const QueryLanes& sq, const float* s1, int64_t j0, int64_t j1,
                         float* shared) {
  if (j1 > j0) mk.stage1_shared(s1 + j0 * sq.gw, sq.gw, j1 - j0, sq.lse.data(), shared + j0);
}

// A block's rank as one integer: the score's bits mapped to an unsigned order (NaN counts as -inf,
// -0 as +0) above the complemented block index, so a larger key is a higher score or, on a tie,
// a lower index. Top-k is then nth_element on plain integers (with an index comparator reading
// the scores the 128k decode's pooling + top-k took 12.2 us, with the keys 11.5).
inline uint64_t RankKey(float score, int64_t block) {
  if (std::isnan(score)) score = kNegInf;
  uint32_t bits;
  std::memcpy(&bits, &score, sizeof bits);
  bits = score == 0.0f ? 0x80000000u : (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (uint64_t{bits} << 32) | (~static_cast<uint32_t>(block));
}
inline int32_t BlockOfKey(uint64_t key) { return static_cast<int32_t>(~static_cast<uint32_t>(key)); }

// Block scores from the shared window scores, then init + local + top-k (ties: lower index).
// Writes the sorted selection into `selected` and returns its length.
int64_t SelectFromScores(const AttentionAttributes& a, int64_t pos, const float* shared, int64_t nvis1,
                         std::vector<uint64_t>& candidates, int32_t* selected) {
  const int64_t Bk = a.block_size, l1 = a.compress_kernel, s1 = a.compress_stride;
  const int64_t qb = pos / Bk, budget = a.Budget();
  const int64_t local_lo = std::max<int64_t>(0, qb - a.LocalBlocks());
  const int64_t init_hi = std::min(a.init_blocks, local_lo);  // init blocks not already local
  // Windows j of block b: from the first reaching it, ceil((b Bk - l1 + 1) / s1), to the last
  // starting in it, floor((b Bk + Bk - 1) / s1); Bk is a multiple of s1, so both are b Bk / s1 plus
  // a constant (two divisions per block cost 2.6 of this function's 11.5 us at 128k decode).
  const int64_t per_block = Bk / s1, back = (l1 - 1) / s1, ahead = (Bk - 1) / s1;
  candidates.clear();
  for (int64_t b = init_hi; b < local_lo; ++b) {
    const int64_t jlo = std::max<int64_t>(0, b * per_block - back);
    const int64_t jhi = std::min(nvis1 - 1, b * per_block + ahead);
    float best = kNegInf;
    for (int64_t j = jlo; j <= jhi; ++j) best = std::max(best, shared[j]);
    candidates.push_back(RankKey(best, b));
  }
  const int64_t n_forced = init_hi + (qb - local_lo + 1);
  const int64_t take = std::min<int64_t>(budget - n_forced, static_cast<int64_t>(candidates.size()));
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

// x[i] <- cap * tanh(x[i] / cap) for i < count when cap > 0 (GQA's softcap of attention scores).
inline void Softcap(float cap, float* x, int64_t count) {
  if (cap > 0.0f)
    for (int64_t i = 0; i < count; ++i) x[i] = cap * std::tanh(x[i] / cap);
}

// Online-softmax state of a set of query rows (token x head), D floats of accumulator each.
struct RowStates {
  std::vector<float> m, l, acc;
  void Reset(int64_t rows, int64_t D) {
    m.assign(static_cast<size_t>(rows), kNegInf);
    l.assign(static_cast<size_t>(rows), 0.0f);
    acc.assign(static_cast<size_t>(rows * D), 0.0f);
  }
};

// Attention of tokens [t0, t1) of (b, h) over the blocks `blocks` (ascending). The rows r = t * G + g
// of the tokens' heads live in vector lanes (QueryLanes); each 64-key tile is scored, key-major,
// for the lane vectors holding a row that attends to it, and accumulated for those tokens' rows.
// lists/list_len/dense_lo give each token's sorted block list (or its dense range); rows skip
// blocks not in their list.
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
inline void AccumulateTile(const Microkernels& mk, float* acc, int64_t as, int rows, const float* p, int64_t pr,
                           int64_t pk, const float* v, int n, int64_t d, const void* pf, int64_t pf_lines) {
  mk.accumulate(acc, as, rows, p, pr, pk, v, n, d, pf, pf_lines);
}
inline void AccumulateTile(const Microkernels& mk, float* acc, int64_t as, int rows, const float* p, int64_t pr,
                           int64_t pk, const Float16* v, int n, int64_t d, const void* pf, int64_t pf_lines) {
  mk.accumulate_half(acc, as, rows, p, pr, pk, reinterpret_cast<const uint16_t*>(v), n, d, pf, pf_lines);
}

template <typename T>
void AttendBlocks(const Call<T>& c, const Microkernels& mk, int64_t b, int64_t h, int64_t t0, int64_t t1,
                  QueryRows qr, const int32_t* blocks, int64_t n_blocks, const std::vector<const int32_t*>& lists,
                  const std::vector<int64_t>& list_len, const std::vector<int64_t>& dense_lo, RowStates& st,
                  Scratch& sc) {
  const auto& a = c.a;
  const auto& p = c.p;
  const int64_t D = p.head_size, G = p.group, Bk = a.block_size, W = mk.width;
  const int64_t total = c.Total(b), past = c.Past(b), tokens = t1 - t0, rows = tokens * G;
  const T* keys = c.d.present_key + c.CacheOffset(b, h, p.present_capacity);
  const T* vals = c.d.present_value + c.CacheOffset(b, h, p.present_capacity);
  QueryLanes ql;
  ql.Set(mk, qr.q, G, D, tokens, qr.token_stride, true);
  const int64_t gw = ql.gw;
  sc.km.resize(static_cast<size_t>(kBlockKeys * W));
  sc.lo.resize(static_cast<size_t>(gw));
  sc.hi.resize(static_cast<size_t>(gw));
  st.m.resize(std::max(st.m.size(), static_cast<size_t>(gw)), kNegInf);  // lanes past the rows: padding
  st.l.resize(std::max(st.l.size(), static_cast<size_t>(gw)), 0.0f);
  std::vector<int64_t> cursor(static_cast<size_t>(tokens), 0);
  std::vector<int64_t> attending;  // tokens attending to the current block (reused across blocks)
  std::vector<char> vector_used(static_cast<size_t>(gw / W));
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
    // The next block's key and value rows stream into L2 while this block computes: the keys
    // during the first scored lane vector's scores, the values during its accumulations (one
    // prefetch per inner step of the microkernels). Decode reads its blocks from DRAM whenever a
    // model's other layers evicted them, and the hardware prefetchers stop at every 4 KB page of
    // the scattered blocks. Stage bench, 6-8 interleaved runs each, against a burst of prefetches
    // for the blocks ahead at each block's start (which itself had not helped cold steps): decode
    // attention with every cache evicted (--cold) 128k median 0.56 -> 0.42 ms, 32k 0.56 -> 0.50
    // ms (0.71 -> 0.49 in another series); warm 128k 0.33 -> 0.29 ms; 8k with 2 KV heads 0.66 ->
    // 0.58 ms; dense prefill 4k unchanged (362 ms).
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
      // that a single vector scores (decode) is converted inside the microkernels as they read it
      // (stage bench, fp16 128k decode, two series of 4-5 interleaved runs: attention 1.08-1.17x
      // fp32's time with the copy, 0.9-1.14x without; fp16 dense prefill 4k was slower without the
      // copy, every vector converting the tile again, and is unchanged with this rule).
      const float* kf = nullptr;
      const float* vf = nullptr;
      if constexpr (!std::is_same_v<T, float>) {
        if (std::count(vector_used.begin(), vector_used.end(), 1) > 1) {
          kf = RowsAsFloat(keys + x0 * D, n, D, sc.rows_k);
          vf = RowsAsFloat(vals + x0 * D, n, D, sc.rows_v);
        }
      }
      float* x = sc.km.data();
      // One lane vector at a time, scores -> softmax -> p.V, so that its score tile x (64 x W)
      // stays in L1 (scoring all vectors first, a 64 KB tile for 16 tokens x 16 heads, was slower).
      for (int64_t v = 0; v < gw / W; ++v) {
        if (!vector_used[v]) continue;
        const int64_t r0 = v * W, r_end = std::min(rows, r0 + W);
        // This vector carries the prefetch streams (K and V, pf_lines each) if it is the block's
        // first scored one; the V stream is shared out over its accumulate calls.
        const int64_t pf_lines = x0 == k0 ? next_lines : 0, v_calls = (r_end - r0 + kMaxRows - 1) / kMaxRows;
        int64_t v_left = pf_lines;
        const char* v_at = next_v;
        next_lines = 0;
        if (kf != nullptr)
          mk.scores_key_major(ql.qt.data() + r0 * D, W, kf, n, D, p.scale, x, next_k, pf_lines);
        else
          ScoreTile(mk, ql.qt.data() + r0 * D, W, keys + x0 * D, n, D, p.scale, x, next_k, pf_lines);
        Softcap(a.softcap, x, n * W);
        mk.softmax_update_key_major(x, W, sc.lo.data() + r0, sc.hi.data() + r0, st.m.data() + r0,
                                    st.l.data() + r0, st.acc.data() + r0 * D, r_end - r0, D);
        for (int64_t r = r0; r < r_end;) {  // runs of up to kMaxRows rows that see keys here
          if (sc.hi[r] <= sc.lo[r]) {
            ++r;
            continue;
          }
          int64_t r1 = r + 1;
          while (r1 < r_end && r1 - r < kMaxRows && sc.hi[r1] > sc.lo[r1]) ++r1;
          const int64_t v_lines = std::min(v_left, (pf_lines + v_calls - 1) / v_calls);
          if (vf != nullptr)
            mk.accumulate(st.acc.data() + r * D, D, static_cast<int>(r1 - r), x + (r - r0), 1, W, vf, n, D, v_at, v_lines);
          else
            AccumulateTile(mk, st.acc.data() + r * D, D, static_cast<int>(r1 - r), x + (r - r0), 1, W, vals + x0 * D, n,
                           D, v_at, v_lines);
          v_at += 64 * v_lines;
          v_left -= v_lines;
          r = r1;
        }
        for (; v_left > 0; --v_left, v_at += 64) __builtin_prefetch(v_at, 0, 2);  // rows that saw no keys
      }
    }
  }
}

// How one token attends before stage 1: a dense range (len -1, from dense_lo), every block
// (they fit the budget; the list is written), a list stage 1 must fill, or nothing (padding).
struct TokenPlan {
  int64_t len = 0;
  int64_t dense_lo = 0;
  bool needs_stage1 = false;
};

// Whether a sparse token at `pos` has more blocks in its past than the budget (else it takes them all).
inline bool OutgrowsBudget(const AttentionAttributes& a, const AttentionParams& p, int64_t pos) {
  return pos / a.block_size + 1 > p.budget;
}

template <typename T>
TokenPlan PlanToken(const Call<T>& c, bool sparse, int64_t b, int64_t s, int32_t* list) {
  const auto& a = c.a;
  const int64_t pos = c.Past(b) + s;
  TokenPlan tp;
  if (pos >= c.Total(b)) return tp;
  if (!sparse) {
    tp.len = -1;
    tp.dense_lo = a.local_window_size > 0 ? std::max<int64_t>(0, pos - a.local_window_size + 1) : 0;
  } else if (!OutgrowsBudget(a, c.p, pos)) {
    tp.len = pos / a.block_size + 1;
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
    if constexpr (std::is_same_v<T, Float16>) {  // F16C/AVX-512 conversion (scalar rounding was 2 % of an fp16 prefill)
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
  if (c.d.selected_blocks == nullptr) return;
  const int64_t K = c.p.budget;
  int32_t* out = c.d.selected_blocks + (bh * c.p.seq_len + s) * K;
  const int64_t n = std::max<int64_t>(len, 0);
  std::copy(list, list + n, out);
  std::fill(out + n, out + K, -1);
}

// Stage 1 and selection of one prefill token at `pos`: scores of every visible level-1 window,
// per-head normalizers, group sum, top-k. Returns the list length.
struct TokenStage1Scratch {
  QueryLanes sq;
  std::vector<float> s1, shared, m, l;
  std::vector<uint64_t> candidates;
};
template <typename T>
int64_t SelectToken(const Call<T>& c, const Microkernels& mk, const CompressedKeys& ck, const float* q, int64_t pos,
                    TokenStage1Scratch& x, int32_t* list) {
  const auto& a = c.a;
  const int64_t G = c.p.group, D = c.p.head_size;
  const auto lv = LevelsFor(a, ck, pos);
  x.sq.Set(mk, q, G, D);
  x.s1.resize(static_cast<size_t>(x.sq.gw * lv.nvis1));
  Stage1Scores(mk, x.sq, ck, 0, lv.nvis1, D, c.p.scale, x.s1.data());
  const LseRows rows = LseRowsOf(a, lv);
  x.m.resize(static_cast<size_t>(x.sq.gw));
  x.l.resize(static_cast<size_t>(x.sq.gw));
  mk.stage1_lse_partial(x.s1.data(), x.sq.gw, 0, rows.count, rows.step, x.m.data(), x.l.data());
  MergeLse(x.m.data(), x.l.data(), 1, G, x.sq);
  x.shared.resize(static_cast<size_t>(lv.nvis1));
  Stage1Shared(mk, x.sq, x.s1.data(), 0, lv.nvis1, x.shared.data());
  return SelectFromScores(a, pos, x.shared.data(), lv.nvis1, x.candidates, list);
}

template <typename T>
void RunSelectionAndAttention(const Call<T>& c, const ParallelFor& pf) {
  const auto& a = c.a;
  const auto& p = c.p;
  const Microkernels& mk = SelectMicrokernels();
  const int64_t Hkv = p.kv_num_heads, S = p.seq_len, G = p.group, D = p.head_size, K = p.budget;
  const int64_t BH = p.batch * Hkv, Bk = a.block_size;
  std::vector<char> sparse(static_cast<size_t>(p.batch));
  for (int64_t b = 0; b < p.batch; ++b) sparse[b] = UseSparse(a, p.mode, c.Total(b));

  // Level-1 compressed keys (fp32) of every (b, h) with a token whose past outgrows the budget.
  std::vector<CompressedKeys> ck(static_cast<size_t>(BH));
  std::vector<char> bh_needs(static_cast<size_t>(BH), 0);
  for (int64_t bh = 0; bh < BH; ++bh) {
    const int64_t b = bh / Hkv;
    for (int64_t s = 0; s < S && sparse[b] && !bh_needs[bh]; ++s) {
      const int64_t pos = c.Past(b) + s;
      bh_needs[bh] = pos < c.Total(b) && OutgrowsBudget(a, p, pos);
    }
  }
  StageTimer timer(c.profile);
  pf(static_cast<size_t>(BH), [&](size_t bh) {
    if (bh_needs[bh]) BuildCompressedKeys(c, static_cast<int64_t>(bh) / Hkv, static_cast<int64_t>(bh) % Hkv, S > 1, ck[bh]);
  });
  timer.Mark(&KernelProfile::compress_ms);

  if (S > 1) {
    // Prefill: one item per (bh, tile of kQueryTile tokens) selects for its tokens, then attends
    // with them, so that selection lists live per item (O(threads x tile x budget) scratch, not
    // O(S x budget): 25 MB at 64k before). The stage split is the phase's wall time divided in
    // proportion to the time the items spent in each part.
    const int64_t tiles = (S + kQueryTile - 1) / kQueryTile;
    std::vector<double> part_ms(c.profile != nullptr ? static_cast<size_t>(2 * BH * tiles) : 0, 0.0);
    pf(static_cast<size_t>(BH * tiles), [&](size_t item) {
      const auto start = std::chrono::steady_clock::now();
      const int64_t bh = static_cast<int64_t>(item) / tiles, tile = static_cast<int64_t>(item) % tiles;
      const int64_t b = bh / Hkv, t0 = tile * kQueryTile, t1 = std::min(S, t0 + kQueryTile), n = t1 - t0;
      std::vector<int32_t> lists(static_cast<size_t>(n * K));
      std::vector<int64_t> lens(static_cast<size_t>(n)), lo_tok(static_cast<size_t>(n));
      TokenStage1Scratch x;
      std::vector<float> q_buf;
      const QueryRows qr = QueryRowsOf(c, b, t0, n, bh % Hkv, q_buf);
      for (int64_t s = t0; s < t1; ++s) {
        int32_t* list = lists.data() + (s - t0) * K;
        const TokenPlan tp = PlanToken(c, sparse[b], b, s, list);
        lens[s - t0] = tp.needs_stage1 ? SelectToken(c, mk, ck[bh], qr.q + (s - t0) * qr.token_stride, c.Past(b) + s, x, list)
                                       : tp.len;
        lo_tok[s - t0] = tp.dense_lo;
        WriteSelection(c, bh, s, lens[s - t0], list);
      }
      const auto selected = std::chrono::steady_clock::now();
      std::vector<const int32_t*> list_ptr;
      std::vector<char> used;
      for (int64_t s = t0; s < t1; ++s) {
        const int32_t* list = lists.data() + (s - t0) * K;
        list_ptr.push_back(list);
        for (int32_t blk : BlocksOf(lens[s - t0], lo_tok[s - t0], c.Past(b) + s, Bk, list)) {
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
      AttendBlocks(c, mk, b, bh % Hkv, t0, t1, qr, u.data(), static_cast<int64_t>(u.size()), list_ptr, lens, lo_tok,
                   st, sc);
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
    const TokenPlan tp = PlanToken(c, sparse[bh / Hkv], bh / Hkv, 0, lists.data() + bh * K);
    lens[bh] = tp.len;
    dense_lo[bh] = tp.dense_lo;
    needs_stage1[bh] = tp.needs_stage1;
  }
  // Stage 1: raw scores and shared scores in slices of the windows, in parallel; the normalizers'
  // partials with the scores, merged in between. s1 is written in full before it is read: no zero
  // fill (it was 15 us of a 128k decode step).
  std::vector<std::unique_ptr<float[]>> s1(static_cast<size_t>(BH));
  std::vector<std::vector<float>> shared(static_cast<size_t>(BH));
  std::vector<QueryLanes> sq(static_cast<size_t>(BH));
  std::vector<Stage1Levels> levels(static_cast<size_t>(BH), Stage1Levels{false, 0, 0});
  for (int64_t bh = 0; bh < BH; ++bh) {
    if (!needs_stage1[bh]) continue;
    levels[bh] = LevelsFor(a, ck[bh], c.Past(bh / Hkv));
    sq[bh].Set(mk, q_rows[bh].q, G, D);
    s1[bh].reset(new float[static_cast<size_t>(sq[bh].gw * std::max<int64_t>(ck[bh].n1, 1))]);
    shared[bh].resize(static_cast<size_t>(ck[bh].n1));
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
    Stage1Scores(mk, sq[bh], ck[bh], j0, j1, D, p.scale, s1[bh].get());
    const LseRows rows = LseRowsOf(a, levels[bh]);
    const LseSlice ls = LseSliceOf(rows, j0, j1);
    mk.stage1_lse_partial(s1[bh].get(), gw, ls.begin, ls.ready, rows.step, lse_m.data() + lse_at(bh, 2 * slice),
                          lse_l.data() + lse_at(bh, 2 * slice));
  });
  phases.Mark(&KernelProfile::score_ms);
  for (int64_t bh = 0; bh < BH; ++bh) {
    if (!needs_stage1[bh]) continue;
    const LseRows rows = LseRowsOf(a, levels[bh]);
    for (int64_t slice = 0; slice < kDecodeSlices; ++slice) {
      const auto [j0, j1] = slice_range(levels[bh].nvis1, slice);
      const LseSlice ls = LseSliceOf(rows, j0, j1);
      mk.stage1_lse_partial(s1[bh].get(), gw, ls.ready, ls.end, rows.step, lse_m.data() + lse_at(bh, 2 * slice + 1),
                            lse_l.data() + lse_at(bh, 2 * slice + 1));
    }
    MergeLse(lse_m.data() + lse_at(bh, 0), lse_l.data() + lse_at(bh, 0), 2 * kDecodeSlices, G, sq[bh]);
  }
  phases.Mark(&KernelProfile::lse_ms);
  pf(static_cast<size_t>(BH * kDecodeSlices), [&](size_t item) {
    const int64_t bh = static_cast<int64_t>(item) / kDecodeSlices, slice = static_cast<int64_t>(item) % kDecodeSlices;
    if (!needs_stage1[bh]) return;
    const auto [j0, j1] = slice_range(levels[bh].nvis1, slice);
    Stage1Shared(mk, sq[bh], s1[bh].get(), j0, j1, shared[bh].data());
  });
  phases.Mark(&KernelProfile::group_sum_ms);
  pf(static_cast<size_t>(BH), [&](size_t bh) {
    if (!needs_stage1[bh]) return;
    std::vector<uint64_t> candidates;
    const int64_t pos = c.Past(static_cast<int64_t>(bh) / Hkv);
    lens[bh] = SelectFromScores(a, pos, shared[bh].data(), levels[bh].nvis1, candidates,
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
    std::vector<const int32_t*> list_ptr{u.data()};
    std::vector<int64_t> list_len{lens[bh] < 0 ? -1 : n}, lo_tok{dense_lo[bh]};
    AttendBlocks(c, mk, bh / Hkv, bh % Hkv, 0, 1, q_rows[bh], u.data() + lo, hi - lo, list_ptr, list_len, lo_tok, st,
                 sc);
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

template <typename T>
std::string RunAttention(const AttentionAttributes& attrs, const AttentionParams& params,
                         const AttentionData<T>& data, const ParallelFor& pf, KernelProfile* profile) {
  if (data.seqlens_k == nullptr || data.output == nullptr || data.present_key == nullptr ||
      data.present_value == nullptr)
    return "SwitchableAttention CPU kernel: seqlens_k, output, present_key and present_value are required";
  Call<T> c{attrs, params, data, nullptr, 0, profile};
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

  StageTimer timer(profile);
  WriteKeyValueCache(c, shared_kv, pf);
  timer.Mark(&KernelProfile::prepare_ms);

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
  timer.Mark(&KernelProfile::compress_ms);

  RunSelectionAndAttention(c, pf);
  return "";
}

template std::string RunAttention<float>(const AttentionAttributes&, const AttentionParams&,
                                         const AttentionData<float>&, const ParallelFor&, KernelProfile*);
template std::string RunAttention<Float16>(const AttentionAttributes&, const AttentionParams&,
                                           const AttentionData<Float16>&, const ParallelFor&, KernelProfile*);

}  // namespace infllmv2::cpu
