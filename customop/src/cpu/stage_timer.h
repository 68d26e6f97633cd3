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
    if (p_ != nullptr) p_->*slot += Lap();
  }
  // The time since the last mark split over slots[i] by part i's share of `parts` (a phase that
  // recorded nothing: all of it to the first slot). A null slot's time is not added: it is returned,
  // for the caller to book.
  template <class Parts, size_t N>
  double MarkParts(double KernelProfile::*const (&slots)[N], const Parts& parts) {
    if (p_ == nullptr) return 0.0;
    const double ms = Lap();
    double given = 0, returned = 0;
    for (size_t i = 1; i < N; ++i) {
      const double part = ms * parts.Share(i);
      given += part;
      if (slots[i] != nullptr)
        p_->*slots[i] += part;
      else
        returned += part;
    }
    p_->*slots[0] += ms - given;
    return returned;
  }
  // The time since the last mark to `a`, less `ms_to_b` of it, which goes to `b`.
  void MarkMoving(double KernelProfile::*a, double KernelProfile::*b, double ms_to_b) {
    if (p_ == nullptr) return;
    const double ms = Lap();
    p_->*a += ms - ms_to_b;
    p_->*b += ms_to_b;
  }
  // The time since the last mark, `share` of it to `a` and the rest to `b`.
  void MarkSplit(double KernelProfile::*a, double KernelProfile::*b, double share) {
    if (p_ == nullptr) return;
    const double ms = Lap();
    p_->*a += ms * share;
    p_->*b += ms * (1.0 - share);
  }

 private:
  // Milliseconds since the last mark; the mark moves to now.
  double Lap() {
    const auto now = std::chrono::steady_clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - last_).count();
    last_ = now;
    return ms;
  }
  KernelProfile* p_;
  std::chrono::steady_clock::time_point last_;
};

// Profiling of a parallel phase whose items run several parts: every item's time in each part,
// so that the phase's wall time can be split in proportion (StageTimer::MarkSplit, MarkParts). Free
// (no clock reads) when no profile is given.
class PartTimes {
 public:
  using Clock = std::chrono::steady_clock;
  PartTimes(const KernelProfile* p, size_t items, size_t parts = 2)
      : parts_(parts), ms_(p != nullptr ? parts * items : 0, 0.0) {}
  Clock::time_point Now() const { return ms_.empty() ? Clock::time_point{} : Clock::now(); }
  // Item `item` spent [from, to) in part `part`.
  void Add(size_t item, size_t part, Clock::time_point from, Clock::time_point to) {
    if (!ms_.empty()) ms_[item * parts_ + part] += std::chrono::duration<double, std::milli>(to - from).count();
  }
  // Item `item` ran its first part from `start` to `mid` and its second from `mid` to now.
  void Record(size_t item, Clock::time_point start, Clock::time_point mid) {
    Add(item, 0, start, mid);
    Add(item, 1, mid, Now());
  }
  // Part `part`'s share of all the items' time (0 when none was recorded).
  double Share(size_t part) const {
    double mine = 0, all = 0;
    for (size_t i = 0; i < ms_.size(); ++i) {
      all += ms_[i];
      if (i % parts_ == part) mine += ms_[i];
    }
    return all > 0 ? mine / all : 0.0;
  }
  double FirstShare() const { return Share(0); }

 private:
  size_t parts_;
  std::vector<double> ms_;
};

}  // namespace infllmv2::cpu
