// bf16 instantiation of the CUDA kernel (the driver and stages 1-3; the attention kernels
// are in instantiations/attention_bf16_hd*.cu).
#include "cuda/attention_cuda.cuh"

namespace infllmv2 {
INFLLMV2_CUDA_INSTANTIATE(BFloat16)
}
