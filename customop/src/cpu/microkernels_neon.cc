// Microkernels for the neon ISA level of AArch64 (see microkernels_impl.inc): 128-bit Advanced SIMD,
// fp16 conversions by NEON's vcvt (flags set in CMakeLists.txt).
#define INFLLMV2_MK_NS neon
#define INFLLMV2_MK_WIDTH 4
#define INFLLMV2_MK_NAME "neon"
#include "cpu/microkernels_impl.inc"
