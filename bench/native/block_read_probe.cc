// How fast this machine reads blocks scattered over a large array, against reading it in order
// (docs/benchmarks.md, "What reading scattered blocks costs"). Not part of the op: the bound behind
// the read-roofline shares of sparse decode, which reads its selected 64-token blocks (8-48 KB of
// keys, the same of values) in no particular order, while the bench's read-bandwidth probe sums one
// array from start to end.
//   infllmv2_block_read_probe [BLOCK_BYTES] [ARRAY_MiB]   (defaults 24576, 256; every core)
// Three ways, each the fastest of 7 passes over the whole array, all blocks read once per pass:
//   in order          the blocks one after another (what the bench's probe does);
//   scattered         the blocks in a random order, hardware prefetch only;
//   scattered + sw    the same, the next block's lines prefetched while one is summed (as the kernel).
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

namespace {

enum class Order { kInOrder, kScattered, kScatteredPrefetched };

// Sums blocks [lo, hi) of `order` (block b at a + b * floats), 64 floats per step in four vectors.
float SumBlocks(const float* a, size_t floats, const std::vector<size_t>& order, size_t lo, size_t hi, bool prefetch) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  const size_t lines = floats * sizeof(float) / 64;
  for (size_t bi = lo; bi < hi; ++bi) {
    const float* p = a + order[bi] * floats;
    const char* next = prefetch && bi + 1 < hi ? reinterpret_cast<const char*>(a + order[bi + 1] * floats) : nullptr;
    size_t issued = 0;
    for (size_t i = 0; i + 32 <= floats; i += 32) {
      if (next != nullptr)  // the next block's lines at twice the pace this one is read
        for (int k = 0; k < 2 && issued < lines; ++k, ++issued) __builtin_prefetch(next + issued * 64, 0, 2);
      s0 = _mm256_add_ps(s0, _mm256_loadu_ps(p + i));
      s1 = _mm256_add_ps(s1, _mm256_loadu_ps(p + i + 8));
      s2 = _mm256_add_ps(s2, _mm256_loadu_ps(p + i + 16));
      s3 = _mm256_add_ps(s3, _mm256_loadu_ps(p + i + 24));
    }
  }
  alignas(32) float out[8];
  _mm256_store_ps(out, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  return std::accumulate(out, out + 8, 0.0f);
}

double GbPerSecond(const std::vector<float>& a, size_t block_bytes, Order how, unsigned threads) {
  const size_t floats = block_bytes / sizeof(float), blocks = a.size() / floats;
  std::vector<size_t> order(blocks);
  std::iota(order.begin(), order.end(), size_t{0});
  if (how != Order::kInOrder) std::shuffle(order.begin(), order.end(), std::mt19937(1));
  double best = 1e30;
  for (int pass = 0; pass < 7; ++pass) {
    std::vector<float> sums(threads);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        sums[t] = SumBlocks(a.data(), floats, order, t * blocks / threads, (t + 1) * blocks / threads,
                            how == Order::kScatteredPrefetched);
      });
    for (auto& th : pool) th.join();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (std::accumulate(sums.begin(), sums.end(), 0.0f) <= 0.0f) std::abort();  // the sums were computed
  }
  return static_cast<double>(blocks * block_bytes) / best / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  const long block_bytes = argc > 1 ? std::atol(argv[1]) : 24576;
  const long mib = argc > 2 ? std::atol(argv[2]) : 256;
  if (block_bytes < 128 || block_bytes % 128 != 0 || mib < 1 || mib > 16384 || block_bytes > (mib << 20)) {
    std::fprintf(stderr, "usage: %s [BLOCK_BYTES (a multiple of 128)] [ARRAY_MiB (1-16384)]\n", argv[0]);
    return 2;
  }
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<float> a(static_cast<size_t>(mib) << 18, 1.0f);  // every page touched before timing
  std::printf("block %ld bytes, array %ld MiB, %u threads, GB/s (fastest of 7 passes):\n", block_bytes, mib, threads);
  std::printf("  in order        %6.1f\n", GbPerSecond(a, block_bytes, Order::kInOrder, threads));
  std::printf("  scattered       %6.1f\n", GbPerSecond(a, block_bytes, Order::kScattered, threads));
  std::printf("  scattered + sw  %6.1f\n", GbPerSecond(a, block_bytes, Order::kScatteredPrefetched, threads));
  return 0;
}
