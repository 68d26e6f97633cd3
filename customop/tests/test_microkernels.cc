// Every SIMD microkernel of every ISA level this CPU has, against a double-precision scalar
// computation of the same contract (microkernels.h). Levels the CPU lacks are not dropped
// silently: they are printed, and IsaLevels.EveryLevelOfTheBuildRunsHere is skipped naming them.
// The attention tests run once per level through INFLLMV2_ISA (tests/CMakeLists.txt);
// IsaLevels.RequestedLevelIsActive tells, in each of those runs, whether the level asked for is
// the one that ran.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/float16.h"
#include "cpu/microkernels.h"

namespace infllmv2::cpu {
namespace {

// The levels of this architecture's build (src/cpu/microkernels.cc).
#if defined(__x86_64__) || defined(__i386__)
const char* const kAllLevels[] = {"baseline", "avx2", "avx512"};
#elif defined(__aarch64__)
const char* const kAllLevels[] = {"portable", "neon"};
#else
const char* const kAllLevels[] = {"portable"};
#endif

std::string LevelNames() {
  std::string s;
  for (const char* isa : kAllLevels) s += std::string(s.empty() ? "" : ", ") + isa;
  return s;
}

// ISA levels of the build that this CPU lacks (their microkernels cannot run here).
std::vector<std::string> MissingLevels() {
  std::vector<std::string> out;
  for (const char* isa : kAllLevels)
    if (MicrokernelsFor(isa) == nullptr) out.push_back(isa);
  return out;
}

std::vector<const Microkernels*> Levels() {
  std::vector<const Microkernels*> out;
  for (const char* isa : kAllLevels)
    if (const Microkernels* mk = MicrokernelsFor(isa)) out.push_back(mk);
  for (const auto& isa : MissingLevels())
    std::printf("[isa] %s: not available on this CPU, its microkernels are NOT tested here\n", isa.c_str());
  return out;
}

// Skipped (visible in the CTest summary) when the CPU lacks a level of the build.
TEST(IsaLevels, EveryLevelOfTheBuildRunsHere) {
  std::string missing;
  for (const auto& isa : MissingLevels()) missing += (missing.empty() ? "" : ", ") + isa;
  std::string tested;
  for (const char* isa : kAllLevels)
    if (MicrokernelsFor(isa) != nullptr) tested += std::string(" ") + isa;
  std::printf("[isa] levels tested here:%s\n", tested.c_str());
  if (!missing.empty()) GTEST_SKIP() << "this CPU lacks ISA level(s) " << missing << ": not tested on this machine";
}

// In a run with INFLLMV2_ISA=<level> (the per-level CTest runs of the attention tests): passes when
// the kernel really runs that level, is skipped (naming the level that ran instead) when the CPU
// lacks it, and fails on a value the kernel does not know.
TEST(IsaLevels, RequestedLevelIsActive) {
  const char* requested = std::getenv("INFLLMV2_ISA");
  const char* active = SelectMicrokernels().isa;
  std::printf("[isa] attention kernel runs %s (INFLLMV2_ISA=%s)\n", active, requested ? requested : "unset");
  if (requested == nullptr) return;
  bool known = false;
  for (const char* isa : kAllLevels) known = known || std::strcmp(isa, requested) == 0;
  ASSERT_TRUE(known) << "INFLLMV2_ISA=" << requested << " is not a level of the kernel (" << LevelNames() << ")";
  if (MicrokernelsFor(requested) == nullptr)
    GTEST_SKIP() << "INFLLMV2_ISA=" << requested << " but this CPU lacks it: this run's attention tests ran " << active;
  EXPECT_STREQ(active, requested);
}

std::vector<float> Random(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// The fp16 variants convert rows and then run the same arithmetic: their results equal the fp32
// kernels' on the converted rows bit for bit (d = 40: rows that are not whole vectors; n = 37).
TEST(Microkernels, HalfVariantsEqualFp32KernelsOnConvertedRows) {
  for (const Microkernels* mk : Levels()) {
    SCOPED_TRACE(mk->isa);
    const int64_t heads = mk->width + 3, gw = 2 * mk->width, d = 40;
    const int n = 37;
    const auto q = Random(static_cast<size_t>(d * gw), 11), src = Random(static_cast<size_t>(n * d), 12, -2.0f, 2.0f);
    std::vector<uint16_t> half(src.size());
    for (size_t i = 0; i < src.size(); ++i) half[i] = FromFloat<Float16>(src[i]).bits;
    std::vector<float> rows(src.size());
    mk->half_to_float(half.data(), rows.data(), static_cast<int64_t>(rows.size()));
    std::vector<float> want(static_cast<size_t>(n * gw)), got(want.size());
    mk->scores_key_major(q.data(), gw, rows.data(), n, d, 0.5f, want.data(), nullptr, 0);
    mk->scores_key_major_half(q.data(), gw, half.data(), n, d, 0.5f, got.data(), half.data(), 4);
    ASSERT_EQ(want, got);
    const auto p = Random(static_cast<size_t>(n * gw), 13, 0.0f, 1.0f);
    std::vector<float> acc_want(static_cast<size_t>(heads * d), 0.5f), acc_got = acc_want;
    for (int64_t g0 = 0; g0 < heads; g0 += kMaxRows) {
      const int rows_here = static_cast<int>(std::min<int64_t>(kMaxRows, heads - g0));
      mk->accumulate(acc_want.data() + g0 * d, d, rows_here, p.data() + g0, 1, gw, rows.data(), n, d, nullptr, 0);
      mk->accumulate_half(acc_got.data() + g0 * d, d, rows_here, p.data() + g0, 1, gw, half.data(), n, d, half.data(),
                          3);
    }
    ASSERT_EQ(acc_want, acc_got);
  }
}

// float_to_half rounds like the op's scalar FromFloat<Float16> (common/float16.h) at every ISA
// level: ties, subnormals, the overflow edge, infinities, NaN, both signs, and random values.
TEST(Microkernels, FloatToHalfMatchesScalarRounding) {
  std::vector<float> x = {0.0f,
                          -0.0f,
                          1.0f,
                          -1.0f,
                          65504.0f,
                          65519.99f,
                          65520.0f,
                          1e9f,
                          -1e9f,
                          6.1035156e-05f,
                          6.0975552e-05f,
                          5.9604645e-08f,
                          2.9802322e-08f,
                          2.9802326e-08f,
                          1e-10f,
                          1.0009765625f,
                          1.00048828125f,
                          1.00146484375f,
                          3.14159265f,
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()};
  const auto r = Random(1000, 21, -70000.0f, 70000.0f), small = Random(1000, 22, -1e-4f, 1e-4f);
  x.insert(x.end(), r.begin(), r.end());
  x.insert(x.end(), small.begin(), small.end());
  for (const Microkernels* mk : Levels()) {
    SCOPED_TRACE(mk->isa);
    std::vector<uint16_t> got(x.size());
    mk->float_to_half(x.data(), got.data(), static_cast<int64_t>(x.size()));
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(got[i], FromFloat<Float16>(x[i]).bits) << "x=" << x[i];
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> nans(20, nan);
    std::vector<uint16_t> h(nans.size());
    mk->float_to_half(nans.data(), h.data(), static_cast<int64_t>(h.size()));
    for (uint16_t v : h) EXPECT_TRUE((v & 0x7c00u) == 0x7c00u && (v & 0x3ffu) != 0) << v;  // a NaN
  }
}

TEST(Microkernels, BaselineAlwaysAvailable) {
  ASSERT_NE(MicrokernelsFor("baseline"), nullptr);
  EXPECT_EQ(MicrokernelsFor("no-such-isa"), nullptr);
}

TEST(Microkernels, KeyMajorScoresMatchDotProductsForEveryHeadCount) {
  for (const Microkernels* mk : Levels()) {
    SCOPED_TRACE(mk->isa);
    for (int64_t heads : {1, 3, 8, 16, 20, 40, 72}) {
      const int64_t gw = (heads + mk->width - 1) / mk->width * mk->width;
      const int64_t d = 72;
      const int n = 37;  // not a multiple of any tile
      const auto q = Random(static_cast<size_t>(heads * d), 3);
      const auto k = Random(static_cast<size_t>(n * d), 4);
      std::vector<float> qt(static_cast<size_t>(d * gw), 0.0f), out(static_cast<size_t>(n * gw), 9.0f);
      for (int64_t g = 0; g < heads; ++g)
        for (int64_t i = 0; i < d; ++i) qt[i * gw + g] = q[g * d + i];
      mk->scores_key_major(qt.data(), gw, k.data(), n, d, 0.25f, out.data(), k.data(), 3);  // with a prefetch stream
      for (int j = 0; j < n; ++j)
        for (int64_t g = 0; g < gw; ++g) {
          double want = 0.0;
          if (g < heads)
            for (int64_t i = 0; i < d; ++i) want += static_cast<double>(q[g * d + i]) * k[j * d + i];
          ASSERT_NEAR(out[j * gw + g], 0.25 * want, 1e-5) << "heads=" << heads << " j=" << j << " g=" << g;
        }
    }
  }
}

// The out strides a few-rows call may be given: the vector width, and the compact stride (the rows
// rounded up to a power of two) where it is below the width.
std::vector<int64_t> FewRowsStrides(const Microkernels& mk, int rows) {
  int64_t compact = 1;
  while (compact < rows) compact *= 2;
  std::vector<int64_t> out{mk.width};
  if (compact < mk.width) out.push_back(compact);
  return out;
}

// The compact strides of stage 1 (powers of two below the width) and one of several vectors.
std::vector<int64_t> Stage1Strides(const Microkernels& mk) {
  std::vector<int64_t> out{2 * mk.width};
  for (int64_t ws = 1; ws < mk.width; ws *= 2) out.push_back(ws);
  return out;
}

TEST(Microkernels, FewRowsScoresMatchDotProductsAndZeroThePadding) {
  for (const Microkernels* mk : Levels()) {
    SCOPED_TRACE(mk->isa);
    ASSERT_TRUE(mk->few_rows_max >= 1 && 2 * mk->few_rows_max <= mk->width);
    for (int rows = 1; rows <= mk->few_rows_max; ++rows)
      for (int64_t gw : FewRowsStrides(*mk, rows))
        for (int64_t d : {int64_t{mk->width}, int64_t{6 * mk->width}, int64_t{8 * mk->width}}) {  // 8W: D >= 128
          for (int n : {1, 3, 37, 64}) {  // partial key groups of every size
            const auto q = Random(static_cast<size_t>(rows * d), 7);
            const auto k = Random(static_cast<size_t>(n * d), 8);
            std::vector<uint16_t> kh(k.size());
            for (size_t i = 0; i < k.size(); ++i) kh[i] = FromFloat<Float16>(k[i]).bits;
            // One sentinel row after the n rows: nothing is written past them.
            std::vector<float> out(static_cast<size_t>((n + 1) * gw), 9.0f), out_h(out.size(), 9.0f);
            // The kernels' own query layout, in a buffer of exactly the size the contract names.
            std::vector<float> laid(static_cast<size_t>(mk->few_rows_max * d));
            mk->few_rows_layout(q.data(), rows, d, laid.data());
            mk->scores_few_rows(laid.data(), rows, k.data(), n, d, 0.25f, out.data(), gw, k.data(), 5);
            mk->scores_few_rows_half(laid.data(), rows, kh.data(), n, d, 0.25f, out_h.data(), gw, nullptr, 0);
            for (int j = 0; j < n; ++j)
              for (int64_t g = 0; g < gw; ++g) {
                double want = 0.0, want_h = 0.0;
                if (g < rows)
                  for (int64_t i = 0; i < d; ++i) {
                    want += static_cast<double>(q[g * d + i]) * k[j * d + i];
                    want_h += static_cast<double>(q[g * d + i]) * ToFloat(Float16{kh[j * d + i]});
                  }
                ASSERT_NEAR(out[j * gw + g], 0.25 * want, 1e-5) << "rows=" << rows << " gw=" << gw << " j=" << j;
                ASSERT_NEAR(out_h[j * gw + g], 0.25 * want_h, 1e-5) << "rows=" << rows << " gw=" << gw << " j=" << j;
              }
            for (int64_t g = 0; g < gw; ++g) {
              ASSERT_EQ(out[n * gw + g], 9.0f) << "written past the rows: rows=" << rows << " gw=" << gw;
              ASSERT_EQ(out_h[n * gw + g], 9.0f) << "written past the rows: rows=" << rows << " gw=" << gw;
            }
          }
        }
  }
}

// Every row stride: several vectors per window, and the compact ones (several windows per vector).
// Each partial reads a copy holding exactly the rows its range needs, so a read past them is an
// ASan error (the native tests run under ASan).
TEST(Microkernels, Stage1LseAndGroupSumMatchDoubles) {
  for (const Microkernels* mk : Levels()) {
    SCOPED_TRACE(mk->isa);
    for (int64_t gw : Stage1Strides(*mk)) {
      SCOPED_TRACE("gw " + std::to_string(gw));
      for (int step : {0, 2}) {
        const int64_t rows = 203, count = step == 0 ? rows : (rows - 3 * step) / 4;
        const auto s1 = Random(static_cast<size_t>(rows * gw), 5, -8.0f, 8.0f);
        auto x = [&](int64_t j, int64_t g) {
          if (step == 0) return static_cast<double>(s1[j * gw + g]);
          return 0.25 * (static_cast<double>(s1[4 * j * gw + g]) + s1[(4 * j + step) * gw + g] +
                         s1[(4 * j + 2 * step) * gw + g] + s1[(4 * j + 3 * step) * gw + g]);
        };
        // Partials of four ranges (one empty, one a single row) merged like the kernel merges its slices.
        const int64_t cut = count / 3;
        const int64_t ranges[5] = {0, cut, cut, cut + 1, count};
        std::vector<double> mx(static_cast<size_t>(gw), -INFINITY), sum(static_cast<size_t>(gw), 0.0);
        std::vector<float> m(static_cast<size_t>(gw)), l(static_cast<size_t>(gw));
        for (int part = 0; part < 4; ++part) {
          const int64_t lo = ranges[part], hi = ranges[part + 1];
          const int64_t needed = lo == hi ? 0 : (step == 0 ? hi : 4 * (hi - 1) + 3 * step + 1);
          const std::vector<float> exact(s1.begin(), s1.begin() + needed * gw);
          mk->stage1_lse_partial(exact.data(), gw, lo, hi, step, m.data(), l.data());
          for (int64_t g = 0; g < gw; ++g) {
            double want_m = -INFINITY, want_l = 0.0;
            for (int64_t j = lo; j < hi; ++j) want_m = std::max(want_m, x(j, g));
            for (int64_t j = lo; j < hi; ++j) want_l += std::exp(x(j, g) - want_m);
            if (lo == hi) {
              ASSERT_EQ(m[g], -std::numeric_limits<float>::infinity());
              ASSERT_EQ(l[g], 0.0f);
              continue;
            }
            ASSERT_NEAR(m[g], want_m, 1e-5) << "step=" << step << " part=" << part << " g=" << g;
            ASSERT_NEAR(l[g], want_l, 1e-5 * want_l) << "step=" << step << " part=" << part << " g=" << g;
            const double new_m = std::max(mx[g], static_cast<double>(m[g]));
            sum[g] = sum[g] * std::exp(mx[g] - new_m) + l[g] * std::exp(m[g] - new_m);
            mx[g] = new_m;
          }
        }
        for (int64_t g = 0; g < gw; ++g) {
          double all = 0.0;
          for (int64_t j = 0; j < count; ++j) all += std::exp(x(j, g));
          ASSERT_NEAR(mx[g] + std::log(sum[g]), std::log(all), 1e-5) << "step=" << step << " g=" << g;
        }
      }
      // Group sum over every count of windows up to a few vectors' worth, the upper half of the
      // lanes switched off by lse = +inf (none when there is one).
      for (int64_t n = 1; n <= 3 * mk->width + 5; n += (n < 2 * mk->width ? 1 : 5)) {
        const auto s1 = Random(static_cast<size_t>(n * gw), 6, -4.0f, 4.0f);
        std::vector<float> lse = Random(static_cast<size_t>(gw), 7, 2.0f, 5.0f),
                           shared(static_cast<size_t>(n) + 1, 9.0f);
        const int64_t on = gw > 1 ? gw / 2 : 1;
        for (int64_t g = on; g < gw; ++g) lse[g] = std::numeric_limits<float>::infinity();
        mk->stage1_group_sum(s1.data(), gw, n, lse.data(), shared.data());
        for (int64_t j = 0; j < n; ++j) {
          double want = 0.0;
          for (int64_t g = 0; g < on; ++g) want += std::exp(static_cast<double>(s1[j * gw + g]) - lse[g]);
          ASSERT_NEAR(shared[j], want, 1e-6 * want + 1e-12) << "n=" << n << " j=" << j;
        }
        ASSERT_EQ(shared[n], 9.0f) << "written past the windows: n=" << n;
      }
    }
  }
}

// Lanes: head 0 with a running max above every score, head 1 a lower one, the rest fresh (-inf);
// per-lane key ranges: `ranges` 0 gives every lane [2, 45), 1 gives lanes different ranges (one
// empty, one all 64 keys). Scores include -inf and values that underflow exp.
TEST(Microkernels, KeyMajorSoftmaxUpdateAndAccumulateMatchDoubles) {
  for (const Microkernels* mk : Levels()) {
    SCOPED_TRACE(mk->isa);
    // Row strides: several vectors of heads (W + 5 heads), and the compact ones of the few-rows
    // path (gw = 1, 2, 4, 8 below the width, its heads gw or gw - 1: padding rows see nothing).
    std::vector<std::pair<int64_t, int64_t>> layouts{
        {(mk->width + 5 + mk->width - 1) / mk->width * mk->width, mk->width + 5}};
    for (int64_t ws = 1; ws < mk->width; ws *= 2) layouts.push_back({ws, ws > 1 && ws % 4 == 0 ? ws - 1 : ws});
    for (const auto& [gw, heads] : layouts)
      for (int ranges = 0; ranges < 2; ++ranges) {
        SCOPED_TRACE("gw " + std::to_string(gw) + " ranges " + std::to_string(ranges));
        const int64_t d = 40;
        const int n = 50;
        std::vector<int32_t> lo(static_cast<size_t>(gw), 2), hi(static_cast<size_t>(gw), 45);
        if (ranges == 1)
          for (int64_t g = 0; g < gw; ++g) {
            lo[g] = static_cast<int32_t>(g % 7);
            hi[g] = g % 5 == 3 ? lo[g] : static_cast<int32_t>(std::min<int64_t>(n, 20 + 3 * g));
          }
        if (ranges == 1 && heads > 2) lo[2] = 0, hi[2] = n;
        auto x = Random(static_cast<size_t>(kBlockKeys * gw), 11, -3.0f, 3.0f);
        x[4 * gw + 0] = -std::numeric_limits<float>::infinity();
        if (heads > 1) x[5 * gw + 1] = -95.0f;  // exp underflows to 0 after the shift
        if (heads > 2) x[6 * gw + 2] = -88.0f;
        const auto x0 = x;
        const auto v = Random(static_cast<size_t>(n * d), 12);
        std::vector<float> m(static_cast<size_t>(gw), -std::numeric_limits<float>::infinity()),
            l(static_cast<size_t>(gw), 0.0f);
        m[0] = 10.0f;  // head 0: running max above every score, no rescale
        l[0] = 1.5f;
        if (heads > 1) m[1] = 0.25f, l[1] = 2.0f;
        auto acc = Random(static_cast<size_t>(heads * d), 13);
        const auto acc0 = acc;
        const auto m0 = m, l0 = l;
        mk->softmax_update_key_major(x.data(), gw, lo.data(), hi.data(), m.data(), l.data(), acc.data(), heads, d,
                                     false);
        for (int64_t g = 0; g < heads; ++g) {
          double mx = m0[g];
          for (int j = lo[g]; j < hi[g]; ++j) mx = std::max(mx, static_cast<double>(x0[j * gw + g]));
          ASSERT_EQ(m[g], static_cast<float>(mx)) << "g=" << g;
          const double corr = std::isinf(m0[g]) ? (std::isinf(mx) ? 1.0 : 0.0) : std::exp(m0[g] - mx);
          double want_l = l0[g] * corr;
          for (int j = 0; j < kBlockKeys; ++j) {
            const double arg = x0[j * gw + g] - static_cast<float>(mx);  // the kernel subtracts in fp32
            const double e = j >= lo[g] && j < hi[g] && arg >= -87.0 ? std::exp(arg) : 0.0;
            want_l += e;
            if (e == 0.0)
              ASSERT_EQ(x[j * gw + g], 0.0f) << "g=" << g << " j=" << j;
            else
              ASSERT_NEAR(x[j * gw + g], e, 2e-7 * e) << "g=" << g << " j=" << j;
          }
          ASSERT_NEAR(l[g], want_l, 1e-5 * want_l) << "g=" << g;
          for (int64_t i = 0; i < d; ++i) ASSERT_NEAR(acc[g * d + i], acc0[g * d + i] * corr, 1e-6);
        }
        const auto before = acc;
        for (int64_t g0 = 0; g0 < heads; g0 += kMaxRows)
          mk->accumulate(acc.data() + g0 * d, d, static_cast<int>(std::min<int64_t>(kMaxRows, heads - g0)),
                         x.data() + g0, 1, gw, v.data(), n, d, v.data(), 5);  // a prefetch stream changes no result
        for (int64_t g = 0; g < heads; ++g)
          for (int64_t i = 0; i < d; ++i) {
            double want = before[g * d + i];
            for (int j = 0; j < n; ++j) want += static_cast<double>(x[j * gw + g]) * v[j * d + i];
            ASSERT_NEAR(acc[g * d + i], want, 1e-5) << "g=" << g << " i=" << i;
          }
        // Padding rows of a compact layout: their scores become 0, their states stay as they were.
        for (int64_t g = heads; g < gw && gw < mk->width; ++g) {
          for (int j = 0; j < kBlockKeys; ++j) ASSERT_EQ(x[j * gw + g], 0.0f) << "padding row " << g;
          ASSERT_EQ(m[g], m0[g]);
          ASSERT_EQ(l[g], l0[g]);
        }
      }
  }
}

// The lane-major p.V of small head sizes against doubles (d = 8, 16, 32, and 24, 40, 56 for
// chunks of every size), with a prefetch stream; the fp16 variant equals it on converted rows,
// and softmax_update's lane-major rescale equals its row-major one.
TEST(Microkernels, LaneMajorAccumulateAndRescaleMatch) {
  for (const Microkernels* mk : Levels()) {
    SCOPED_TRACE(mk->isa);
    const int64_t W = mk->width;
    for (int64_t d : {8, 16, 32, 24, 40, 56}) {
      SCOPED_TRACE(d);
      const int n = 50;
      const auto p = Random(static_cast<size_t>(kBlockKeys * W), 31, 0.0f, 1.0f);
      const auto v = Random(static_cast<size_t>(n * d), 32);
      const auto acc0 = Random(static_cast<size_t>(d * W), 33);
      auto got = acc0;
      mk->accumulate_lanes(got.data(), p.data(), v.data(), n, d, v.data(), 3);
      for (int64_t i = 0; i < d; ++i)
        for (int64_t r = 0; r < W; ++r) {
          double want = acc0[i * W + r];
          for (int j = 0; j < n; ++j) want += static_cast<double>(p[j * W + r]) * v[j * d + i];
          ASSERT_NEAR(got[i * W + r], want, 1e-5) << "i=" << i << " r=" << r;
        }
      std::vector<uint16_t> half(v.size());
      for (size_t i = 0; i < v.size(); ++i) half[i] = FromFloat<Float16>(v[i]).bits;
      std::vector<float> rows(v.size());
      mk->half_to_float(half.data(), rows.data(), static_cast<int64_t>(rows.size()));
      auto want_half = acc0, got_half = acc0;
      mk->accumulate_lanes(want_half.data(), p.data(), rows.data(), n, d, nullptr, 0);
      mk->accumulate_lanes_half(got_half.data(), p.data(), half.data(), n, d, half.data(), 2);
      ASSERT_EQ(want_half, got_half);
      // Rescale: lanes with a running max above, below and at -inf, some rows past `rows`.
      const int64_t heads = W - 1;
      std::vector<int32_t> lo(static_cast<size_t>(W), 0), hi(static_cast<size_t>(W), n);
      hi[3] = 0;  // a lane that sees no key
      auto x_rows = Random(static_cast<size_t>(kBlockKeys * W), 34, -3.0f, 3.0f), x_lanes = x_rows;
      std::vector<float> m_rows(static_cast<size_t>(W)), l_rows(static_cast<size_t>(W), 1.0f);
      for (int64_t r = 0; r < W; ++r) m_rows[r] = r % 3 == 0 ? 10.0f : r % 3 == 1 ? -1.0f : -INFINITY;
      auto m_lanes = m_rows, l_lanes = l_rows;
      std::vector<float> a_rows(static_cast<size_t>(W * d)), a_lanes(a_rows.size());
      for (int64_t r = 0; r < W; ++r)
        for (int64_t i = 0; i < d; ++i) a_rows[r * d + i] = a_lanes[i * W + r] = acc0[i * W + r];
      mk->softmax_update_key_major(x_rows.data(), W, lo.data(), hi.data(), m_rows.data(), l_rows.data(), a_rows.data(),
                                   heads, d, false);
      mk->softmax_update_key_major(x_lanes.data(), W, lo.data(), hi.data(), m_lanes.data(), l_lanes.data(),
                                   a_lanes.data(), heads, d, true);
      ASSERT_EQ(x_rows, x_lanes);
      ASSERT_EQ(m_rows, m_lanes);
      ASSERT_EQ(l_rows, l_lanes);
      for (int64_t r = 0; r < heads; ++r)
        for (int64_t i = 0; i < d; ++i) ASSERT_EQ(a_rows[r * d + i], a_lanes[i * W + r]) << "r=" << r << " i=" << i;
    }
  }
}

TEST(Microkernels, HalfToFloatMatchesScalarDecoding) {
  for (const Microkernels* mk : Levels()) {
    SCOPED_TRACE(mk->isa);
    std::vector<uint16_t> h = {0x0000, 0x8000, 0x3c00, 0xbc00, 0x7bff, 0x0001, 0x03ff, 0x7c00, 0xfc00, 0x3555};
    for (int i = 0; i < 40; ++i) h.push_back(static_cast<uint16_t>(0x1234 + 977 * i));
    std::vector<float> f(h.size());
    mk->half_to_float(h.data(), f.data(), static_cast<int64_t>(h.size()));
    for (size_t i = 0; i < h.size(); ++i) {
      const int e = (h[i] >> 10) & 0x1f, mant = h[i] & 0x3ff;
      const double sign = (h[i] & 0x8000) ? -1.0 : 1.0;
      const double want = e == 0x1f ? sign * std::numeric_limits<double>::infinity()
                          : e == 0  ? sign * std::ldexp(mant, -24)
                                    : sign * std::ldexp(1024 + mant, e - 25);
      if (e == 0x1f && mant != 0) continue;  // NaN payloads
      ASSERT_EQ(static_cast<double>(f[i]), want) << std::hex << h[i];
    }
  }
}

}  // namespace
}  // namespace infllmv2::cpu
