// Scratch memory a calling thread keeps between calls of the kernel.
//
// A decode step at long context needs buffers of several hundred KiB (stage-1 scores: lanes x
// windows per (b, h)). glibc serves such a size with mmap, or from the heap top that free() then
// trims, so a fresh allocation per call is a fresh mapping: one page fault per 4 KiB on first
// write. At 128k tokens that was about 240 faults and a third of a millisecond per step, more than
// the scoring itself (docs/benchmarks.md, "Scratch kept between calls").
//
// ReusedScratch borrows the buffer the calling thread keeps (one per element type) and grows it as
// needed, so that the pages stay mapped from one step to the next. Above kKeepLimit bytes, or when
// the buffer is already borrowed on this thread, it owns a fresh buffer instead, freed with it. The
// memory is never shared between threads: each thread that calls the kernel holds its own, until
// it exits. Contents are not initialised: callers write before they read.
#pragma once

#include <cstddef>
#include <memory>

namespace infllmv2::cpu {

template <typename T>
class ReusedScratch {
 public:
  // At most this much is kept per thread between calls; larger buffers are per call.
  static constexpr size_t kKeepLimit = size_t{64} << 20;

  explicit ReusedScratch(size_t count) {
    Held& held = Kept();
    if (held.borrowed || count * sizeof(T) > kKeepLimit) {
      owned_ = Allocate(count);
      data_ = owned_.get();
      return;
    }
    if (!held.data || held.count < count) {
      held.data.reset();  // release the smaller one first: never both at once
      held.count = 0;
      held.data = Allocate(count);
      held.count = count;
    }
    held.borrowed = true;
    held_ = &held;
    data_ = held.data.get();
  }
  ~ReusedScratch() {
    if (held_) held_->borrowed = false;
  }
  ReusedScratch(const ReusedScratch&) = delete;
  ReusedScratch& operator=(const ReusedScratch&) = delete;

  T* data() const { return data_; }

 private:
  struct Held {
    std::unique_ptr<T[]> data;
    size_t count = 0;
    bool borrowed = false;
  };
  static Held& Kept() {
    thread_local Held held;
    return held;
  }
  static std::unique_ptr<T[]> Allocate(size_t count) { return std::unique_ptr<T[]>(new T[count > 0 ? count : 1]); }

  Held* held_ = nullptr;
  std::unique_ptr<T[]> owned_;
  T* data_ = nullptr;
};

}  // namespace infllmv2::cpu
