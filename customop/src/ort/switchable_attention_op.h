// ONNX Runtime registration of SwitchableAttention on the CPU execution provider: the schema
// (inputs, outputs, types) and the kernel class. Input reading, checking and output allocation
// are in kernel_io.h (shared with the coming CUDA kernel class); the math lives in src/cpu.
#pragma once

#include "infllmv2/attention_params.h"
#include "ort/kernel_io.h"

namespace infllmv2::ort {

template <typename T>
struct CpuKernel {
  CpuKernel(const OrtApi& api, const OrtKernelInfo* info) : attrs(ReadAttributes(api, info)) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
  AttentionAttributes attrs;
};

template <typename T>
struct CpuOp : Ort::CustomOpBase<CpuOp<T>, CpuKernel<T>, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const { return kOpName; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return kNumInputs; }
  ONNXTensorElementDataType GetInputType(size_t index) const;
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const;
  size_t GetOutputTypeCount() const { return kNumOutputs; }
  ONNXTensorElementDataType GetOutputType(size_t index) const;
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t index) const;
};

}  // namespace infllmv2::ort
