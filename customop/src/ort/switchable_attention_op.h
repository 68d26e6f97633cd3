// ONNX Runtime glue of SwitchableAttention: schema (inputs, outputs, types), attribute reading,
// shape extraction and output allocation. The math lives in src/cpu (and later src/cuda).
#pragma once

#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

#include "infllmv2/attention_params.h"

namespace infllmv2::ort {

constexpr const char* kDomain = "com.infllmv2";
constexpr const char* kOpName = "SwitchableAttention";
constexpr size_t kNumInputs = 11;
constexpr size_t kNumOutputs = 5;

template <typename T>
struct CpuKernel {
  CpuKernel(const OrtApi& api, const OrtKernelInfo* info);
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
