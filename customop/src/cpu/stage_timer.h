// Profiling plumbing of the CPU kernel (benchmarks only): wall time of its stages into a
// KernelProfile; free when no profile is given.
#pragma once

#include <chrono>

#include "cpu/attention_cpu.h"

namespace infllmv2::cpu {

// Adds the time since the last mark to *slot when profiling.
class StageTimer {
 public:
  explicit StageTimer(KernelProfile* p) : p_(p), last_(std::chrono::steady_clock::now()) {}
  void Mark(double KernelProfile::*slot) {
    if (p_ == nullptr) return;
    const auto now = std::chrono::steady_clock::now();
    p_->*slot += std::chrono::duration<double, std::milli>(now - last_).count();
    last_ = now;
  }
  // The time since the last mark, `share` of it to `a` and the rest to `b`.
  void MarkSplit(double KernelProfile::*a, double KernelProfile::*b, double share) {
    if (p_ == nullptr) return;
    const auto now = std::chrono::steady_clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - last_).count();
    p_->*a += ms * share;
    p_->*b += ms * (1.0 - share);
    last_ = now;
  }

 private:
  KernelProfile* p_;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace infllmv2::cpu
