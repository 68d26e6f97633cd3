// The one primitives header of the CUDA kernels. Under nvcc: the real intrinsics and inline PTX
// (sm_80+: mma.sync m16n8k16, ldmatrix, cp.async). Under a host C++ compiler: the project's host
// emulation of the CUDA execution model (emu/emulator.h), with the same names, so that one kernel
// source compiles both ways and runs in the native tests without a GPU.
//
// Kernel code uses only what is here (plus plain C++ arithmetic):
//   IL_GLOBAL / IL_DEVICE / IL_SHARED               kernel, device function, __shared__
//   IL_LAUNCH_BOUNDS(threads, min_ctas)             __launch_bounds__ (nothing on the host)
//   IL_UNROLL                                       #pragma unroll (nothing on the host)
//   IL_DYNAMIC_SHARED(name, bytes)                  extern __shared__ unsigned char name[] (16-byte
//                                                   aligned; on the host a static array of `bytes`)
//   IL_HD (common/host_device.h)                   host and device
//   threadIdx, blockIdx, blockDim, gridDim          as in CUDA
//   SyncThreads(), SyncWarp(), ShflXor(), Shfl()    full-warp collectives (mask 0xffffffff)
//   LdMatrixX4(r, p) / LdMatrixX4Trans(r, p)        ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16
//   Mma16816<T>(d, a, b, c)                          mma.sync.aligned.m16n8k16.row.col.f32.T.T.f32
//   CpAsync16(dst, src, bytes), CpAsyncCommit(), CpAsyncWait<N>()
//   LoadGlobal(p), StoreGlobal(p, v)                 a global load / store of one 2..16-byte value
// The host emulation counts, per launch, what these move and compute (emu::LaunchCounts: mma per
// warp, cp.async copies and their source bytes, LoadGlobal / StoreGlobal bytes); the device build
// compiles them to the plain instructions.
//   ToF32(x), FromF32<T>(f), Pack2<T>(lo, hi)       Float16 / BFloat16 (common/float16.h) <-> float
//   Exp2, Exp, Log, Tanh, kInf                      math
//   Fma(a, b, c)                                    a * b + c, one rounding (device and host alike)
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16" and "ldmatrix"); g = lane / 4,
// t = lane % 4; 16-bit pairs are packed low element first in a 32-bit register:
//   A (16x16): a[0] = (g, 2t..2t+1), a[1] = (g+8, 2t..), a[2] = (g, 2t+8..), a[3] = (g+8, 2t+8..)
//   B (16x8, k x n): b[0] = (k 2t..2t+1, n g), b[1] = (k 2t+8..2t+9, n g)
//   C/D (16x8 f32): d[0..1] = (g, 2t..2t+1), d[2..3] = (g+8, 2t..2t+1)
//   ldmatrix x4: lanes 8j..8j+7 address the rows of matrix j; lane l gets in r[j] row l/4,
//   columns 2(l%4)..+1 of matrix j (.trans: rows 2(l%4)..+1 of column l/4).
#pragma once

#include <cstdint>

#include "common/float16.h"
#include "common/host_device.h"

#if defined(__CUDACC__)

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define IL_GLOBAL __global__
#define IL_DEVICE __device__ __forceinline__
#define IL_SHARED __shared__
#define IL_LAUNCH_BOUNDS(threads, min_ctas) __launch_bounds__(threads, min_ctas)
#define IL_UNROLL _Pragma("unroll")
#define IL_DYNAMIC_SHARED(name, bytes) extern __shared__ __align__(16) unsigned char name[]

namespace infllmv2::cuda {

IL_DEVICE void SyncThreads() { __syncthreads(); }
IL_DEVICE void SyncWarp() { __syncwarp(); }
IL_DEVICE float ShflXor(float v, int mask) { return __shfl_xor_sync(0xffffffffu, v, mask); }
IL_DEVICE int ShflXor(int v, int mask) { return __shfl_xor_sync(0xffffffffu, v, mask); }
IL_DEVICE float Shfl(float v, int lane) { return __shfl_sync(0xffffffffu, v, lane); }
IL_DEVICE int Shfl(int v, int lane) { return __shfl_sync(0xffffffffu, v, lane); }

IL_DEVICE float ToF32(Float16 x) { return __half2float(__ushort_as_half(x.bits)); }
IL_DEVICE float ToF32(BFloat16 x) { return __uint_as_float(static_cast<uint32_t>(x.bits) << 16); }
template <class T>
IL_DEVICE T FromF32(float f);
template <>
IL_DEVICE Float16 FromF32<Float16>(float f) {
  return Float16{__half_as_ushort(__float2half_rn(f))};
}
template <>
IL_DEVICE BFloat16 FromF32<BFloat16>(float f) {
  return BFloat16{__bfloat16_as_ushort(__float2bfloat16_rn(f))};
}
template <class T>
IL_DEVICE uint32_t Pack2(float lo, float hi) {
  return static_cast<uint32_t>(FromF32<T>(lo).bits) | (static_cast<uint32_t>(FromF32<T>(hi).bits) << 16);
}

IL_DEVICE uint32_t SharedAddress(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

IL_DEVICE void LdMatrixX4(uint32_t r[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(row)));
}
IL_DEVICE void LdMatrixX4Trans(uint32_t r[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(row)));
}

template <class T>
IL_DEVICE void Mma16816(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]);
template <>
IL_DEVICE void Mma16816<Float16>(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
template <>
IL_DEVICE void Mma16816<BFloat16>(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

// 16 bytes global -> shared, bypassing L1; bytes < 16 zero-fills the rest (0: all zeros).
IL_DEVICE void CpAsync16(void* dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SharedAddress(dst)), "l"(src), "r"(bytes));
}
IL_DEVICE void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <class V>
IL_DEVICE V LoadGlobal(const V* p) {
  return *p;
}
template <class V>
IL_DEVICE void StoreGlobal(V* p, V v) {
  *p = v;
}
template <int N>
IL_DEVICE void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

IL_DEVICE float Fma(float a, float b, float c) { return __fmaf_rn(a, b, c); }
IL_DEVICE float Exp2(float x) { return exp2f(x); }
IL_DEVICE float Exp(float x) { return expf(x); }
IL_DEVICE float Log(float x) { return logf(x); }
IL_DEVICE float Tanh(float x) { return tanhf(x); }
constexpr float kInf = __builtin_huge_valf();

}  // namespace infllmv2::cuda

#else  // host emulation

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "cuda/emu/emulator.h"

#define IL_GLOBAL
#define IL_DEVICE inline
#define IL_SHARED static
#define IL_LAUNCH_BOUNDS(threads, min_ctas)
#define IL_UNROLL
#define IL_DYNAMIC_SHARED(name, bytes) alignas(16) static unsigned char name[bytes]
#define threadIdx (::infllmv2::emu::Ctx().thread_idx)
#define blockIdx (::infllmv2::emu::Ctx().block_idx)
#define blockDim (::infllmv2::emu::Ctx().block_dim)
#define gridDim (::infllmv2::emu::Ctx().grid_dim)

namespace infllmv2::cuda {

using emu::dim3;
inline void SyncThreads() { emu::SyncThreads(); }
inline void SyncWarp() { emu::SyncWarp(); }

template <class V>
inline V ShflSource(V v, int src_of_lane_xor, bool is_xor) {
  static_assert(sizeof(V) == 4, "32-bit shuffles only");
  uint32_t w;
  std::memcpy(&w, &v, 4);
  const auto slots = emu::WarpExchange(&w, 1);
  const int lane = emu::Ctx().lane;
  const int src = is_xor ? (lane ^ src_of_lane_xor) : src_of_lane_xor;
  V out;
  std::memcpy(&out, &slots[src & (emu::kWarpSize - 1)][0], 4);
  return out;
}
inline float ShflXor(float v, int mask) { return ShflSource(v, mask, true); }
inline int ShflXor(int v, int mask) { return ShflSource(v, mask, true); }
inline float Shfl(float v, int lane) { return ShflSource(v, lane, false); }
inline int Shfl(int v, int lane) { return ShflSource(v, lane, false); }

inline float ToF32(Float16 x) { return ToFloat(x); }
inline float ToF32(BFloat16 x) { return ToFloat(x); }
template <class T>
inline T FromF32(float f) {
  return FromFloat<T>(f);
}
template <class T>
inline uint32_t Pack2(float lo, float hi) {
  return static_cast<uint32_t>(FromF32<T>(lo).bits) | (static_cast<uint32_t>(FromF32<T>(hi).bits) << 16);
}

namespace detail {
// The hardware faults on a misaligned cp.async or ldmatrix address (misaligned address error): so
// does the emulation, naming the instruction, so a host test catches the misuse.
inline void RequireAligned16(const void* p, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 16 == 0) return;
  std::fprintf(stderr, "CUDA emulator: %s address %p is not 16-byte aligned\n", what, p);
  std::abort();
}

// Every lane posts its row address; lane l then reads, for matrix j, the pair the layout gives it.
inline void LdMatrix(uint32_t r[4], const void* row, bool trans) {
  RequireAligned16(row, trans ? "ldmatrix.trans row" : "ldmatrix row");
  uint32_t words[2];
  const auto addr = reinterpret_cast<uintptr_t>(row);
  words[0] = static_cast<uint32_t>(addr);
  words[1] = static_cast<uint32_t>(static_cast<uint64_t>(addr) >> 32);
  const auto slots = emu::WarpExchange(words, 2);
  auto row_of = [&](int lane) {
    return reinterpret_cast<const uint16_t*>(static_cast<uintptr_t>(slots[lane][0] | (uint64_t{slots[lane][1]} << 32)));
  };
  const int l = emu::Ctx().lane;
  for (int j = 0; j < 4; ++j) {
    uint16_t lo, hi;
    if (!trans) {
      const uint16_t* p = row_of(8 * j + l / 4);
      lo = p[2 * (l % 4)];
      hi = p[2 * (l % 4) + 1];
    } else {
      lo = row_of(8 * j + 2 * (l % 4))[l / 4];
      hi = row_of(8 * j + 2 * (l % 4) + 1)[l / 4];
    }
    r[j] = uint32_t{lo} | (uint32_t{hi} << 16);
  }
}
inline float Half(uint32_t w, int hi, Float16) { return ToFloat(Float16{static_cast<uint16_t>(hi ? w >> 16 : w)}); }
inline float Half(uint32_t w, int hi, BFloat16) { return ToFloat(BFloat16{static_cast<uint16_t>(hi ? w >> 16 : w)}); }
}  // namespace detail

inline void LdMatrixX4(uint32_t r[4], const void* row) { detail::LdMatrix(r, row, false); }
inline void LdMatrixX4Trans(uint32_t r[4], const void* row) { detail::LdMatrix(r, row, true); }

// Every lane posts its A and B registers; each lane then rebuilds the 16x16 A and 16x8 B tiles
// from the layout tables and computes its own four D elements (fp32, k in order, from C).
template <class T>
inline void Mma16816(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  uint32_t words[6];
  std::memcpy(words, a, 16);
  std::memcpy(words + 4, b, 8);
  const auto slots = emu::WarpExchange(words, 6);
  auto A = [&](int row, int col) {  // A fragment table, inverted
    const int g = row % 8, t = (col % 8) / 2, reg = (row / 8) + 2 * (col / 8);
    return detail::Half(slots[4 * g + t][reg], col % 2, T{});
  };
  auto B = [&](int k, int n) {
    const int t = (k % 8) / 2, reg = k / 8;
    return detail::Half(slots[4 * n + t][4 + reg], k % 2, T{});
  };
  const int l = emu::Ctx().lane, g = l / 4, t = l % 4;
  if (l == 0 && emu::Ctx().counts != nullptr) emu::Ctx().counts->mma.fetch_add(1, std::memory_order_relaxed);
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
    float acc = c[i];
    for (int k = 0; k < 16; ++k) acc = std::fma(A(row, k), B(k, col), acc);
    d[i] = acc;
  }
}

inline void CpAsync16(void* dst, const void* src, int bytes) {
  detail::RequireAligned16(dst, "cp.async shared destination");
  detail::RequireAligned16(src, "cp.async global source");
  bytes = bytes < 0 ? 0 : bytes > 16 ? 16 : bytes;
  if (emu::LiveCounts* n = emu::Ctx().counts) {
    n->cp_async.fetch_add(1, std::memory_order_relaxed);
    n->cp_async_bytes.fetch_add(static_cast<uint64_t>(bytes), std::memory_order_relaxed);
  }
  if (bytes > 0) std::memcpy(dst, src, static_cast<size_t>(bytes));
  if (bytes < 16) std::memset(static_cast<char*>(dst) + bytes, 0, static_cast<size_t>(16 - bytes));
}
inline void CpAsyncCommit() {}
template <class V>
inline V LoadGlobal(const V* p) {
  static_assert(sizeof(V) >= 2 && sizeof(V) <= 16, "one 2..16-byte access");
  if (emu::LiveCounts* n = emu::Ctx().counts) n->load_bytes.fetch_add(sizeof(V), std::memory_order_relaxed);
  return *p;
}
template <class V>
inline void StoreGlobal(V* p, V v) {
  static_assert(sizeof(V) >= 2 && sizeof(V) <= 16, "one 2..16-byte access");
  if (emu::LiveCounts* n = emu::Ctx().counts) n->store_bytes.fetch_add(sizeof(V), std::memory_order_relaxed);
  *p = v;
}
template <int N>
inline void CpAsyncWait() {}

inline float Fma(float a, float b, float c) { return std::fma(a, b, c); }
inline float Exp2(float x) { return std::exp2(x); }
inline float Exp(float x) { return std::exp(x); }
inline float Log(float x) { return std::log(x); }
inline float Tanh(float x) { return std::tanh(x); }
constexpr float kInf = std::numeric_limits<float>::infinity();

}  // namespace infllmv2::cuda

#endif
