#include "ort/cuda_attention_op.h"

#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "common/check_inputs.h"
#include "common/float16.h"
#include "cuda/attention_cuda.h"

namespace infllmv2::ort {
namespace {

// Device scratch of one call from the kernel context's allocator for the device of `query`. The
// buffers go back when the call returns, after its kernels were enqueued and before they ran:
// ORT's device allocator hands memory out in stream order (the next user of a buffer is enqueued
// on the same compute stream, so it runs after these kernels); no host synchronization.
class CallScratch {
 public:
  CallScratch(OrtKernelContext* context, const OrtMemoryInfo* device) {
    Ort::ThrowOnError(Ort::GetApi().KernelContext_GetAllocator(context, device, &allocator_));
  }
  ~CallScratch() {
    for (void* p : buffers_) allocator_->Free(allocator_, p);
  }
  CallScratch(const CallScratch&) = delete;
  CallScratch& operator=(const CallScratch&) = delete;
  void* Get(size_t bytes) {
    void* p = allocator_->Alloc(allocator_, bytes);
    if (p != nullptr) buffers_.push_back(p);
    return p;
  }

 private:
  OrtAllocator* allocator_ = nullptr;
  std::vector<void*> buffers_;
};

}  // namespace

template <typename T>
OrtStatusPtr CudaKernel<T>::ComputeV2(OrtKernelContext* context) {
  return StatusOf([&]() -> std::string {
    Ort::KernelContext ctx(context);
    CallIo<T> io;
    // seqlens_k stays on the device: its pointer, never its values (the device plan decides).
    std::string err = ReadCall<T>(context, attrs, &io, SeqlensPlace::kDevice);
    if (!err.empty()) return err;
    const OrtMemoryInfo* device = nullptr;
    Ort::ThrowOnError(Ort::GetApi().GetTensorMemoryInfo(ctx.GetInput(kQuery), &device));
    CallScratch scratch(context, device);
    return cuda::RunAttention<T>(
        attrs, io.params, io.data, [&scratch](size_t bytes) { return scratch.Get(bytes); }, ctx.GetGPUComputeStream());
  });
}

template struct CudaOp<Float16>;
template struct CudaOp<BFloat16>;
template struct CudaKernel<Float16>;
template struct CudaKernel<BFloat16>;

}  // namespace infllmv2::ort
