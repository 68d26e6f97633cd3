// The attention stage's launch template, declared for the driver (attention_cuda.cuh) and defined
// in attention_launch.cuh, which only the instantiation files (instantiations/*.cu, one per type
// and head size, compiled in parallel) and the host emulation's kernels_emu.cc include.
#pragma once

#include <cstdint>
#include <string>

#include "cuda/attention_cuda.h"
#include "cuda/kernel_args.h"

namespace infllmv2::cuda {

// The grid of the attention stage, chosen by the driver from host facts.
struct AttentionGrid {
  bool decode = false;    // the decode tile (kernel_traits.h: UseDecodeTile), else the prefill tile
  int64_t row_tiles = 0;  // ceil(S * G / rows per CTA)
  float* part = nullptr;  // split-KV partials (a.kv_splits records per row), null: the plain kernel
  int64_t out_rows = 0;   // B * S * H (the combine kernel's rows)
};

// Enqueues the attention of head size D (plain, or split-KV partials then the combine kernel,
// marking "combine" between them). "" or the launch error, naming the kernel.
template <class T, int D>
std::string LaunchAttention(const KernelArgs<T>& a, const AttentionGrid& grid, Stream stream,
                            const RunOptions& options);

}  // namespace infllmv2::cuda
