// Stage split of one SwitchableAttention call on the CPU kernel (no ONNX Runtime): prepare,
// compression, selection, attention; median over repeats. Used by `infllmv2 bench`.
//   infllmv2_stage_bench decode|prefill LENGTH [--mode dense|sparse] [--repeat N] [--heads G] [--head-size D]
//                        [--kv-heads H] [--dtype fp32|fp16] [--cold] [--huge-pages] [--threads N]
// --threads N runs the kernel on N threads (default: every core).
// --huge-pages puts the decode caches (K, V, compressed keys) in 2 MiB-aligned buffers advised for
// transparent huge pages, as the session wrapper allocates them (Session/CacheTensor.cs).
// --cold reads 128 MiB before each timed call, so that the call finds none of its data in the
// caches (as in a model whose other layers ran in between).
// Prints one JSON object per run.
#include <immintrin.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "common/call_rules.h"
#include "common/check_inputs.h"
#include "common/float16.h"
#include "cpu/attention_cpu.h"
#include "cpu/microkernels.h"

using namespace infllmv2;

namespace {

// A persistent pool (like ORT's intra-op pool): workers wait for a job, take indices from a
// shared counter, and the caller works too. Like ORT's (session.intra_op.allow_spinning = 1, the
// default) waiting threads (idle workers, the caller at the end of a job) spin a while before they
// sleep, so that the stage split does not count thread wake-ups between parallel phases.
class Pool {
 public:
  explicit Pool(unsigned threads) {
    for (unsigned t = 1; t < threads; ++t) workers_.emplace_back([this] { Loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
  }
  void For(size_t total, const std::function<void(size_t)>& fn) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &fn;
      total_ = total;
      next_ = 0;
      active_ = workers_.size();
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    Work();
    for (int spin = 0; spin < kSpins && active_.load(std::memory_order_acquire) != 0; ++spin) __builtin_ia32_pause();
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return active_.load() == 0; });
  }

 private:
  void Work() {
    for (size_t i; (i = next_++) < total_;) (*fn_)(i);
  }
  void Loop() {
    uint64_t seen = 0;
    for (;;) {
      for (int spin = 0; spin < kSpins && generation_.load(std::memory_order_acquire) == seen; ++spin)
        __builtin_ia32_pause();
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || generation_.load() != seen; });
        if (stop_) return;
        seen = generation_.load();
      }
      Work();
      {
        std::lock_guard<std::mutex> lock(mu_);
        active_.fetch_sub(1, std::memory_order_release);
      }
      done_.notify_one();
    }
  }
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_;
  const std::function<void(size_t)>* fn_ = nullptr;
  std::atomic<size_t> next_{0};
  size_t total_ = 0;
  std::atomic<size_t> active_{0};
  static constexpr int kSpins = 200000;  // about 1-5 ms of pause instructions, then sleep
  std::atomic<uint64_t> generation_{0};  // changed under mu_, read by spinning workers without it
  bool stop_ = false;
};

unsigned g_threads = 0;  // --threads; 0: every core

unsigned Threads() { return g_threads > 0 ? g_threads : std::max(1u, std::thread::hardware_concurrency()); }

void PoolFor(size_t total, const std::function<void(size_t)>& fn) {
  if (total == 1 || Threads() == 1) {  // as the ORT glue does: no hand-off for a single item or thread
    for (size_t i = 0; i < total; ++i) fn(i);
    return;
  }
  static Pool pool(Threads());
  pool.For(total, fn);
}

// The fp32 multiply-add peak of this machine: a register-only loop of independent FMAs (12 chains,
// more than latency x ports on current cores) on every pool thread, at the widest width the
// kernels' dispatch uses; best of 5 tries (a try where one thread ran both halves is slow, not
// fast, so the best is the honest peak). Used as the floor of stage 1, which is dense multiply-adds.
template <int kWidth>
float FmaChains(long iters);

template <>
__attribute__((target("avx512f"))) float FmaChains<16>(long iters) {
  __m512 acc[12];
  for (int c = 0; c < 12; ++c) acc[c] = _mm512_set1_ps(1.0f + 0.01f * static_cast<float>(c));
  const __m512 m = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
  for (long i = 0; i < iters; ++i)
#pragma GCC unroll 12
    for (int c = 0; c < 12; ++c) acc[c] = _mm512_fmadd_ps(acc[c], m, b);
  float lanes[16];
  for (int c = 1; c < 12; ++c) acc[0] = _mm512_add_ps(acc[0], acc[c]);
  _mm512_storeu_ps(lanes, acc[0]);
  float sum = 0.0f;
  for (float x : lanes) sum += x;
  return sum;
}

template <>
__attribute__((target("avx2,fma"))) float FmaChains<8>(long iters) {
  __m256 acc[12];
  for (int c = 0; c < 12; ++c) acc[c] = _mm256_set1_ps(1.0f + 0.01f * static_cast<float>(c));
  const __m256 m = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-6f);
  for (long i = 0; i < iters; ++i)
#pragma GCC unroll 12
    for (int c = 0; c < 12; ++c) acc[c] = _mm256_fmadd_ps(acc[c], m, b);
  float lanes[8];
  for (int c = 1; c < 12; ++c) acc[0] = _mm256_add_ps(acc[0], acc[c]);
  _mm256_storeu_ps(lanes, acc[0]);
  float sum = 0.0f;
  for (float x : lanes) sum += x;
  return sum;
}

// GFLOP/s (2 per multiply-add) on all threads, or 0 where the kernels run without FMA vectors.
double FmaPeakGflops() {
  const std::string isa = cpu::SelectMicrokernels().isa;
  const int width = isa == "avx512" ? 16 : isa == "avx2" ? 8 : 0;
  if (width == 0) return 0.0;
  const unsigned threads = Threads();
  constexpr long kIters = 2000000;
  std::vector<float> sink(threads);
  double best = 0.0;
  for (int attempt = 0; attempt < 5; ++attempt) {
    const auto t0 = std::chrono::steady_clock::now();
    PoolFor(threads, [&](size_t t) { sink[t] = width == 16 ? FmaChains<16>(kIters) : FmaChains<8>(kIters); });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * width * 12 * kIters * threads / s / 1e9);
  }
  float sum = 0.0f;
  for (float x : sink) sum += x;
  return sum == sum ? best : 0.0;  // uses the results, so the loops stay
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

// A copy of `v` in a 2 MiB-aligned buffer advised for transparent huge pages (Linux), owned by `keep`.
template <typename T>
T* HugePageCopy(const std::vector<T>& v, std::vector<std::unique_ptr<void, void (*)(void*)>>& keep) {
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t bytes = (v.size() * sizeof(T) + kHuge - 1) / kHuge * kHuge;
  void* p = std::aligned_alloc(kHuge, bytes);
  if (p == nullptr) throw std::bad_alloc();
  keep.emplace_back(p, &std::free);
#if defined(__linux__)
  madvise(p, bytes, MADV_HUGEPAGE);
#endif
  std::memcpy(p, v.data(), v.size() * sizeof(T));
  return static_cast<T*>(p);
}

template <typename T>
int RunCase(const std::string& phase, int64_t length, const std::string& mode, int repeat, int64_t G, int64_t D,
            int64_t Hkv, bool cold, bool huge_pages) {
  const bool decode = phase == "decode";
  const int64_t S = decode ? 1 : length;
  AttentionAttributes a;
  a.num_heads = G * Hkv;
  a.kv_num_heads = Hkv;
  AttentionInputs in;
  in.query = {true, {1, S, G * Hkv * D}};
  in.key = in.value = {true, {1, S, Hkv * D}};
  const int64_t cap = length;
  const int64_t windows = NumWindows(cap, a.compress_kernel, a.compress_stride);
  if (decode) {
    in.past_key = in.past_value = {true, {1, Hkv, cap, D}};
    in.past_compressed_key = {true, {1, Hkv, windows, D}};  // explicit compressed state, as a session keeps it
  }
  std::vector<int32_t> seqlens{static_cast<int32_t>(length - 1)};
  in.seqlens_k = {true, {1}};
  in.seqlens_k_data = seqlens.data();
  in.total_sequence_length = {true, {}};
  in.total_sequence_length_value = static_cast<int32_t>(length);
  in.attention_mode = {true, {}};
  in.attention_mode_value = mode == "dense" ? 1 : 2;
  AttentionParams p;
  std::string err = CheckAttributes(a);
  if (err.empty()) err = CheckInputs(a, in, &p);
  if (!err.empty()) {
    std::fprintf(stderr, "%s\n", err.c_str());
    return 2;
  }

  std::mt19937 rng(7);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  auto rnd = [&](size_t n) {
    std::vector<T> v(n);
    for (auto& x : v) x = FromFloat<T>(n01(rng));
    return v;
  };
  auto q = rnd(S * G * Hkv * D), k = rnd(S * Hkv * D), v = rnd(S * Hkv * D);
  std::vector<T> cache_k = rnd(cap * Hkv * D), cache_v = rnd(cap * Hkv * D), out(S * G * Hkv * D);
  AttentionData<T> d;
  d.query = q.data();
  d.key = k.data();
  d.value = v.data();
  d.seqlens_k = seqlens.data();
  d.output = out.data();
  std::vector<T> present_k, present_v, compressed(static_cast<size_t>(windows * Hkv * D));
  std::vector<std::unique_ptr<void, void (*)(void*)>> huge;
  if (decode) {  // shared buffers, as a KV-cache owner runs decode
    d.past_key = d.present_key = huge_pages ? HugePageCopy(cache_k, huge) : cache_k.data();
    d.past_value = d.present_value = huge_pages ? HugePageCopy(cache_v, huge) : cache_v.data();
    // The state of the past windows: computed once by a first call without state.
    AttentionData<T> init = d;
    AttentionInputs in0 = in;
    in0.past_compressed_key = {};
    AttentionParams p0;
    CheckInputs(a, in0, &p0);
    init.present_compressed_key = compressed.data();
    err = cpu::RunAttention<T>(a, p0, init, PoolFor);
    if (!err.empty()) {
      std::fprintf(stderr, "%s\n", err.c_str());
      return 1;
    }
    d.past_compressed_key = d.present_compressed_key = huge_pages ? HugePageCopy(compressed, huge) : compressed.data();
  } else {
    present_k.resize(p.present_capacity * Hkv * D);
    present_v.resize(p.present_capacity * Hkv * D);
    d.present_key = present_k.data();
    d.present_value = present_v.data();
  }
  std::vector<double> prep, comp, sel, att, total, score, lse, group_sum, topk;
  std::vector<float> evictor(cold ? size_t{32} << 20 : 0, 1.0f);
  float evict_sum = 0.0f;
  for (int r = 0; r < repeat + 1; ++r) {
    if (cold) {  // on the pool's threads, so that its workers are awake (spinning) as in a model
      constexpr size_t kParts = 64;
      std::vector<float> sums(kParts, 0.0f);
      PoolFor(kParts, [&](size_t part) {
        const size_t per = evictor.size() / kParts;
        float sum = 0.0f;
        for (size_t i = part * per; i < (part + 1) * per; ++i) sum += evictor[i];
        sums[part] = sum;
      });
      for (float x : sums) evict_sum += x;
    }
    cpu::KernelProfile prof;
    const auto t0 = std::chrono::steady_clock::now();
    err = cpu::RunAttention<T>(a, p, d, PoolFor, &prof);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (!err.empty()) {
      std::fprintf(stderr, "%s\n", err.c_str());
      return 1;
    }
    if (r == 0) continue;  // warm-up
    prep.push_back(prof.prepare_ms);
    comp.push_back(prof.compress_ms);
    sel.push_back(prof.select_ms);
    att.push_back(prof.attend_ms);
    total.push_back(ms);
    score.push_back(prof.score_ms);
    lse.push_back(prof.lse_ms);
    group_sum.push_back(prof.group_sum_ms);
    topk.push_back(prof.topk_ms);
  }
  if (cold && !(evict_sum > 0.0f)) return 1;  // keeps the eviction reads
  // Floor of the selection of a decode step: stage 1 multiplies the G query heads with every
  // level-1 compressed key (level-2 scores are means of those), G * Hkv * N1 * D multiply-adds,
  // which no fp32 implementation does faster than at the FMA peak.
  const double stage1_madds = decode && mode == "sparse" ? static_cast<double>(G * Hkv * windows * D) : 0.0;
  const double peak_gflops = stage1_madds > 0 ? FmaPeakGflops() : 0.0;
  const double select_floor_ms = peak_gflops > 0 ? 2.0 * stage1_madds / (peak_gflops * 1e9) * 1e3 : 0.0;
  std::printf(
      "{\"phase\":\"%s\",\"dtype\":\"%s\",\"length\":%lld,\"kv_heads\":%lld,\"cold\":%s,\"mode\":\"%s\",\"isa\":\"%s\","
      "\"threads\":%u,\"prepare_ms\":%.4f,"
      "\"compress_ms\":%.4f,\"select_ms\":%.4f,\"attend_ms\":%.4f,\"total_ms\":%.4f,"
      "\"select_parts_ms\":{\"score\":%.4f,\"lse\":%.4f,\"group_sum\":%.4f,\"topk\":%.4f},"
      "\"stage1_madds\":%.0f,\"fma_peak_gflops\":%.1f,\"select_floor_ms\":%.4f}\n",
      phase.c_str(), std::is_same_v<T, float> ? "fp32" : "fp16", static_cast<long long>(length),
      static_cast<long long>(Hkv), cold ? "true" : "false", mode.c_str(), cpu::SelectMicrokernels().isa, Threads(),
      Median(prep), Median(comp), Median(sel), Median(att), Median(total), Median(score), Median(lse),
      Median(group_sum), Median(topk), stage1_madds, peak_gflops, select_floor_ms);
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: %s decode|prefill LENGTH [--mode dense|sparse] [--repeat N] [--heads G] [--head-size D] "
                 "[--kv-heads H] [--dtype fp32|fp16] [--cold] [--huge-pages] [--threads N]\n",
                 argv[0]);
    return 2;
  }
  const std::string phase = argv[1];
  const int64_t length = std::atoll(argv[2]);
  std::string mode = "sparse";
  int repeat = 5;
  int64_t G = 16, D = 128, Hkv = 1;  // G query heads per KV head
  bool cold = false, huge_pages = false;
  std::string dtype = "fp32";
  for (int i = 3; i < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--cold" || k == "--huge-pages") {
      (k == "--cold" ? cold : huge_pages) = true;
      --i;
      continue;
    }
    const std::string v = i + 1 < argc ? argv[i + 1] : "";
    if (k == "--mode")
      mode = v;
    else if (k == "--repeat")
      repeat = std::atoi(v.c_str());
    else if (k == "--heads")
      G = std::atoll(v.c_str());
    else if (k == "--head-size")
      D = std::atoll(v.c_str());
    else if (k == "--kv-heads")
      Hkv = std::atoll(v.c_str());
    else if (k == "--dtype")
      dtype = v;
    else if (k == "--threads")
      g_threads = static_cast<unsigned>(std::max(1, std::atoi(v.c_str())));
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "option %s needs a value\n", k.c_str());
      return 2;
    }
  }
  if ((phase != "decode" && phase != "prefill") || length < 1 || repeat < 1 || Hkv < 1 ||
      (mode != "dense" && mode != "sparse") || (dtype != "fp32" && dtype != "fp16")) {
    std::fprintf(stderr, "bad arguments\n");
    return 2;
  }
  return dtype == "fp16" ? RunCase<Float16>(phase, length, mode, repeat, G, D, Hkv, cold, huge_pages)
                         : RunCase<float>(phase, length, mode, repeat, G, D, Hkv, cold, huge_pages);
}
