// Scratch memory a calling thread keeps between calls of the kernel.
//
// A decode step at long context needs buffers of several hundred KiB (stage-1 scores: lanes x
// windows per (b, h)). glibc serves such a size with mmap, or from the heap top that free() then
// trims, so a fresh allocation per call is a fresh mapping: one page fault per 4 KiB on first
// write. At 128k tokens that was about 240 faults and a third of a millisecond per step, more than
// the scoring itself (docs/benchmarks.md, "Scratch kept between calls").
//
// ReusedScratch borrows a buffer the calling thread keeps in one of a few named slots and grows as
// needed, so that the pages stay mapped from one step to the next. Above kKeepLimit bytes, or when
// the slot is already borrowed on this thread, it owns a fresh buffer instead, freed with it. The
// memory is never shared between threads: each thread that calls the kernel holds its own, until
// it exits. Contents are not initialised: callers write before they read.
#pragma once

#include <array>
#include <cstddef>
#include <memory>

namespace infllmv2::cpu {

enum class ScratchSlot : int { kStage1Scores = 0, kCount };

template <typename T>
class ReusedScratch {
 public:
  // At most this much is kept per slot and thread between calls; larger buffers are per call.
  static constexpr size_t kKeepLimit = size_t{64} << 20;

  ReusedScratch(ScratchSlot slot, size_t count) {
    const size_t bytes = count * sizeof(T);
    Held& held = Slots()[static_cast<size_t>(slot)];
    if (held.borrowed || bytes > kKeepLimit) {
      owned_.reset(new T[count > 0 ? count : 1]);
      data_ = owned_.get();
      return;
    }
    if (held.count < count || !held.data) {
      held.data.reset();  // release the smaller one first: never both at once
      held.count = 0;
      held.data.reset(new T[count > 0 ? count : 1]);
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
  static std::array<Held, static_cast<size_t>(ScratchSlot::kCount)>& Slots() {
    thread_local std::array<Held, static_cast<size_t>(ScratchSlot::kCount)> slots;
    return slots;
  }

  Held* held_ = nullptr;
  std::unique_ptr<T[]> owned_;
  T* data_ = nullptr;
};

}  // namespace infllmv2::cpu
