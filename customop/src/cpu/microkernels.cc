#include "cpu/microkernels.h"

#include <cstdlib>
#include <cstring>

namespace infllmv2::cpu {
namespace sse2 {
extern const Microkernels kMicrokernels;
}
namespace avx2 {
extern const Microkernels kMicrokernels;
}
namespace avx512 {
extern const Microkernels kMicrokernels;
}

namespace {

// Every instruction set a level's build is compiled for (CMakeLists.txt: -mavx2 -mfma -mf16c;
// -mavx512f -mavx512vl on top).
bool CpuHas(const char* isa) {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (std::strcmp(isa, "avx2") == 0) return avx2;
  if (std::strcmp(isa, "avx512") == 0)
    return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  return std::strcmp(isa, "baseline") == 0;
}

const Microkernels& Detect() {
  // INFLLMV2_ISA=baseline|avx2|avx512 caps the choice (A/B tests, triage).
  const char* cap = std::getenv("INFLLMV2_ISA");
  const char* order[] = {"avx512", "avx2", "baseline"};
  bool allowed = cap == nullptr;
  for (const char* isa : order) {
    allowed = allowed || std::strcmp(cap, isa) == 0;
    if (const Microkernels* mk = allowed ? MicrokernelsFor(isa) : nullptr) return *mk;
  }
  return sse2::kMicrokernels;  // unknown INFLLMV2_ISA value
}

}  // namespace

const Microkernels* MicrokernelsFor(const char* isa) {
  if (!CpuHas(isa)) return nullptr;
  if (std::strcmp(isa, "avx512") == 0) return &avx512::kMicrokernels;
  if (std::strcmp(isa, "avx2") == 0) return &avx2::kMicrokernels;
  return &sse2::kMicrokernels;
}

const Microkernels& SelectMicrokernels() {
  static const Microkernels& chosen = Detect();
  return chosen;
}

}  // namespace infllmv2::cpu
