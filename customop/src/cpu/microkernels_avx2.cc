// Microkernels for the avx2 ISA level (see microkernels_impl.inc; flags set in CMakeLists.txt).
#define INFLLMV2_MK_NS avx2
#define INFLLMV2_MK_WIDTH 8
#define INFLLMV2_MK_NAME "avx2"
#include "cpu/microkernels_impl.inc"
