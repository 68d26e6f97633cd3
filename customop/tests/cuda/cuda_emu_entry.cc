// The CUDA kernel on the host emulation as an entry of the shared backend table (test_support.h
// Backends()): the backend-neutral reference tests run it on their fp16 cases that are small
// enough for the emulation and that the CUDA kernel supports.
#include <algorithm>
#include <cstdlib>

#include "cuda/selection.cuh"
#include "cuda_emu_backend.h"

namespace infllmv2::testing {

// Size filter: cache rows written (B x Hkv x capacity), query rows (B x S x H) and, when an entry
// may run sparse, stage-1 work (B x Hkv x S x capacity: every token scores every window, and the
// emulation runs each CUDA thread as a host thread, slow under ASan).
constexpr int64_t kCudaEmuMaxCacheRows = 1500;
constexpr int64_t kCudaEmuMaxQueryRows = 300;
constexpr int64_t kCudaEmuMaxStage1Work = 8000;

KernelOutputs<Float16> RunCudaEmuFp16(const Case& c, const Tensors& t) { return RunCudaEmu<Float16>(c, t); }

bool CudaEmuAccepts(const Case& c) {
  // The per-ISA passes (INFLLMV2_ISA set) exist for the CPU microkernels; the emulated CUDA kernel
  // does not depend on the ISA, so it runs in the default pass only.
  if (std::getenv("INFLLMV2_ISA") != nullptr) return false;
  if (!cuda::SupportsHeadSize(c.head_size)) return false;
  const bool maybe_sparse = c.mode != 1;
  if (maybe_sparse && (c.attrs.local_window_size > 0 || c.num_heads / c.kv_num_heads > cuda::kStage1MaxGroup ||
                       c.head_size > cuda::kStage1MaxHead))
    return false;
  const int64_t capacity = std::max(c.past_capacity, c.total_sequence_length);
  if (maybe_sparse && c.batch * c.kv_num_heads * c.seq_len * capacity > kCudaEmuMaxStage1Work) return false;
  return c.batch * c.kv_num_heads * capacity <= kCudaEmuMaxCacheRows &&
         c.batch * c.seq_len * c.num_heads <= kCudaEmuMaxQueryRows;
}

}  // namespace infllmv2::testing
