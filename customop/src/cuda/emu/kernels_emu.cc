// The CUDA kernels compiled by the host compiler against the host emulation (primitives.h), for
// the native tests. The nvcc build compiles the same sources from attention_cuda_{f16,bf16}.cu and
// instantiations/attention_*.cu.
#include "cuda/attention_cuda.cuh"
#include "cuda/attention_launch.cuh"

namespace infllmv2 {
INFLLMV2_CUDA_INSTANTIATE(Float16)
}
namespace infllmv2 {
INFLLMV2_CUDA_INSTANTIATE(BFloat16)
}
INFLLMV2_ATTENTION_INSTANTIATE(infllmv2::Float16, 64)
INFLLMV2_ATTENTION_INSTANTIATE(infllmv2::Float16, 96)
INFLLMV2_ATTENTION_INSTANTIATE(infllmv2::Float16, 128)
INFLLMV2_ATTENTION_INSTANTIATE(infllmv2::Float16, 256)
INFLLMV2_ATTENTION_INSTANTIATE(infllmv2::BFloat16, 64)
INFLLMV2_ATTENTION_INSTANTIATE(infllmv2::BFloat16, 96)
INFLLMV2_ATTENTION_INSTANTIATE(infllmv2::BFloat16, 128)
INFLLMV2_ATTENTION_INSTANTIATE(infllmv2::BFloat16, 256)

namespace infllmv2::cuda {
bool SupportsHeadSize(int64_t head_size) { return SupportsHeadSizeImpl(head_size); }
}  // namespace infllmv2::cuda
