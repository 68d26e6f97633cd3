// bf16 instantiation of the CUDA kernel (all stages, head sizes 64 and 128).
#include "cuda/attention_cuda.cuh"

namespace infllmv2 {
INFLLMV2_CUDA_INSTANTIATE(BFloat16)
}
