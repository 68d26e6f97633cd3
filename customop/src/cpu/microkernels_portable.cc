// Microkernels of the portable level: the same source as plain C++ with GCC vector extensions of 4
// floats (the compiler maps them to whatever the target has, or to scalar code) and scalar fp16
// conversions. The only level on CPUs that are neither x86 nor AArch64; on AArch64 the level below
// neon (INFLLMV2_ISA=portable).
#define INFLLMV2_MK_NS portable
#define INFLLMV2_MK_WIDTH 4
#define INFLLMV2_MK_NAME "portable"
#define INFLLMV2_MK_PORTABLE 1
#include "cpu/microkernels_impl.inc"
