#include "cuda/emu/emulator.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

namespace infllmv2::emu {
namespace {

thread_local ThreadContext t_ctx;
std::mutex g_launch_mutex;  // __shared__ is static storage: one launch at a time per process
thread_local const char* t_launch_error = nullptr;
thread_local int t_fail_after = -1;
thread_local std::vector<dim3>* t_launch_log = nullptr;
thread_local std::vector<LaunchCounts>* t_count_log = nullptr;
thread_local const char* t_next_name = nullptr;

[[noreturn]] void Hang(const char* what) {
  const ThreadContext& c = t_ctx;
  std::fprintf(stderr,
               "CUDA emulator watchdog: %s waited more than %.0f s (block %u,%u,%u thread %u,%u,%u): a barrier not "
               "reached by every thread?\n",
               what, kWatchdogSeconds, c.block_idx.x, c.block_idx.y, c.block_idx.z, c.thread_idx.x, c.thread_idx.y,
               c.thread_idx.z);
  std::abort();
}

}  // namespace

ThreadContext& Ctx() { return t_ctx; }

void Barrier::ArriveAndWait(const char* what, const std::function<void()>& completion) {
  std::unique_lock<std::mutex> lock(mutex_);
  const uint64_t gen = generation_;
  if (++arrived_ == expected_) {
    if (completion) completion();
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
    return;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(kWatchdogSeconds);
  while (generation_ == gen)
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && generation_ == gen) Hang(what);
}

void Barrier::ArriveAndDrop() {
  std::lock_guard<std::mutex> lock(mutex_);
  --expected_;
  if (arrived_ > 0 && arrived_ == expected_) {
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
  }
}

void SyncThreads() { t_ctx.block_barrier->ArriveAndWait("__syncthreads"); }
void SyncWarp() { t_ctx.warp->barrier.ArriveAndWait("__syncwarp"); }

const uint32_t (*WarpExchange(const uint32_t* words, int count))[kSlotWords] {
  ThreadContext& c = t_ctx;
  auto& slots = c.warp->slots[c.phase];
  std::memcpy(slots[c.lane], words, sizeof(uint32_t) * static_cast<size_t>(count));
  c.warp->barrier.ArriveAndWait("warp collective");
  // The next collective writes the other phase; the one after it can only start once every lane
  // has passed the next barrier, i.e. finished reading this phase.
  c.phase ^= 1;
  return slots;
}

const char* TakeLaunchError() {
  const char* e = t_launch_error;
  t_launch_error = nullptr;
  return e;
}

void FailLaunchAfter(int skip) { t_fail_after = skip; }

void RecordLaunches(std::vector<dim3>* log) { t_launch_log = log; }

void RecordCounts(std::vector<LaunchCounts>* log) { t_count_log = log; }

void NameNextLaunch(const char* kernel) { t_next_name = kernel; }

void Launch(dim3 grid, dim3 block, const std::function<void()>& body) {
  const char* name = t_next_name;
  t_next_name = nullptr;
  if (t_fail_after >= 0 && t_fail_after-- == 0) {
    t_launch_error = "emulated launch failure";
    return;
  }
  if (t_launch_log != nullptr) t_launch_log->push_back(grid);
  const int threads = static_cast<int>(block.x * block.y * block.z);
  if (threads <= 0 || threads > 1024 || threads % kWarpSize != 0) {
    std::fprintf(stderr, "CUDA emulator: block of %d threads (need a multiple of 32, at most 1024)\n", threads);
    std::abort();
  }
  const uint64_t blocks = uint64_t{grid.x} * grid.y * grid.z;
  LiveCounts live;
  if (t_count_log != nullptr) {
    LaunchCounts c;
    c.kernel = name != nullptr ? name : "";
    c.grid = grid;
    c.block = block;
    c.ctas = blocks;
    t_count_log->push_back(c);
  }
  // Written into the log entry when the launch is over (the entry is found again by index: the
  // kernel body may not launch, but the vector is the caller's).
  struct Flush {
    std::vector<LaunchCounts>* log;
    size_t at;
    LiveCounts& live;
    ~Flush() {
      if (log == nullptr) return;
      LaunchCounts& c = (*log)[at];
      c.mma = live.mma.load();
      c.cp_async = live.cp_async.load();
      c.cp_async_bytes = live.cp_async_bytes.load();
      c.load_bytes = live.load_bytes.load();
      c.store_bytes = live.store_bytes.load();
    }
  } flush{t_count_log, t_count_log != nullptr ? t_count_log->size() - 1 : 0, live};
  if (blocks == 0) return;
  std::lock_guard<std::mutex> launch_lock(g_launch_mutex);
  const int warps = threads / kWarpSize;
  Barrier block_barrier;
  std::unique_ptr<Warp[]> warp_state(new Warp[static_cast<size_t>(warps)]);
  Barrier launch_barrier;  // between blocks: everyone finished the last one, state reset
  launch_barrier.Reset(threads);
  auto reset_block = [&] {
    block_barrier.Reset(threads);
    for (int w = 0; w < warps; ++w) warp_state[w].barrier.Reset(kWarpSize);
  };
  reset_block();
  auto run = [&](int linear) {
    ThreadContext& c = t_ctx;
    c.linear = linear;
    c.lane = linear % kWarpSize;
    c.warp = &warp_state[linear / kWarpSize];
    c.block_barrier = &block_barrier;
    c.block_dim = block;
    c.grid_dim = grid;
    c.counts = &live;
    c.thread_idx = dim3(static_cast<unsigned>(linear) % block.x, static_cast<unsigned>(linear) / block.x % block.y,
                        static_cast<unsigned>(linear) / (block.x * block.y));
    for (uint64_t i = 0; i < blocks; ++i) {
      c.block_idx = dim3(static_cast<unsigned>(i % grid.x), static_cast<unsigned>(i / grid.x % grid.y),
                         static_cast<unsigned>(i / (uint64_t{grid.x} * grid.y)));
      c.phase = 0;
      body();
      c.block_barrier->ArriveAndDrop();  // a returned thread no longer holds the others up
      c.warp->barrier.ArriveAndDrop();
      launch_barrier.ArriveAndWait("end of block", reset_block);
    }
    c = ThreadContext{};
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  for (int t = 1; t < threads; ++t) pool.emplace_back(run, t);
  run(0);
  for (auto& t : pool) t.join();
}

}  // namespace infllmv2::emu
