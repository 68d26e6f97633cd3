// Host emulation of the CUDA execution model, for running the project's CUDA kernels on a machine
// without a GPU (the native tests, ./test.sh). Included only by primitives.h when the compiler is
// not nvcc. What it models:
//   - every CUDA thread of a block is a real std::thread, so a data race the kernel has on the GPU
//     (a missing __syncthreads) is a data race here, and ThreadSanitizer reports it;
//   - blocks run one at a time (the threads of a launch are reused block after block, separated
//     by a launch barrier), so `__shared__` memory is plain static storage (IL_SHARED = static);
//     launches are serialized by one process-wide mutex for the same reason;
//   - __syncthreads is a barrier over the block, __syncwarp and every warp-collective
//     (shuffles, ldmatrix, mma) a barrier over the warp: collectives exchange their operands through
//     a per-warp buffer (two alternating phases, so one barrier per collective suffices);
//   - a thread that returns counts as arrived at every later barrier (as on sm_70+);
//   - a watchdog: a barrier that waits longer than kWatchdogSeconds aborts with the stuck place
//     (a __syncthreads inside a branch not all threads take hangs on the GPU: here it fails).
// What it cannot show: asynchronous hazards (cp.async is a synchronous copy here), bank conflicts,
// occupancy, speed. Cost: about 50 us per 32-thread barrier round, so tests use small shapes.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace infllmv2::emu {

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3() = default;
  dim3(unsigned x_, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

constexpr double kWatchdogSeconds = 60.0;
constexpr int kWarpSize = 32;
constexpr int kSlotWords = 6;  // per lane and phase: mma posts A (4) + B (2) words

// A reusable barrier for a fixed number of participants (std::barrier is C++20). The last
// arriver runs `completion` (if any) before releasing the others.
class Barrier {
 public:
  void Reset(int count) {
    expected_ = count;
    arrived_ = 0;
  }
  void ArriveAndWait(const char* what, const std::function<void()>& completion = nullptr);
  void ArriveAndDrop();  // leaves for good (a returned thread)

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int expected_ = 0, arrived_ = 0;
  uint64_t generation_ = 0;
};

struct Warp {
  Barrier barrier;
  uint32_t slots[2][kWarpSize][kSlotWords];  // exchange buffer, two alternating phases
};

// The work of one launch, counted by the primitives (primitives.h, host branch) while it runs:
// the performance model's counts (docs/gpu-performance.md), checked by tests against its formulas.
struct LaunchCounts {
  std::string kernel;  // the name IL_LAUNCH gave (kernel_args.h); "" for a bare emu::Launch
  dim3 grid, block;
  uint64_t ctas = 0;            // blocks run
  uint64_t mma = 0;             // mma.sync m16n8k16, per warp (one per warp-wide instruction)
  uint64_t cp_async = 0;        // cp.async 16-byte copies issued (zero-filled ones included)
  uint64_t cp_async_bytes = 0;  // bytes they read from global memory (the src-size operand)
  uint64_t load_bytes = 0;      // LoadGlobal: bytes read from global memory outside cp.async
  uint64_t store_bytes = 0;     // StoreGlobal: bytes written to global memory
};

// The counters of the launch in progress (relaxed atomics: the emulated threads add concurrently).
struct LiveCounts {
  std::atomic<uint64_t> mma{0}, cp_async{0}, cp_async_bytes{0}, load_bytes{0}, store_bytes{0};
};

// The current thread's place in the launch (thread_local; valid inside a kernel body only).
struct ThreadContext {
  dim3 thread_idx, block_idx, block_dim, grid_dim;
  int linear = 0, lane = 0;
  Warp* warp = nullptr;
  Barrier* block_barrier = nullptr;
  int phase = 0;  // alternates per warp collective
  LiveCounts* counts = nullptr;
};
ThreadContext& Ctx();

// Runs `body` once per thread of every block of the grid (blocks in x, y, z order, one at a time).
// blockDim's thread count must be a multiple of 32 and at most 1024.
void Launch(dim3 grid, dim3 block, const std::function<void()>& body);

// The launch-error slot of the calling thread, as cudaGetLastError: the error of a launch that did
// not run (nullptr: none), cleared by the read.
const char* TakeLaunchError();
// Tests: the launch `skip` launches from now on this thread fails without running (-1: none).
void FailLaunchAfter(int skip);
// Tests: the grids of this thread's launches from now on are appended to `log` (nullptr: stop).
void RecordLaunches(std::vector<dim3>* log);

// Tests: this thread's launches from now on append their counts to `log` (nullptr: stop).
void RecordCounts(std::vector<LaunchCounts>* log);
// The name the next launch of this thread is recorded under (IL_LAUNCH sets it).
void NameNextLaunch(const char* kernel);

// Warp collective plumbing: posts `words` of this lane, waits for the warp, and returns the
// exchange buffer of this phase (lanes' posted words) for reading until the next collective.
const uint32_t (*WarpExchange(const uint32_t* words, int count))[kSlotWords];

void SyncThreads();
void SyncWarp();

}  // namespace infllmv2::emu
