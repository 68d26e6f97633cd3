// The few-rows score kernels' rate (docs/benchmarks.md, "Session 7"): one thread, `n` keys of `d`
// values scored against `rows` query rows, repeated; best of 7 rounds. Not part of the op: a
// measurement behind the kernels' design (the vector width, the wide kernel for 4 rows of D >= 128).
//   infllmv2_few_rows_probe ROWS D N [REPEATS]      e.g. 7 64 8192 (stage 1 of Qwen2.5-0.5B at 128k)
// INFLLMV2_ISA=avx2|baseline picks a lower ISA level, as for the op.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cpu/microkernels.h"

int main(int argc, char** argv) {
  using infllmv2::cpu::Microkernels;
  if (argc < 4) {
    std::fprintf(stderr, "usage: infllmv2_few_rows_probe ROWS D N [REPEATS]\n");
    return 2;
  }
  const int rows = std::atoi(argv[1]), n = std::atoi(argv[3]), reps = argc > 4 ? std::atoi(argv[4]) : 2000;
  const int64_t d = std::atol(argv[2]);
  const Microkernels& mk = infllmv2::cpu::SelectMicrokernels();
  if (rows < 1 || rows > mk.few_rows_max || d < mk.width || d > 256 || d % mk.width != 0 || n < 1 || reps < 1) {
    std::fprintf(stderr, "%s takes 1-%d rows and d a multiple of %d up to 256\n", mk.isa, mk.few_rows_max, mk.width);
    return 2;
  }
  int64_t gw = 1;
  while (gw < rows) gw *= 2;
  std::vector<float> q(static_cast<size_t>(rows * d)), laid(static_cast<size_t>(mk.few_rows_max * d));
  std::vector<float> k(static_cast<size_t>(n * d)), out(static_cast<size_t>(n * gw));
  for (size_t i = 0; i < q.size(); ++i) q[i] = 0.01f * static_cast<float>(i % 97);
  for (size_t i = 0; i < k.size(); ++i) k[i] = 0.01f * static_cast<float>(i % 89);
  mk.few_rows_layout(q.data(), rows, d, laid.data());
  double best = 1e30;
  for (int round = 0; round < 7; ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r)
      mk.scores_few_rows(laid.data(), rows, k.data(), n, d, 1.0f, out.data(), gw, nullptr, 0);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
    if (s < best) best = s;
  }
  // The rows' multiply-adds in 512-bit FMAs (16 lanes), padding rows not counted.
  const double fmas = static_cast<double>(n) * rows * static_cast<double>(d) / 16.0;
  std::printf("%s: %d rows, d %lld, %d keys: %.2f us a call, %.2f G 16-lane FMAs/s of the rows' work\n", mk.isa, rows,
              static_cast<long long>(d), n, best * 1e6, fmas / best / 1e9);
  return 0;
}
