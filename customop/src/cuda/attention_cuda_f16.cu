// fp16 instantiation of the CUDA kernel (all stages, head sizes 64 and 128).
#include "cuda/attention_cuda.cuh"

namespace infllmv2 {
INFLLMV2_CUDA_INSTANTIATE(Float16)
}

namespace infllmv2::cuda {
bool SupportsHeadSize(int64_t head_size) { return SupportsHeadSizeImpl(head_size); }
}  // namespace infllmv2::cuda
