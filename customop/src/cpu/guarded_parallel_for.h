// A ParallelFor wrapper under which no exception crosses a work item: a host's thread pool (ORT's
// intra-op pool) must never see one, or the process dies while workers still call the loop body.
// The first error is recorded, the loop's remaining items return at once, and the error is
// rethrown on the calling thread once the loop has finished (so later stages never run).
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>

#include "cpu/attention_cpu.h"

namespace infllmv2::cpu {

class GuardedParallelFor {
 public:
  explicit GuardedParallelFor(const ParallelFor& pf) : pf_(pf) {}
  GuardedParallelFor(const GuardedParallelFor&) = delete;
  GuardedParallelFor& operator=(const GuardedParallelFor&) = delete;

  void operator()(size_t total, const std::function<void(size_t)>& fn) {
    pf_(total, [&](size_t i) {
      if (failed_.load(std::memory_order_relaxed)) return;
      try {
        fn(i);
      } catch (const std::bad_alloc&) {
        Record("out of memory");
      } catch (const std::exception& e) {
        Record(e.what());
      } catch (...) {
        Record("unknown exception");
      }
    });
    if (failed_.load()) throw std::runtime_error(error_);
  }
  // A ParallelFor that calls this object (which must outlive it).
  ParallelFor AsParallelFor() {
    return [this](size_t total, const std::function<void(size_t)>& fn) { (*this)(total, fn); };
  }

 private:
  void Record(const char* what) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!failed_.load()) error_ = what;
    failed_.store(true);
  }
  const ParallelFor& pf_;
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  std::string error_;
};

}  // namespace infllmv2::cpu
