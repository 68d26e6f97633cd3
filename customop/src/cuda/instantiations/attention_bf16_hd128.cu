// The attention kernels for BFloat16, head size 128: prefill and decode tiles, plain and split-KV, and
// the split-KV combine (kernel_traits.h: AttnTraits<2, 128, *>).
#include "cuda/attention_launch.cuh"

INFLLMV2_ATTENTION_INSTANTIATE(infllmv2::BFloat16, 128)
