// One macro for functions that run on the host and on the device: under nvcc __host__ __device__,
// under a host compiler plain inline. Used by the per-call rules (common/call_rules.h) and the
// CUDA kernels (cuda/primitives.h), so one definition serves the CPU kernel, the CUDA kernels and
// their host emulation.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define IL_HD __host__ __device__ __forceinline__
#else
#define IL_HD inline
#endif

namespace infllmv2 {

// The IEEE bits of a float.
IL_HD uint32_t FloatBits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

// The float with IEEE bits `u`.
IL_HD float FloatOfBits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

// A quiet NaN (the result of rows whose inputs the device finds invalid).
IL_HD float QuietNaN() { return FloatOfBits(0x7fc00000u); }

}  // namespace infllmv2
