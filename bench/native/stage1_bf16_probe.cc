// What 16-bit stage-1 scoring would buy at 128k decode (docs/benchmarks.md, "Targets missed").
// Not part of the op: a measurement behind a design decision. It times, on one thread, the scoring
// of N level-1 compressed keys (D = 128) against the G = 16 heads of one token three ways:
//   fp32         the kernel's own AVX-512 microkernel (scores_key_major), as the op runs;
//   bf16 (conv)  vdpbf16ps on fp32 keys rounded to bf16 as they are read (the op's state is type T);
//   bf16 (kept)  vdpbf16ps on keys already stored as bf16 (would need a 16-bit state: a contract change);
// and compares the bf16 scores and the blocks they select with the fp32 ones.
//   infllmv2_stage1_bf16_probe [N]      (N = 8191: 128k context)
// Built only where the compiler knows AVX512_BF16; the bf16 code is compiled for that target alone
// and runs only after the CPU check.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/microkernels.h"

namespace {

constexpr int kD = 128, kG = 16, kKeys = 8;  // keys per tile, as the fp32 microkernel

uint32_t PackBf16Pair(float lo, float hi) {  // round to nearest even, as vcvtne2ps2bf16
  auto bits = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  };
  return bits(lo) | (bits(hi) << 16);
}

// Query pairs: qp[p] holds, for lane h, q[h][2p] and q[h][2p + 1] (vdpbf16ps multiplies lane h's
// two bf16 products with the broadcast key pair and adds both).
std::vector<uint32_t> PackQuery(const std::vector<float>& q) {
  std::vector<uint32_t> qp(kD / 2 * kG);
  for (int p = 0; p < kD / 2; ++p)
    for (int h = 0; h < kG; ++h) qp[p * kG + h] = PackBf16Pair(q[h * kD + 2 * p], q[h * kD + 2 * p + 1]);
  return qp;
}

template <bool kConvert>
__attribute__((target("avx512f,avx512bf16"))) void ScoresBf16(const uint32_t* qp, const void* keys, int n, float scale,
                                                              float* out) {
  alignas(64) uint32_t staged[kKeys][kD / 2];
  for (int j = 0; j + kKeys <= n; j += kKeys) {
    const uint32_t* rows[kKeys];
    for (int t = 0; t < kKeys; ++t) {
      if constexpr (kConvert) {
        const float* k = static_cast<const float*>(keys) + static_cast<int64_t>(j + t) * kD;
        for (int i = 0; i < kD; i += 32) {
          const __m512bh c = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(k + i + 16), _mm512_loadu_ps(k + i));
          std::memcpy(&staged[t][i / 2], &c, 64);
        }
        rows[t] = staged[t];
      } else {
        rows[t] = static_cast<const uint32_t*>(keys) + static_cast<int64_t>(j + t) * (kD / 2);
      }
    }
    __m512 acc[kKeys];
    for (int t = 0; t < kKeys; ++t) acc[t] = _mm512_setzero_ps();
    for (int p = 0; p < kD / 2; ++p) {
#pragma GCC unroll 8
      for (int t = 0; t < kKeys; ++t)
        acc[t] = _mm512_dpbf16_ps(acc[t], (__m512bh)_mm512_loadu_si512(qp + p * kG),
                                  (__m512bh)_mm512_set1_epi32(static_cast<int>(rows[t][p])));
    }
    for (int t = 0; t < kKeys; ++t)
      _mm512_storeu_ps(out + static_cast<int64_t>(j + t) * kG, _mm512_mul_ps(acc[t], _mm512_set1_ps(scale)));
  }
}

template <class F>
double MedianMicros(F&& f) {
  std::vector<double> t;
  for (int r = 0; r < 301; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

// The decode selection on scores s[j * G + g] (lse over the level-2 means, group sum, max-pool 5/4/1,
// forced init and 33 local blocks, 62 more by score): the chosen dynamic blocks, sorted.
std::vector<int> Select(const std::vector<float>& s, int n) {
  double lse[kG];
  const int n2 = (n - 7) / 4 + 1;  // level-2 keys: means of level-1 rows 4j, 4j+2, 4j+4, 4j+6
  for (int g = 0; g < kG; ++g) {
    double m = -INFINITY, l = 0;
    for (int j = 0; j < n2; ++j)
      m = std::max(
          m, 0.25 * (s[4 * j * kG + g] + s[(4 * j + 2) * kG + g] + s[(4 * j + 4) * kG + g] + s[(4 * j + 6) * kG + g]));
    for (int j = 0; j < n2; ++j)
      l += std::exp(
          0.25 * (s[4 * j * kG + g] + s[(4 * j + 2) * kG + g] + s[(4 * j + 4) * kG + g] + s[(4 * j + 6) * kG + g]) - m);
    lse[g] = m + std::log(l);
  }
  std::vector<double> shared(n);
  for (int j = 0; j < n; ++j)
    for (int g = 0; g < kG; ++g) shared[j] += std::exp(s[j * kG + g] - lse[g]);
  const int blocks = (16 * (n - 1) + 32 + 1 + 63) / 64, qb = blocks - 1;
  std::vector<std::pair<double, int>> ranked;
  for (int b = 1; b < qb - 32; ++b) {
    double best = -INFINITY;
    for (int j = std::max(4 * b - 1, 0); j < std::min(4 * b + 4, n); ++j) best = std::max(best, shared[j]);
    ranked.push_back({-best, b});
  }
  std::sort(ranked.begin(), ranked.end());
  std::vector<int> chosen;
  for (int i = 0; i < 62 && i < static_cast<int>(ranked.size()); ++i) chosen.push_back(ranked[i].second);
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) / kKeys * kKeys : 8184;  // whole tiles (8191 -> 8184)
  __builtin_cpu_init();
  const infllmv2::cpu::Microkernels* mk = infllmv2::cpu::MicrokernelsFor("avx512");
  if (mk == nullptr || !__builtin_cpu_supports("avx512bf16")) {
    std::printf("{\"skipped\":\"this CPU lacks AVX-512 or AVX512_BF16\"}\n");
    return 0;
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(kD));
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  // Compressed keys as a model makes them: a shared direction plus a small per-key part, and a few
  // keys aligned with the query (the blocks a retrieval needs); the query has a norm near sqrt(D).
  std::vector<float> q(kG * kD), common(kD), keys(static_cast<size_t>(n) * kD);
  for (float& x : common) x = normal(rng);
  for (float& x : q) x = normal(rng);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < kD; ++i)
      keys[j * kD + i] = 0.5f * common[i] + 0.3f * normal(rng) + (j % 97 == 0 ? 0.2f * q[i] : 0.0f);
  std::vector<float> qt(kD * kG);  // the fp32 kernel's layout: qt[i * G + g]
  for (int g = 0; g < kG; ++g)
    for (int i = 0; i < kD; ++i) qt[i * kG + g] = q[g * kD + i];
  const std::vector<uint32_t> qp = PackQuery(q);
  std::vector<uint32_t> kept(static_cast<size_t>(n) * kD / 2);
  for (size_t i = 0; i < kept.size(); ++i) kept[i] = PackBf16Pair(keys[2 * i], keys[2 * i + 1]);

  std::vector<float> s32(static_cast<size_t>(n) * kG), sconv(s32.size()), skept(s32.size());
  double t32 = 0, tconv = 0, tkept = 0;
  for (int round = 0; round < 3; ++round) {  // interleaved, best median of three rounds
    const double a =
        MedianMicros([&] { mk->scores_key_major(qt.data(), kG, keys.data(), n, kD, scale, s32.data(), nullptr, 0); });
    const double b = MedianMicros([&] { ScoresBf16<true>(qp.data(), keys.data(), n, scale, sconv.data()); });
    const double c = MedianMicros([&] { ScoresBf16<false>(qp.data(), kept.data(), n, scale, skept.data()); });
    t32 = round == 0 ? a : std::min(t32, a);
    tconv = round == 0 ? b : std::min(tconv, b);
    tkept = round == 0 ? c : std::min(tkept, c);
  }
  double max_err = 0, max_score = 0;
  for (size_t i = 0; i < s32.size(); ++i) {
    max_err = std::max(max_err, static_cast<double>(std::fabs(sconv[i] - s32[i])));
    max_score = std::max(max_score, static_cast<double>(std::fabs(s32[i])));
    if (sconv[i] != skept[i]) {
      std::printf("{\"error\":\"the two bf16 variants disagree at %zu\"}\n", i);
      return 1;
    }
  }
  const std::vector<int> sel32 = Select(s32, n), sel16 = Select(sconv, n);
  std::vector<int> common_sel;
  std::set_intersection(sel32.begin(), sel32.end(), sel16.begin(), sel16.end(), std::back_inserter(common_sel));
  std::printf(
      "{\"keys\":%d,\"fp32_us\":%.1f,\"bf16_convert_us\":%.1f,\"bf16_kept_us\":%.1f,"
      "\"convert_over_fp32\":%.2f,\"kept_over_fp32\":%.2f,\"max_abs_score_error\":%.4f,\"max_abs_score\":%.3f,"
      "\"dynamic_blocks\":%zu,\"dynamic_blocks_changed\":%zu}\n",
      n, t32, tconv, tkept, tconv / t32, tkept / t32, max_err, max_score, sel32.size(),
      sel32.size() - common_sel.size());
  return 0;
}
