// Microkernels for the baseline ISA level (see microkernels_impl.inc; flags set in CMakeLists.txt).
#define INFLLMV2_MK_NS sse2
#define INFLLMV2_MK_WIDTH 4
#define INFLLMV2_MK_NAME "baseline"
#include "cpu/microkernels_impl.inc"
