// SIMD microkernels of the CPU attention kernel: plain functions on raw fp32 pointers, compiled
// once per x86 ISA level (SSE2 baseline, AVX2+FMA, AVX-512) from microkernels_impl.inc and chosen
// at run time. No STL and no shared inline code inside the ISA-specific translation units, so no
// AVX instruction can leak into code that runs on an older CPU.
#pragma once

#include <cstdint>

namespace infllmv2::cpu {

constexpr int kBlockKeys = 64;  // keys per tile; transposed blocks are [D][kBlockKeys]
constexpr int kMaxRows = 4;     // query rows per scores call

struct Microkernels {
  const char* isa;
  // out[r * 64 + j] = scale * dot(q + r * q_stride, column j of kt) for r < rows (1..4), j < 64.
  // kt is a transposed key block [D][64] (missing keys zero-filled).
  void (*scores)(const float* q, int64_t q_stride, int rows, const float* kt, int64_t d, float scale, float* out);
  // acc[r * acc_stride + i] += sum_{j < n} p[r * p_row + j * p_key] * v[j * d + i] for r < rows
  // (1..4), i < d. Row-major scores: p_row = 64, p_key = 1; key-major ones: p_row = 1, p_key = gw.
  void (*accumulate)(float* acc, int64_t acc_stride, int rows, const float* p, int64_t p_row, int64_t p_key,
                     const float* v, int n, int64_t d);
  // x[j] = exp(x[j] - m) for j < 64 (-inf gives 0); returns the sum.
  float (*exp_sum)(float* x, float m);
  // Online-softmax update of `rows` rows (1..4) of scores x[r * 64 + j], keys [lo, hi) visible:
  // masks the rest to -inf, raises the running max m[r] (rescaling l[r] and acc row r, stride d),
  // turns x into exp(x - m[r]) and adds its sum to l[r].
  void (*softmax_update)(float* x, int rows, int lo, int hi, float* m, float* l, float* acc, int64_t d);
  // dst[i] = float(src[i]) for IEEE half bits src, i < n (F16C/AVX-512 conversions where available).
  void (*half_to_float)(const uint16_t* src, float* dst, int64_t n);
  // kt[i * 64 + j] = k[j * d + i] for j < n, 0 for n <= j < 64.
  void (*transpose)(const float* k, int n, int64_t d, float* kt);

  // Key-major kernels (one token's heads against many keys: stage 1 and one-token attention).
  // Heads live in vector lanes: gw is the
  // head count rounded up to a multiple of `width`, qt[i * gw + g] the transposed query (padding
  // heads zero), score rows are [key][gw].
  int width;  // floats per vector
  // out[j * gw + g] = scale * dot(qt[:, g], k + j * d) for j < n, g < gw; k holds n rows of d.
  void (*scores_key_major)(const float* qt, int64_t gw, const float* k, int n, int64_t d, float scale, float* out);
  // lse[g] = log-sum-exp over j < count of x_j[g]: x_j = s1 row j (step 0), or the mean of rows
  // 4j, 4j + step, 4j + 2 step, 4j + 3 step (level-2 scores from level-1 ones); +inf if count == 0.
  void (*stage1_lse)(const float* s1, int64_t gw, int64_t count, int step, float* lse);
  // shared[j] = sum_g exp(s1[j * gw + g] - lse[g]) for j < n.
  void (*stage1_shared)(const float* s1, int64_t gw, int64_t n, const float* lse, float* shared);
  // softmax_update on key-major scores x[j * gw + g] (j < 64, keys [lo, hi) visible, others become
  // 0): per lane g < gw the running max m[g] and sum l[g]; acc rows g < rows (stride d) rescaled.
  void (*softmax_update_key_major)(float* x, int64_t gw, int lo, int hi, float* m, float* l, float* acc, int rows,
                                   int64_t d);
};

// The best microkernels this CPU supports (decided once; INFLLMV2_ISA caps the choice).
const Microkernels& SelectMicrokernels();

// The build for one ISA level ("baseline", "avx2", "avx512"), or null when this CPU lacks it
// (tests run every level the machine has).
const Microkernels* MicrokernelsFor(const char* isa);

}  // namespace infllmv2::cpu
