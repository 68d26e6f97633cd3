// The attention stage's launch template (declared in attention_launch.h): the kernels of one (type,
// head size) in both tile variants, with their traits' block size and dynamic shared memory.
// Instantiated once per (type, head size) by INFLLMV2_ATTENTION_INSTANTIATE.
#pragma once

#include <string>

#include "cuda/attention_launch.h"
#include "cuda/block_attention.cuh"
#include "cuda/split_kv.cuh"

namespace infllmv2::cuda {

template <class T, class Tr>
std::string LaunchAttentionTiles(const KernelArgs<T>& a, const AttentionGrid& grid, Stream stream,
                                 const RunOptions& options) {
  (void)stream;  // unused by the host emulation
  const CallRules& p = a.rules;
  const dim3 block(static_cast<unsigned>(Tr::kThreads));
  if (grid.part == nullptr) {
    const dim3 g(static_cast<unsigned>(grid.row_tiles), static_cast<unsigned>(p.kv_num_heads),
                 static_cast<unsigned>(p.batch));
    auto* k = &BlockAttentionKernel<T, Tr>;
    IL_LAUNCH_SMEM("BlockAttentionKernel", k, g, block, Tr::kSmemBytes, stream, a);
    return "";
  }
  const dim3 g(static_cast<unsigned>(grid.row_tiles * a.kv_splits), static_cast<unsigned>(p.kv_num_heads),
               static_cast<unsigned>(p.batch));
  auto* k = &SplitKvAttentionKernel<T, Tr>;
  IL_LAUNCH_SMEM("SplitKvAttentionKernel", k, g, block, Tr::kSmemBytes, stream, a, grid.part);
  if (options.mark != nullptr) options.mark(options.mark_ctx, "combine");
  const dim3 grid_c(static_cast<unsigned>((grid.out_rows + kCombineWarps - 1) / kCombineWarps));
  auto* c = &KvCombineKernel<T, Tr::kHeadSize>;
  IL_LAUNCH("KvCombineKernel", c, grid_c, dim3(32 * kCombineWarps), stream, a, grid.part);
  return "";
}

template <class T, int D>
std::string LaunchAttention(const KernelArgs<T>& a, const AttentionGrid& grid, Stream stream,
                            const RunOptions& options) {
  if (grid.decode) return LaunchAttentionTiles<T, AttnTraitsOf<T, D, true>>(a, grid, stream, options);
  return LaunchAttentionTiles<T, AttnTraitsOf<T, D, false>>(a, grid, stream, options);
}

}  // namespace infllmv2::cuda

// The attention kernels of one (type, head size) (explicit instantiation).
#define INFLLMV2_ATTENTION_INSTANTIATE(T, D)                                                              \
  template std::string infllmv2::cuda::LaunchAttention<T, D>(                                             \
      const infllmv2::cuda::KernelArgs<T>&, const infllmv2::cuda::AttentionGrid&, infllmv2::cuda::Stream, \
      const infllmv2::cuda::RunOptions&);
