#include "cpu/microkernels.h"

#include <cstdlib>
#include <cstring>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace infllmv2::cpu {

#if defined(__x86_64__) || defined(__i386__)

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

// Best first; the last one runs on every CPU of the architecture.
const char* const kOrder[] = {"avx512", "avx2", "baseline"};
const Microkernels& kLowest = sse2::kMicrokernels;

}  // namespace

const Microkernels* MicrokernelsFor(const char* isa) {
  if (!CpuHas(isa)) return nullptr;
  if (std::strcmp(isa, "avx512") == 0) return &avx512::kMicrokernels;
  if (std::strcmp(isa, "avx2") == 0) return &avx2::kMicrokernels;
  return &sse2::kMicrokernels;
}

#else  // AArch64: neon, then portable; any other CPU: portable only

namespace portable {
extern const Microkernels kMicrokernels;
}
#if defined(__aarch64__)
namespace neon {
extern const Microkernels kMicrokernels;
}
#endif

namespace {

#if defined(__aarch64__)
// Advanced SIMD is part of every ARMv8-A CPU; Linux still says so in the hardware capabilities.
bool CpuHasNeon() {
#if defined(__linux__)
  return (getauxval(AT_HWCAP) & HWCAP_ASIMD) != 0;
#else
  return true;
#endif
}
const char* const kOrder[] = {"neon", "portable"};
#else
const char* const kOrder[] = {"portable"};
#endif
const Microkernels& kLowest = portable::kMicrokernels;

}  // namespace

// "baseline" names the lowest level of every architecture (here: portable).
const Microkernels* MicrokernelsFor(const char* isa) {
#if defined(__aarch64__)
  if (std::strcmp(isa, "neon") == 0) return CpuHasNeon() ? &neon::kMicrokernels : nullptr;
#endif
  if (std::strcmp(isa, "portable") == 0 || std::strcmp(isa, "baseline") == 0) return &portable::kMicrokernels;
  return nullptr;
}

#endif

namespace {

const Microkernels& Detect() {
  // INFLLMV2_ISA=<level> caps the choice (A/B tests, triage): x86 baseline|avx2|avx512, AArch64
  // portable|neon. An unknown value runs the lowest level.
  const char* cap = std::getenv("INFLLMV2_ISA");
  bool allowed = cap == nullptr;
  for (const char* isa : kOrder) {
    allowed = allowed || std::strcmp(cap, isa) == 0;
    if (const Microkernels* mk = allowed ? MicrokernelsFor(isa) : nullptr) return *mk;
  }
  return kLowest;  // unknown INFLLMV2_ISA value
}

}  // namespace

const Microkernels& SelectMicrokernels() {
  static const Microkernels& chosen = Detect();
  return chosen;
}

}  // namespace infllmv2::cpu
