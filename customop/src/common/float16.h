// IEEE half and bfloat16 storage types with float conversion (round to nearest even).
// Plain C++ so that kernels and tests share one definition; no ONNX Runtime types.
#pragma once

#include <cstdint>
#include <cstring>

namespace infllmv2 {

struct Float16 {
  uint16_t bits;
};

// bfloat16: the upper 16 bits of an IEEE float (CUDA kernels only; the CPU kernel has no bf16).
struct BFloat16 {
  uint16_t bits;
};

inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t FloatToBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float ToFloat(float x) { return x; }
inline float ToFloat(Float16 h) {
  const uint32_t sign = uint32_t{h.bits & 0x8000u} << 16;
  const uint32_t exp = (h.bits >> 10) & 0x1fu;
  uint32_t mant = h.bits & 0x3ffu;
  if (exp == 0x1f) return BitsToFloat(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp != 0) return BitsToFloat(sign | ((exp + 112) << 23) | (mant << 13));
  if (mant == 0) return BitsToFloat(sign);
  // subnormal: value = mant * 2^-24
  float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
  return sign ? -v : v;
}

inline float ToFloat(BFloat16 h) { return BitsToFloat(uint32_t{h.bits} << 16); }

template <typename T>
T FromFloat(float f);

template <>
inline BFloat16 FromFloat<BFloat16>(float f) {
  const uint32_t u = FloatToBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return BFloat16{static_cast<uint16_t>((u >> 16) | 0x40u)};  // quiet nan
  const uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);  // nearest even; overflow rounds to inf
  return BFloat16{static_cast<uint16_t>(rounded >> 16)};
}

template <>
inline float FromFloat<float>(float f) {
  return f;
}

template <>
inline Float16 FromFloat<Float16>(float f) {
  const uint32_t u = FloatToBits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return Float16{static_cast<uint16_t>(sign | 0x7e00u)};   // nan
  if (abs >= 0x477ff000u) return Float16{static_cast<uint16_t>(sign | 0x7c00u)};  // overflow -> inf
  if (abs < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    // abs * 2^24 rounded to nearest even gives the subnormal mantissa.
    const float v = BitsToFloat(abs) * 16777216.0f;
    float r = v + 12582912.0f;  // 1.5 * 2^23 forces rounding to an integer (nearest even)
    r -= 12582912.0f;
    return Float16{static_cast<uint16_t>(sign | static_cast<uint16_t>(r))};
  }
  // normal: rebias exponent, round mantissa to 10 bits (nearest even)
  uint32_t m = abs + 0xfffu + ((abs >> 13) & 1u);
  m -= (112u << 23);
  return Float16{static_cast<uint16_t>(sign | (m >> 13))};
}

}  // namespace infllmv2
