// The CUDA kernels compiled by the host compiler against the host emulation (primitives.h), for
// the native tests. The nvcc build compiles the same sources from attention_cuda_{f16,bf16}.cu.
#include "cuda/attention_cuda.cuh"

namespace infllmv2 {
INFLLMV2_CUDA_INSTANTIATE(Float16)
}
namespace infllmv2 {
INFLLMV2_CUDA_INSTANTIATE(BFloat16)
}

namespace infllmv2::cuda {
bool SupportsHeadSize(int64_t head_size) { return SupportsHeadSizeImpl(head_size); }
}  // namespace infllmv2::cuda
