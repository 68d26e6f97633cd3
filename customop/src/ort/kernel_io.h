// The ORT side of one SwitchableAttention call, shared by every kernel class (CPU today, CUDA
// next): attribute reading at kernel creation, and per call the input shapes, the shared input
// check and the output allocation, ending in plain AttentionParams + AttentionData<T>. The only
// backend difference is where seqlens_k lives, so the caller supplies how to read it to the host.
#pragma once

#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

#include <functional>
#include <string>

#include "infllmv2/attention_data.h"
#include "infllmv2/attention_params.h"

namespace infllmv2::ort {

constexpr const char* kDomain = "com.infllmv2";
constexpr const char* kOpName = "SwitchableAttention";
constexpr size_t kNumInputs = 11;
constexpr size_t kNumOutputs = 5;

enum Input : size_t {
  kQuery = 0, kKey, kValue, kPastKey, kPastValue, kSeqlensK, kTotalSequenceLength, kCosCache, kSinCache,
  kPastCompressedKey, kAttentionMode
};
enum Output : size_t { kOutput = 0, kPresentKey, kPresentValue, kPresentCompressedKey, kSelectedBlocks };

// An ORT error status with the op's name in front of `message`.
OrtStatusPtr Error(const std::string& message, OrtErrorCode code = ORT_INVALID_ARGUMENT);

// Every attribute of the node, absent ones at their defaults (attention_params.h).
AttentionAttributes ReadAttributes(const OrtApi& api, const OrtKernelInfo* info);

// Pointer to the `count` int32 values of seqlens_k, or null when they cannot be read. kHost: host
// memory (the tensor itself on CPU); CheckInputs checks the values. kDevice: the device tensor
// itself (no copy, no synchronization): CheckInputs checks only its shape, the kernel decides per
// entry on the device.
using SeqlensReader = std::function<const int32_t*(const Ort::ConstValue& seqlens_k, size_t count)>;
enum class SeqlensPlace { kHost, kDevice };

// What a kernel needs to run one call.
template <typename T>
struct CallIo {
  AttentionParams params;
  AttentionData<T> data;  // seqlens_k: the reader's pointer (host or device, per SeqlensPlace)
};

// Reads the inputs, runs CheckInputs, allocates the outputs. Returns "" or the check's message.
template <typename T>
std::string ReadCall(OrtKernelContext* context, const AttentionAttributes& attrs, const SeqlensReader& read_seqlens,
                     CallIo<T>* io, SeqlensPlace place = SeqlensPlace::kHost);

}  // namespace infllmv2::ort
