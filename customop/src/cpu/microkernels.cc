#include "cpu/microkernels.h"

#include <cstdlib>
#include <cstring>

namespace infllmv2::cpu {
namespace sse2 { extern const Microkernels kMicrokernels; }
namespace avx2 { extern const Microkernels kMicrokernels; }
namespace avx512 { extern const Microkernels kMicrokernels; }

namespace {

const Microkernels& Detect() {
  // INFLLMV2_ISA=baseline|avx2|avx512 caps the choice (A/B tests, triage).
  const char* cap = std::getenv("INFLLMV2_ISA");
  auto allowed = [&](const char* name) { return cap == nullptr || std::strcmp(cap, name) == 0; };
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f");
  if (avx512 && (cap == nullptr || allowed("avx512"))) return avx512::kMicrokernels;
  if (avx2 && (cap == nullptr || allowed("avx2") || allowed("avx512"))) return avx2::kMicrokernels;
  return sse2::kMicrokernels;
}

}  // namespace

const Microkernels& SelectMicrokernels() {
  static const Microkernels& chosen = Detect();
  return chosen;
}

}  // namespace infllmv2::cpu
