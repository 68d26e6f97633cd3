// ONNX Runtime registration of SwitchableAttention on the CUDA execution provider (fp16, bf16),
// mirroring CpuOp/CpuKernel: same domain, name, inputs, outputs and attributes. Inputs 6
// (total_sequence_length) and 10 (attention_mode) stay in host memory; everything else is on the
// device. Compiled only when nvcc is found (INFLLMV2_WITH_CUDA); the kernels are in src/cuda.
#pragma once

#include "infllmv2/attention_params.h"
#include "ort/kernel_io.h"
#include "ort/op_schema.h"

namespace infllmv2::ort {

template <typename T>
struct CudaKernel {
  CudaKernel(const OrtApi& api, const OrtKernelInfo* info) : attrs(ReadAttributes(api, info)) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
  AttentionAttributes attrs;
};

template <typename T>
struct CudaOp : SwitchableAttentionSchema<CudaOp<T>, CudaKernel<T>, T> {
  const char* GetExecutionProviderType() const { return "CUDAExecutionProvider"; }
  // total_sequence_length and attention_mode are read on the host (as ORT's own GQA does for input 6).
  OrtMemType GetInputMemoryType(size_t index) const {
    return index == kTotalSequenceLength || index == kAttentionMode ? OrtMemTypeCPUInput : OrtMemTypeDefault;
  }
};

}  // namespace infllmv2::ort
