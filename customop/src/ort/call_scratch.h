// Device scratch of one call of the CUDA kernel, correct when Run() calls on several streams share
// one device allocator: each buffer comes from KernelContext_GetScratchBuffer, which allocates on
// the kernel's compute stream (ORT's stream-aware arena tags the chunk with that stream and gives
// it to another stream only after that stream waits on this one), so the buffers may go back when
// the call returns, after its kernels were enqueued and before they ran (docs/architecture.md).
// Plain C API; the API table is a parameter so that a test can pass its own.
#pragma once

#include <cstddef>
#include <vector>

#include "onnxruntime_c_api.h"

namespace infllmv2::ort {

class CallScratch {
 public:
  // `device`: the memory info of the call's device tensors.
  CallScratch(const OrtApi& api, OrtKernelContext* context, const OrtMemoryInfo* device)
      : api_(api), context_(context), device_(device) {}
  ~CallScratch() {
    if (allocator_ == nullptr) return;
    for (void* p : buffers_) allocator_->Free(allocator_, p);
    api_.ReleaseAllocator(allocator_);
  }
  CallScratch(const CallScratch&) = delete;
  CallScratch& operator=(const CallScratch&) = delete;

  // `bytes` of device memory until the call returns, or null on failure.
  void* Get(size_t bytes) {
    // The allocator that frees them (the same device allocator), taken before the first buffer.
    if (allocator_ == nullptr && !Ok(api_.KernelContext_GetAllocator(context_, device_, &allocator_))) return nullptr;
    void* p = nullptr;
    if (!Ok(api_.KernelContext_GetScratchBuffer(context_, device_, bytes, &p)) || p == nullptr) return nullptr;
    buffers_.push_back(p);
    return p;
  }

 private:
  bool Ok(OrtStatus* status) {
    if (status == nullptr) return true;
    api_.ReleaseStatus(status);
    return false;
  }

  const OrtApi& api_;
  OrtKernelContext* context_;
  const OrtMemoryInfo* device_;
  OrtAllocator* allocator_ = nullptr;
  std::vector<void*> buffers_;
};

}  // namespace infllmv2::ort
