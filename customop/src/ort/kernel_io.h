// The ORT side of one SwitchableAttention call, shared by the CPU and CUDA kernel classes:
// attribute reading at kernel creation, and per call the input shapes, the shared input check and
// the output allocation, ending in plain AttentionParams + AttentionData<T>. The only backend
// difference is where seqlens_k lives (host memory on CPU, device memory on CUDA).
#pragma once

#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

#include <exception>
#include <string>

#include "infllmv2/attention_data.h"
#include "infllmv2/attention_params.h"

namespace infllmv2::ort {

constexpr const char* kDomain = "com.infllmv2";
constexpr const char* kOpName = "SwitchableAttention";
constexpr size_t kNumInputs = 11;
constexpr size_t kNumOutputs = 5;

enum Input : size_t {
  kQuery = 0,
  kKey,
  kValue,
  kPastKey,
  kPastValue,
  kSeqlensK,
  kTotalSequenceLength,
  kCosCache,
  kSinCache,
  kPastCompressedKey,
  kAttentionMode
};
enum Output : size_t { kOutput = 0, kPresentKey, kPresentValue, kPresentCompressedKey, kSelectedBlocks };

// An ORT error status with the op's name in front of `message`.
OrtStatusPtr Error(const std::string& message, OrtErrorCode code = ORT_INVALID_ARGUMENT);

// Every attribute of the node, absent ones at their defaults (attention_params.h).
AttentionAttributes ReadAttributes(const OrtApi& api, const OrtKernelInfo* info);

// Where seqlens_k lives; the call's seqlens_k pointer is the tensor's own data either way (no copy,
// no synchronization). kHost (CPU): CheckInputs checks the values. kDevice: CheckInputs checks only
// the shape, the kernel decides per entry on the device.
enum class SeqlensPlace { kHost, kDevice };

// What a kernel needs to run one call.
template <typename T>
struct CallIo {
  AttentionParams params;
  AttentionData<T> data;  // seqlens_k: the tensor's data (host or device, per SeqlensPlace)
};

// Reads the inputs, runs CheckInputs, allocates the outputs. Returns "" or the check's message.
template <typename T>
std::string ReadCall(OrtKernelContext* context, const AttentionAttributes& attrs, CallIo<T>* io,
                     SeqlensPlace place = SeqlensPlace::kHost);

// A kernel's Compute: runs `body` (returning "" or an error message) and turns its message and any
// exception into an ORT status (an Ort::Exception keeps its code).
template <class Body>
OrtStatusPtr StatusOf(Body&& body) {
  try {
    const std::string err = body();
    return err.empty() ? nullptr : Error(err);
  } catch (const Ort::Exception& e) {
    return Error(e.what(), e.GetOrtErrorCode());
  } catch (const std::exception& e) {
    return Error(e.what(), ORT_RUNTIME_EXCEPTION);
  }
}

}  // namespace infllmv2::ort
