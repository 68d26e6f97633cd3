// Stage 3 on CUDA (mirrors cpu/selection.cc): the selection lists. Tokens that do not outgrow the
// budget (and dense or padding tokens) get their rows here; stage 1 (scores, normalizers, group
// sum, block max-pool, top-k with ties to the lower block index) fills the others.
#pragma once

#include "cuda/kernel_args.h"

namespace infllmv2::cuda {

constexpr int kSelectThreads = 128;

// grid (S, Hkv, B): row (b, h, s) of the lists: blocks 0..qb for a sparse token within the budget,
// all -1 for dense and padding tokens; rows of stage-1 tokens are left to stage 1.
template <class T>
IL_GLOBAL void SelectionFillKernel(KernelArgs<T> a) {
  const DevicePlan& p = a.p;
  const int s = static_cast<int>(blockIdx.x), h = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z);
  const DeviceEntry e = EntryOf(p, a.d.seqlens_k, b);
  const int pos = e.past + s;
  int n = 0;
  if (pos < e.total && e.sparse) {
    if (OutgrowsBudgetDev(p, pos)) return;
    n = pos / p.block_size + 1;
  }
  int32_t* row = a.sel + ((static_cast<int64_t>(b) * p.kv_num_heads + h) * p.seq_len + s) * p.budget;
  for (int i = static_cast<int>(threadIdx.x); i < p.budget; i += kSelectThreads) row[i] = i < n ? i : -1;
}

}  // namespace infllmv2::cuda
