#include "ort/kernel_io.h"

#include <type_traits>
#include <vector>

#include "common/check_inputs.h"
#include "common/float16.h"

namespace infllmv2::ort {
namespace {

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

InputShape ShapeOf(const Ort::ConstValue& v) {
  InputShape s;
  if (v == nullptr) return s;
  s.present = true;
  s.dims = v.GetTensorTypeAndShapeInfo().GetShape();
  return s;
}

}  // namespace

OrtStatusPtr Error(const std::string& message, OrtErrorCode code) {
  return Ort::GetApi().CreateStatus(code, ("SwitchableAttention: " + message).c_str());
}

AttentionAttributes ReadAttributes(const OrtApi& api, const OrtKernelInfo* info) {
  const AttentionAttributes d;
  AttentionAttributes a;
  auto i64 = [&](const char* name, int64_t fallback) { return Attr<int64_t>(api, info, name, fallback); };
  auto f32 = [&](const char* name, float fallback) { return Attr<float>(api, info, name, fallback); };
  a.num_heads = i64("num_heads", 0);
  a.kv_num_heads = i64("kv_num_heads", 0);
  a.scale = f32("scale", d.scale);
  a.softcap = f32("softcap", d.softcap);
  a.do_rotary = i64("do_rotary", d.do_rotary);
  a.rotary_interleaved = i64("rotary_interleaved", d.rotary_interleaved);
  a.local_window_size = i64("local_window_size", d.local_window_size);
  a.block_size = i64("block_size", d.block_size);
  a.compress_kernel = i64("compress_kernel", d.compress_kernel);
  a.compress_stride = i64("compress_stride", d.compress_stride);
  a.init_blocks = i64("init_blocks", d.init_blocks);
  a.window_size = i64("window_size", d.window_size);
  a.topk = i64("topk", d.topk);
  a.dense_len = i64("dense_len", d.dense_len);
  a.lse_approx = i64("lse_approx", d.lse_approx);
  a.score_precision = i64("score_precision", d.score_precision);
  return a;
}

template <typename T>
std::string ReadCall(OrtKernelContext* context, const AttentionAttributes& attrs, CallIo<T>* io, SeqlensPlace place) {
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
  // Scalars (host memory on every EP) and seqlens_k are read only when their element count is
  // right; CheckInputs reports the shape otherwise.
  if (in.total_sequence_length.present &&
      input(kTotalSequenceLength).GetTensorTypeAndShapeInfo().GetElementCount() == 1)
    in.total_sequence_length_value = static_cast<const int32_t*>(input(kTotalSequenceLength).GetTensorRawData())[0];
  if (in.attention_mode.present && input(kAttentionMode).GetTensorTypeAndShapeInfo().GetElementCount() == 1)
    in.attention_mode_value = static_cast<const int32_t*>(input(kAttentionMode).GetTensorRawData())[0];
  const int32_t* seqlens = nullptr;
  if (in.seqlens_k.present && !in.query.dims.empty() && SeqlensShapeOk(in.seqlens_k, in.query.dims[0]))
    seqlens = static_cast<const int32_t*>(input(kSeqlensK).GetTensorRawData());
  if (place == SeqlensPlace::kHost) in.seqlens_k_data = seqlens;  // device values are not the host's to read

  AttentionParams& p = io->params;
  std::string err = CheckInputs(attrs, in, &p);
  if (!err.empty()) return err;
  if (seqlens == nullptr) return "Input 'seqlens_k' is unreadable";

  const OrtApi& api = Ort::GetApi();
  const size_t n_out = ctx.GetOutputCount();
  auto output = [&](size_t i, const std::vector<int64_t>& shape) -> void* {
    if (i >= n_out) return nullptr;
    OrtValue* v = nullptr;
    Ort::ThrowOnError(api.KernelContext_GetOutput(context, i, shape.data(), shape.size(), &v));
    if (v == nullptr) return nullptr;
    void* ptr = nullptr;
    Ort::ThrowOnError(api.GetTensorMutableData(v, &ptr));
    return ptr;
  };
  auto data = [&](size_t i) { return static_cast<const T*>(input(i).GetTensorRawData()); };
  const int64_t B = p.batch, S = p.seq_len, Hkv = p.kv_num_heads, D = p.head_size;
  AttentionData<T>& d = io->data;
  d.query = data(kQuery);
  if (in.key.present) {
    d.key = data(kKey);
    d.value = data(kValue);
  }
  if (in.past_key.present) {
    d.past_key = data(kPastKey);
    d.past_value = data(kPastValue);
  }
  d.seqlens_k = seqlens;
  if (in.cos_cache.present) {
    d.cos_cache = data(kCosCache);
    d.sin_cache = data(kSinCache);
  }
  if (in.past_compressed_key.present) d.past_compressed_key = data(kPastCompressedKey);
  d.output = static_cast<T*>(output(kOutput, {B, S, p.num_heads * D}));
  d.present_key = static_cast<T*>(output(kPresentKey, {B, Hkv, p.present_capacity, D}));
  d.present_value = static_cast<T*>(output(kPresentValue, {B, Hkv, p.present_capacity, D}));
  d.present_compressed_key = static_cast<T*>(output(kPresentCompressedKey, {B, Hkv, p.present_compressed_capacity, D}));
  d.selected_blocks = static_cast<int32_t*>(output(kSelectedBlocks, {B, Hkv, S, p.budget}));
  return "";
}

template std::string ReadCall<float>(OrtKernelContext*, const AttentionAttributes&, CallIo<float>*, SeqlensPlace);
template std::string ReadCall<Float16>(OrtKernelContext*, const AttentionAttributes&, CallIo<Float16>*, SeqlensPlace);
template std::string ReadCall<BFloat16>(OrtKernelContext*, const AttentionAttributes&, CallIo<BFloat16>*, SeqlensPlace);

}  // namespace infllmv2::ort
