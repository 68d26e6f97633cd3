// Profiling plumbing of the CPU kernel (benchmarks only): wall time of its stages into a
// KernelProfile; free when no profile is given.
#pragma once

#include <chrono>
#include <vector>

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

// Profiling of a parallel phase whose items each run two parts: every item's time in each part,
// so that the phase's wall time can be split in proportion (StageTimer::MarkSplit). Free (no
// clock reads) when no profile is given.
class PartTimes {
 public:
  using Clock = std::chrono::steady_clock;
  PartTimes(const KernelProfile* p, size_t items) : ms_(p != nullptr ? 2 * items : 0, 0.0) {}
  Clock::time_point Now() const { return ms_.empty() ? Clock::time_point{} : Clock::now(); }
  // Item `item` ran its first part from `start` to `mid` and its second from `mid` to now.
  void Record(size_t item, Clock::time_point start, Clock::time_point mid) {
    if (ms_.empty()) return;
    ms_[2 * item] = std::chrono::duration<double, std::milli>(mid - start).count();
    ms_[2 * item + 1] = std::chrono::duration<double, std::milli>(Clock::now() - mid).count();
  }
  // The first part's share of all the items' time (0 when none was recorded).
  double FirstShare() const {
    double first = 0, second = 0;
    for (size_t i = 0; i < ms_.size(); i += 2) {
      first += ms_[i];
      second += ms_[i + 1];
    }
    return first + second > 0 ? first / (first + second) : 0.0;
  }

 private:
  std::vector<double> ms_;
};

}  // namespace infllmv2::cpu
