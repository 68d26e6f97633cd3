// fp16 instantiation of the CUDA kernel (the driver and stages 1-3; the attention kernels
// are in instantiations/attention_f16_hd*.cu).
#include "cuda/attention_cuda.cuh"

namespace infllmv2 {
INFLLMV2_CUDA_INSTANTIATE(Float16)
}

namespace infllmv2::cuda {
bool SupportsHeadSize(int64_t head_size) { return SupportsHeadSizeImpl(head_size); }
}  // namespace infllmv2::cuda
