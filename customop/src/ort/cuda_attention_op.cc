#include "ort/cuda_attention_op.h"

#include <exception>
#include <string>

#include "common/check_inputs.h"
#include "common/float16.h"
#include "cuda/attention_cuda.h"
#include "ort/call_scratch.h"

namespace infllmv2::ort {

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
    CallScratch scratch(Ort::GetApi(), context, device);
    return cuda::RunAttention<T>(
        attrs, io.params, io.data, [&scratch](size_t bytes) { return scratch.Get(bytes); }, ctx.GetGPUComputeStream());
  });
}

template struct CudaOp<Float16>;
template struct CudaOp<BFloat16>;
template struct CudaKernel<Float16>;
template struct CudaKernel<BFloat16>;

}  // namespace infllmv2::ort
