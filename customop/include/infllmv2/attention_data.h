// The tensor pointers of one SwitchableAttention call (layouts as in docs/op-spec.md), shared by
// the ORT glue, the CPU kernel, the CUDA kernel and the tests. Optional ones may be null. Plain
// data only: no ONNX Runtime types; on CUDA the pointers are device memory except seqlens_k_host.
#pragma once

#include <cstdint>

namespace infllmv2 {

template <typename T>
struct AttentionData {
  const T* query = nullptr;                // [B, S, H*D] or packed [B, S, (H+2Hkv)*D]
  const T* key = nullptr;                  // [B, S, Hkv*D] (null when packed)
  const T* value = nullptr;                // [B, S, Hkv*D] (null when packed)
  const T* past_key = nullptr;             // [B, Hkv, P, D]
  const T* past_value = nullptr;           // [B, Hkv, P, D]
  const int32_t* seqlens_k = nullptr;      // [B] total - 1 (host memory on CPU)
  const T* cos_cache = nullptr;            // [max_position, rotary_dim / 2]
  const T* sin_cache = nullptr;            // [max_position, rotary_dim / 2]
  const T* past_compressed_key = nullptr;  // [B, Hkv, C, D]
  T* output = nullptr;                     // [B, S, H*D]
  T* present_key = nullptr;                // [B, Hkv, present_capacity, D] (may alias past_key)
  T* present_value = nullptr;              // [B, Hkv, present_capacity, D] (may alias past_value)
  T* present_compressed_key = nullptr;     // [B, Hkv, present_compressed_capacity, D] or null (may alias input 9)
  int32_t* selected_blocks = nullptr;      // [B, Hkv, S, K] or null
};

}  // namespace infllmv2
