// What every CUDA kernel of one call receives (by value): the call's rules and device buffers.
// Plain data, no ONNX Runtime types.
#pragma once

#include <cstdint>
#include <string>

#include "common/call_rules.h"
#include "cuda/primitives.h"
#include "infllmv2/attention_data.h"

namespace infllmv2::cuda {

#if defined(__CUDACC__)
using Stream = cudaStream_t;
#define IL_LAUNCH_ONLY(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#define IL_NAME_LAUNCH(name) ((void)0)  // the emulation's per-launch counts only
#define IL_LAUNCH_ONLY_SMEM(kernel, grid, block, smem, stream, ...) \
  kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
// Lets `kernel` use `bytes` of dynamic shared memory (above 48 KiB a kernel must opt in, per device
// context: done before every launch, which costs a host call and no stream work). Null or the error.
template <class K>
const char* AllowDynamicSmem(K* kernel, int bytes) {
  if (bytes <= 48 * 1024) return nullptr;
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}
// The calling host thread's launch-error slot, read (and cleared) right after a launch.
inline const char* TakeLaunchError() {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}
#else
using Stream = void*;
#define IL_LAUNCH_ONLY(kernel, grid, block, stream, ...) \
  ::infllmv2::emu::Launch((grid), (block), [&] { kernel(__VA_ARGS__); })
#define IL_NAME_LAUNCH(name) ::infllmv2::emu::NameNextLaunch(name)
#define IL_LAUNCH_ONLY_SMEM(kernel, grid, block, smem, stream, ...) \
  IL_LAUNCH_ONLY(kernel, grid, block, stream, __VA_ARGS__)
template <class K>
const char* AllowDynamicSmem(K*, int) {
  return nullptr;
}
inline const char* TakeLaunchError() { return ::infllmv2::emu::TakeLaunchError(); }
#endif

// Launches `kernel` on `stream`; a launch that failed returns its error, naming the kernel, from the
// calling function (which returns std::string).
#define IL_LAUNCH(name, kernel, grid, block, stream, ...)                               \
  do {                                                                                  \
    IL_NAME_LAUNCH(name);                                                               \
    IL_LAUNCH_ONLY(kernel, grid, block, stream, __VA_ARGS__);                           \
    if (const char* il_error_ = ::infllmv2::cuda::TakeLaunchError())                    \
      return std::string("CUDA kernel: ") + (name) + " failed to launch: " + il_error_; \
  } while (0)
// The same with `smem` bytes of dynamic shared memory.
#define IL_LAUNCH_SMEM(name, kernel, grid, block, smem, stream, ...)                                            \
  do {                                                                                                          \
    const char* il_error_ = ::infllmv2::cuda::AllowDynamicSmem(kernel, smem);                                   \
    if (il_error_ == nullptr) {                                                                                 \
      IL_NAME_LAUNCH(name);                                                                                     \
      IL_LAUNCH_ONLY_SMEM(kernel, grid, block, smem, stream, __VA_ARGS__);                                      \
      il_error_ = ::infllmv2::cuda::TakeLaunchError();                                                          \
    }                                                                                                           \
    if (il_error_ != nullptr) return std::string("CUDA kernel: ") + (name) + " failed to launch: " + il_error_; \
  } while (0)

// The call's rules and buffers (common/call_rules.h: CallBuffers, with its addressing) and what
// the driver adds: the query rows the kernels read, the scratch it chose, the key splits.
template <class T>
struct KernelArgs : CallBuffers<T> {
  const T* q = nullptr;    // query rows for attention and stage 1: d.query, or the rotated copy
  int q_heads = 0;         // heads per token in `q` (H + 2 Hkv when it is the packed input)
  T* comp = nullptr;       // level-1 compressed keys [B, Hkv, rules.compressed_capacity, D]
  int32_t* sel = nullptr;  // selection lists [B, Hkv, S, K] (the output, or scratch)
  // 1 = one CTA per (row tile, kv head, entry) over all of its keys; > 1 = the split-KV path
  // (split_kv.cuh) with this many key splits per such CTA. Chosen on the host.
  int kv_splits = 1;
};

// Rotary of element i of a head vector x (fp32 math on T inputs, GQA's convention as
// cpu::ApplyRotary): x0' = x0 c - x1 s, x1' = x1 c + x0 s for the pair (x0, x1) of i.
template <class T>
IL_DEVICE float RotaryElement(const T* x, int i, int rotary_dim, bool interleaved, const T* cos_row, const T* sin_row) {
  const float xi = ToF32(LoadGlobal(x + i));
  if (i >= rotary_dim) return xi;
  const int half = rotary_dim / 2;
  int j, partner;
  bool first;
  if (interleaved) {
    j = i / 2;
    first = (i % 2) == 0;
    partner = first ? i + 1 : i - 1;
  } else {
    j = i % half;
    first = i < half;
    partner = first ? i + half : i - half;
  }
  const float c = ToF32(LoadGlobal(cos_row + j)), s = ToF32(LoadGlobal(sin_row + j)),
              xp = ToF32(LoadGlobal(x + partner));
  // Explicit FMAs: nvcc would contract these multiply-adds in an order of its choosing; spelled out,
  // the host emulation rounds as the device does.
  return first ? Fma(xi, c, -(xp * s)) : Fma(xi, c, xp * s);
}

}  // namespace infllmv2::cuda
