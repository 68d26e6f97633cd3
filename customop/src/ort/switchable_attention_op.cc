#include "ort/switchable_attention_op.h"

#include <exception>
#include <functional>
#include <string>

#include "common/check_inputs.h"
#include "common/float16.h"
#include "cpu/attention_cpu.h"

namespace infllmv2::ort {
namespace {

template <typename T> constexpr ONNXTensorElementDataType ElementType();
template <> constexpr ONNXTensorElementDataType ElementType<float>() { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
template <> constexpr ONNXTensorElementDataType ElementType<Float16>() { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16; }

void TrampolineFor(void* fn, size_t i) { (*static_cast<const std::function<void(size_t)>*>(fn))(i); }

}  // namespace

template <typename T>
OrtStatusPtr CpuOp<T>::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
  try {
    auto k = std::make_unique<CpuKernel<T>>(api, info);
    const std::string err = CheckAttributes(k->attrs);
    if (!err.empty()) return Error(err);
    *kernel = k.release();
    return nullptr;
  } catch (const std::exception& e) {
    return Error(e.what(), ORT_RUNTIME_EXCEPTION);
  }
}

template <typename T>
OrtStatusPtr CpuKernel<T>::ComputeV2(OrtKernelContext* context) {
  try {
    Ort::KernelContext ctx(context);
    CallIo<T> io;
    const SeqlensReader on_host = [](const Ort::ConstValue& v, size_t) {
      return static_cast<const int32_t*>(v.GetTensorRawData());
    };
    std::string err = ReadCall<T>(context, attrs, on_host, &io);
    if (!err.empty()) return Error(err);
    cpu::ParallelFor pf = [&ctx](size_t total, const std::function<void(size_t)>& fn) {
      if (total == 1) {
        fn(0);
        return;
      }
      ctx.ParallelFor(&TrampolineFor, total, 0, const_cast<std::function<void(size_t)>*>(&fn));
    };
    err = cpu::RunAttention<T>(attrs, io.params, io.data, pf);
    if (!err.empty()) return Error(err);
    return nullptr;
  } catch (const Ort::Exception& e) {
    return Error(e.what(), e.GetOrtErrorCode());
  } catch (const std::exception& e) {
    return Error(e.what(), ORT_RUNTIME_EXCEPTION);
  }
}

template <typename T>
ONNXTensorElementDataType CpuOp<T>::GetInputType(size_t index) const {
  switch (index) {
    case kSeqlensK:
    case kTotalSequenceLength:
    case kAttentionMode:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    default:
      return ElementType<T>();
  }
}

template <typename T>
OrtCustomOpInputOutputCharacteristic CpuOp<T>::GetInputCharacteristic(size_t index) const {
  const bool required = index == kQuery || index == kSeqlensK || index == kTotalSequenceLength;
  return required ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
}

template <typename T>
ONNXTensorElementDataType CpuOp<T>::GetOutputType(size_t index) const {
  return index == kSelectedBlocks ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 : ElementType<T>();
}

template <typename T>
OrtCustomOpInputOutputCharacteristic CpuOp<T>::GetOutputCharacteristic(size_t index) const {
  return index <= kPresentValue ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
}

template struct CpuOp<float>;
template struct CpuOp<Float16>;
template struct CpuKernel<float>;
template struct CpuKernel<Float16>;

}  // namespace infllmv2::ort
