#include "ort/switchable_attention_op.h"

#include <exception>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "common/check_inputs.h"
#include "common/float16.h"
#include "cpu/attention_cpu.h"

namespace infllmv2::ort {
namespace {

enum Input : size_t {
  kQuery = 0, kKey, kValue, kPastKey, kPastValue, kSeqlensK, kTotalSequenceLength, kCosCache, kSinCache,
  kPastCompressedKey, kAttentionMode
};
enum Output : size_t { kOutput = 0, kPresentKey, kPresentValue, kPresentCompressedKey, kSelectedBlocks };

template <typename T> constexpr ONNXTensorElementDataType ElementType();
template <> constexpr ONNXTensorElementDataType ElementType<float>() { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
template <> constexpr ONNXTensorElementDataType ElementType<Float16>() { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16; }

OrtStatusPtr Error(const std::string& message, OrtErrorCode code = ORT_INVALID_ARGUMENT) {
  return Ort::GetApi().CreateStatus(code, ("SwitchableAttention: " + message).c_str());
}

// Optional attribute: returns the default when the node does not set it.
template <typename V>
V Attr(const OrtApi& api, const OrtKernelInfo* info, const char* name, V fallback) {
  V v{};
  OrtStatus* st;
  if constexpr (std::is_same_v<V, float>) {
    st = api.KernelInfoGetAttribute_float(info, name, &v);
  } else {
    st = api.KernelInfoGetAttribute_int64(info, name, &v);
  }
  if (st != nullptr) {
    api.ReleaseStatus(st);
    return fallback;
  }
  return v;
}
int64_t IntAttr(const OrtApi& api, const OrtKernelInfo* info, const char* name, int64_t fallback) {
  return Attr<int64_t>(api, info, name, fallback);
}
float FloatAttr(const OrtApi& api, const OrtKernelInfo* info, const char* name, float fallback) {
  return Attr<float>(api, info, name, fallback);
}

InputShape ShapeOf(const Ort::ConstValue& v) {
  InputShape s;
  if (v == nullptr) return s;
  s.present = true;
  s.dims = v.GetTensorTypeAndShapeInfo().GetShape();
  return s;
}

void TrampolineFor(void* fn, size_t i) { (*static_cast<const std::function<void(size_t)>*>(fn))(i); }

}  // namespace

template <typename T>
CpuKernel<T>::CpuKernel(const OrtApi& api, const OrtKernelInfo* info) {
  AttentionAttributes d;
  attrs.num_heads = IntAttr(api, info, "num_heads", 0);
  attrs.kv_num_heads = IntAttr(api, info, "kv_num_heads", 0);
  attrs.scale = FloatAttr(api, info, "scale", d.scale);
  attrs.softcap = FloatAttr(api, info, "softcap", d.softcap);
  attrs.do_rotary = IntAttr(api, info, "do_rotary", d.do_rotary);
  attrs.rotary_interleaved = IntAttr(api, info, "rotary_interleaved", d.rotary_interleaved);
  attrs.local_window_size = IntAttr(api, info, "local_window_size", d.local_window_size);
  attrs.block_size = IntAttr(api, info, "block_size", d.block_size);
  attrs.compress_kernel = IntAttr(api, info, "compress_kernel", d.compress_kernel);
  attrs.compress_stride = IntAttr(api, info, "compress_stride", d.compress_stride);
  attrs.init_blocks = IntAttr(api, info, "init_blocks", d.init_blocks);
  attrs.window_size = IntAttr(api, info, "window_size", d.window_size);
  attrs.topk = IntAttr(api, info, "topk", d.topk);
  attrs.dense_len = IntAttr(api, info, "dense_len", d.dense_len);
  attrs.lse_approx = IntAttr(api, info, "lse_approx", d.lse_approx);
}

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
    const size_t n_in = ctx.GetInputCount();
    auto input = [&](size_t i) { return i < n_in ? ctx.GetInput(i) : Ort::ConstValue{nullptr}; };

    AttentionInputs in;
    in.query = ShapeOf(input(kQuery));
    in.key = ShapeOf(input(kKey));
    in.value = ShapeOf(input(kValue));
    in.past_key = ShapeOf(input(kPastKey));
    in.past_value = ShapeOf(input(kPastValue));
    in.seqlens_k = ShapeOf(input(kSeqlensK));
    in.total_sequence_length = ShapeOf(input(kTotalSequenceLength));
    in.cos_cache = ShapeOf(input(kCosCache));
    in.sin_cache = ShapeOf(input(kSinCache));
    in.past_compressed_key = ShapeOf(input(kPastCompressedKey));
    in.attention_mode = ShapeOf(input(kAttentionMode));
    // Scalars and seqlens_k are read only when their element count is right; CheckInputs reports
    // the shape otherwise.
    if (in.total_sequence_length.present &&
        input(kTotalSequenceLength).GetTensorTypeAndShapeInfo().GetElementCount() == 1)
      in.total_sequence_length_value = static_cast<const int32_t*>(input(kTotalSequenceLength).GetTensorRawData())[0];
    if (in.attention_mode.present && input(kAttentionMode).GetTensorTypeAndShapeInfo().GetElementCount() == 1)
      in.attention_mode_value = static_cast<const int32_t*>(input(kAttentionMode).GetTensorRawData())[0];
    if (in.seqlens_k.present && !in.query.dims.empty() && SeqlensShapeOk(in.seqlens_k, in.query.dims[0]))
      in.seqlens_k_data = static_cast<const int32_t*>(input(kSeqlensK).GetTensorRawData());

    AttentionParams p;
    std::string err = CheckInputs(attrs, in, &p);
    if (!err.empty()) return Error(err);
    if (in.seqlens_k_data == nullptr) return Error("Input 'seqlens_k' is unreadable");

    const OrtApi& api = Ort::GetApi();
    const size_t n_out = ctx.GetOutputCount();
    auto output = [&](size_t i, const std::vector<int64_t>& shape) -> OrtValue* {
      if (i >= n_out) return nullptr;
      OrtValue* v = nullptr;
      Ort::ThrowOnError(api.KernelContext_GetOutput(context, i, shape.data(), shape.size(), &v));
      return v;
    };
    auto data_of = [&](OrtValue* v) -> void* {
      if (v == nullptr) return nullptr;
      void* ptr = nullptr;
      Ort::ThrowOnError(api.GetTensorMutableData(v, &ptr));
      return ptr;
    };
    const int64_t B = p.batch, S = p.seq_len, Hkv = p.kv_num_heads, D = p.head_size;
    AttentionData<T> d;
    d.query = static_cast<const T*>(input(kQuery).GetTensorRawData());
    if (in.key.present) {
      d.key = static_cast<const T*>(input(kKey).GetTensorRawData());
      d.value = static_cast<const T*>(input(kValue).GetTensorRawData());
    }
    if (in.past_key.present) {
      d.past_key = static_cast<const T*>(input(kPastKey).GetTensorRawData());
      d.past_value = static_cast<const T*>(input(kPastValue).GetTensorRawData());
    }
    d.seqlens_k = in.seqlens_k_data;
    if (in.cos_cache.present) {
      d.cos_cache = static_cast<const T*>(input(kCosCache).GetTensorRawData());
      d.sin_cache = static_cast<const T*>(input(kSinCache).GetTensorRawData());
    }
    if (in.past_compressed_key.present)
      d.past_compressed_key = static_cast<const T*>(input(kPastCompressedKey).GetTensorRawData());
    d.output = static_cast<T*>(data_of(output(kOutput, {B, S, p.num_heads * D})));
    d.present_key = static_cast<T*>(data_of(output(kPresentKey, {B, Hkv, p.present_capacity, D})));
    d.present_value = static_cast<T*>(data_of(output(kPresentValue, {B, Hkv, p.present_capacity, D})));
    d.present_compressed_key =
        static_cast<T*>(data_of(output(kPresentCompressedKey, {B, Hkv, p.present_compressed_capacity, D})));
    d.selected_blocks = static_cast<int32_t*>(data_of(output(kSelectedBlocks, {B, Hkv, S, p.budget})));

    cpu::ParallelFor pf = [&ctx](size_t total, const std::function<void(size_t)>& fn) {
      if (total == 1) {
        fn(0);
        return;
      }
      ctx.ParallelFor(&TrampolineFor, total, 0, const_cast<std::function<void(size_t)>*>(&fn));
    };
    err = cpu::RunAttention<T>(attrs, p, d, pf);
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
