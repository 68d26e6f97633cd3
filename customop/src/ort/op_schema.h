// The ORT schema of SwitchableAttention (docs/op-spec.md: inputs, outputs, their element types and
// which are optional), written once for every execution provider's op class: CpuOp and CudaOp
// derive from it and add only their provider name (and, on CUDA, the host-memory inputs).
#pragma once

#include <exception>
#include <memory>
#include <string>

#include "common/check_inputs.h"
#include "common/float16.h"
#include "ort/kernel_io.h"

namespace infllmv2::ort {

template <typename T>
constexpr ONNXTensorElementDataType ElementType();
template <>
constexpr ONNXTensorElementDataType ElementType<float>() {
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
template <>
constexpr ONNXTensorElementDataType ElementType<Float16>() {
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
}
template <>
constexpr ONNXTensorElementDataType ElementType<BFloat16>() {
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
}

// Op: the provider's op class (CRTP); Kernel: its kernel class (constructed from the node's
// attributes, which CheckAttributes validates before the session uses it); T: the element type.
template <typename Op, typename Kernel, typename T>
struct SwitchableAttentionSchema : Ort::CustomOpBase<Op, Kernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
    try {
      auto k = std::make_unique<Kernel>(api, info);
      const std::string err = CheckAttributes(k->attrs);
      if (!err.empty()) return Error(err);
      *kernel = k.release();
      return nullptr;
    } catch (const std::exception& e) {
      return Error(e.what(), ORT_RUNTIME_EXCEPTION);
    }
  }
  const char* GetName() const { return kOpName; }
  size_t GetInputTypeCount() const { return kNumInputs; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    const bool int32 = index == kSeqlensK || index == kTotalSequenceLength || index == kAttentionMode;
    return int32 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 : ElementType<T>();
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    const bool required = index == kQuery || index == kSeqlensK || index == kTotalSequenceLength;
    return required ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
  size_t GetOutputTypeCount() const { return kNumOutputs; }
  ONNXTensorElementDataType GetOutputType(size_t index) const {
    return index == kSelectedBlocks ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 : ElementType<T>();
  }
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t index) const {
    return index <= kPresentValue ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
};

}  // namespace infllmv2::ort
