// ONNX Runtime registration of SwitchableAttention on the CPU execution provider: the schema
// (inputs, outputs, types) and the kernel class. Input reading, checking and output allocation
// are in kernel_io.h (shared with the coming CUDA kernel class); the math lives in src/cpu.
#pragma once

#include "infllmv2/attention_params.h"
#include "ort/kernel_io.h"
#include "ort/op_schema.h"

namespace infllmv2::ort {

template <typename T>
struct CpuKernel {
  CpuKernel(const OrtApi& api, const OrtKernelInfo* info) : attrs(ReadAttributes(api, info)) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
  AttentionAttributes attrs;
};

template <typename T>
struct CpuOp : SwitchableAttentionSchema<CpuOp<T>, CpuKernel<T>, T> {
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
};

}  // namespace infllmv2::ort
