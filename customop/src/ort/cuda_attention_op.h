// ONNX Runtime registration of SwitchableAttention on the CUDA execution provider (fp16, bf16),
// mirroring CpuOp/CpuKernel: same domain, name, inputs, outputs and attributes. Inputs 6
// (total_sequence_length) and 10 (attention_mode) stay in host memory; everything else is on the
// device. Compiled only when nvcc is found (INFLLMV2_WITH_CUDA); the kernels are in src/cuda.
#pragma once

#include "infllmv2/attention_params.h"
#include "ort/kernel_io.h"

namespace infllmv2::ort {

template <typename T>
struct CudaKernel {
  CudaKernel(const OrtApi& api, const OrtKernelInfo* info) : attrs(ReadAttributes(api, info)) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
  AttentionAttributes attrs;
};

template <typename T>
struct CudaOp : Ort::CustomOpBase<CudaOp<T>, CudaKernel<T>, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const { return kOpName; }
  const char* GetExecutionProviderType() const { return "CUDAExecutionProvider"; }
  size_t GetInputTypeCount() const { return kNumInputs; }
  ONNXTensorElementDataType GetInputType(size_t index) const;
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const;
  OrtMemType GetInputMemoryType(size_t index) const;
  size_t GetOutputTypeCount() const { return kNumOutputs; }
  ONNXTensorElementDataType GetOutputType(size_t index) const;
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t index) const;
};

}  // namespace infllmv2::ort
