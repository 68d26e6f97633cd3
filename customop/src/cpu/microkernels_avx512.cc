// Microkernels for the avx512 ISA level (see microkernels_impl.inc; flags set in CMakeLists.txt).
#define INFLLMV2_MK_NS avx512
#define INFLLMV2_MK_WIDTH 16
#define INFLLMV2_MK_NAME "avx512"
#include "cpu/microkernels_impl.inc"
