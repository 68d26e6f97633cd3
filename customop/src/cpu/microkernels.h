// SIMD microkernels of the CPU attention kernel: plain functions on raw fp32 pointers, compiled
// once per ISA level from microkernels_impl.inc and chosen at run time: on x86 SSE2 baseline,
// AVX2+FMA, AVX-512; on AArch64 neon and portable; elsewhere portable (plain C++). No STL and no
// shared inline code inside the ISA-specific translation units, so no AVX instruction can leak into
// code that runs on an older CPU.
#pragma once

#include <cstdint>

namespace infllmv2::cpu {

constexpr int kBlockKeys = 64;  // keys per tile
constexpr int kMaxRows = 4;     // rows per accumulate call

// One layout for every score: key-major. Query rows (token x head) live in vector lanes: qt[i * gw
// + r] is the transposed query of row r (gw a multiple of `width`, padding rows zero), and a tile
// of scores is [key][gw]. Key rows are read as they are, one element broadcast per FMA, so no key
// tile is ever transposed.
struct Microkernels {
  const char* isa;
  int width;  // floats per vector
  // The most query rows the few-rows score kernels take (width / 2 from 8 lanes up, width / 4 below;
  // they run 8-lane vectors at most, each lane a row and a run of d): a decode step with at most
  // this many heads per KV head scores with them.
  int few_rows_max;
  // Both attention kernels take a prefetch stream: `pf_lines` 64-byte lines from `pf` (what the
  // caller reads next: the next block's key or value rows), prefetched into L2 one per inner step
  // of the kernel's work, so that the loads are in flight while the FMAs run (null/0: none).
  // out[j * gw + r] = scale * dot(qt[:, r], k + j * d) for j < n, r < gw; k holds n rows of d.
  void (*scores_key_major)(const float* qt, int64_t gw, const float* k, int n, int64_t d, float scale, float* out,
                           const void* pf, int64_t pf_lines);
  // The same for fp16 key rows (IEEE half bits, d a multiple of 8, at most 256), converted a tile
  // of keys at a time as they are scored.
  void (*scores_key_major_half)(const float* qt, int64_t gw, const uint16_t* k, int n, int64_t d, float scale,
                                float* out, const void* pf, int64_t pf_lines);
  // The query rows (rows <= few_rows_max, d a multiple of width; row-major at q + r * d) laid out
  // for the few-rows score kernels, once per step: at most few_rows_max * d floats at out.
  void (*few_rows_layout)(const float* q, int rows, int64_t d, float* out);
  // The same key-major scores for few query rows, q as few_rows_layout wrote it for these rows and
  // d: out[j * gw + r] = scale * dot(row r, k + j * d) for r < rows, 0 for rows <= r < gw. A decode
  // step's few heads cost a share of a vector each, not one each.
  // gw: a multiple of width, or compact: the rows rounded up to a power of two (below width).
  void (*scores_few_rows)(const float* q, int rows, const float* k, int n, int64_t d, float scale, float* out,
                          int64_t gw, const void* pf, int64_t pf_lines);
  // The same for fp16 key rows (IEEE half bits), converted as they are loaded.
  void (*scores_few_rows_half)(const float* q, int rows, const uint16_t* k, int n, int64_t d, float scale, float* out,
                               int64_t gw, const void* pf, int64_t pf_lines);
  // Online-softmax update of key-major scores x[j * gw + r] (j < 64, r < gw): lane r sees keys
  // [lo[r], hi[r]) (others become 0); raises its running max m[r] (rescaling l[r] and, for r < rows,
  // its accumulator), turns x into exp(x - m[r]) and adds its sum to l[r]. Accumulators: row r of
  // stride d at acc + r * d, or with `lanes` the lane-major block of each lane vector (below), the
  // vector of rows g..g + width - 1 at acc + g * d.
  void (*softmax_update_key_major)(float* x, int64_t gw, const int32_t* lo, const int32_t* hi, float* m, float* l,
                                   float* acc, int64_t rows, int64_t d, bool lanes);
  // acc[r * acc_stride + i] += sum_{j < n} p[r * p_row + j * p_key] * v[j * d + i] for r < rows
  // (1..4), i < d. Key-major scores: p_row = 1, p_key = gw.
  void (*accumulate)(float* acc, int64_t acc_stride, int rows, const float* p, int64_t p_row, int64_t p_key,
                     const float* v, int n, int64_t d, const void* pf, int64_t pf_lines);
  // The same for fp16 value rows (IEEE half bits), converted as they are loaded.
  void (*accumulate_half)(float* acc, int64_t acc_stride, int rows, const float* p, int64_t p_row, int64_t p_key,
                          const uint16_t* v, int n, int64_t d, const void* pf, int64_t pf_lines);
  // Lane-major p.V, the path of small head sizes: the `width` rows of one lane vector keep their
  // accumulators transposed, acc[i * width + r] += sum_{j < n} p[j * width + r] * v[j * d + i] for
  // i < d, r < width (p: the key-major scores of that vector). One FMA per value element and key
  // serves every row of the vector, whatever d is (the row kernel above needs d of several vectors).
  void (*accumulate_lanes)(float* acc, const float* p, const float* v, int n, int64_t d, const void* pf,
                           int64_t pf_lines);
  // The same for fp16 value rows (IEEE half bits), converted as they are read.
  void (*accumulate_lanes_half)(float* acc, const float* p, const uint16_t* v, int n, int64_t d, const void* pf,
                                int64_t pf_lines);
  // Stage 1 (one token, its G heads in lanes), partial normalizers over rows begin <= j < end:
  // m[g] = max x_j[g], l[g] = sum exp(x_j[g] - m[g]), where x_j = scores row j (step 0) or the mean of
  // rows 4j, 4j + step, 4j + 2 step, 4j + 3 step (level-2 scores from level-1 ones); m = -inf,
  // l = 0 for an empty range. Decode computes them per slice inside the parallel scoring phase.
  // gw < width is the compact layout (a power of two, several windows a vector): m and l then hold
  // gw floats, and no float past the range's last row is read.
  void (*stage1_lse_partial)(const float* scores, int64_t gw, int64_t begin, int64_t end, int step, float* m, float* l);
  // group_scores[j] = sum_g exp(scores[j * gw + g] - lse[g]) for j < n (the group sum of stage 1);
  // gw < width: compact, as above (reads exactly the n rows).
  void (*stage1_group_sum)(const float* scores, int64_t gw, int64_t n, const float* lse, float* group_scores);
  // dst[i] = float(src[i]) for IEEE half bits src, i < n (F16C/AVX-512 conversions where available).
  void (*half_to_float)(const uint16_t* src, float* dst, int64_t n);
  // dst[i] = IEEE half bits of src[i] rounded to nearest even (overflow to inf, NaN to a quiet NaN).
  void (*float_to_half)(const float* src, uint16_t* dst, int64_t n);
};

// The best microkernels this CPU supports (decided once; INFLLMV2_ISA caps the choice).
const Microkernels& SelectMicrokernels();

// The build for one ISA level (x86: "baseline", "avx2", "avx512"; AArch64: "neon", "portable";
// other CPUs: "portable"; "baseline" is the lowest level everywhere), or null when this CPU or
// architecture lacks it (tests run every level the machine has).
const Microkernels* MicrokernelsFor(const char* isa);

}  // namespace infllmv2::cpu
