// CPU kernel of SwitchableAttention (dense = GroupQueryAttention, sparse = InfLLM-V2).
// No ONNX Runtime types: the ORT glue (src/ort) and the native tests call it alike.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "common/float16.h"
#include "infllmv2/attention_data.h"
#include "infllmv2/attention_params.h"

namespace infllmv2::cpu {

// Runs fn(i) for every i in [0, total), possibly in parallel; returns when all are done.
using ParallelFor = std::function<void(size_t total, const std::function<void(size_t)>& fn)>;

// Runs every index on the calling thread.
void SerialFor(size_t total, const std::function<void(size_t)>& fn);

// Wall time of the kernel's stages (benchmarks only; the ORT glue passes none).
struct KernelProfile {
  double prepare_ms = 0;   // rotary, KV cache write
  double compress_ms = 0;  // level-1 compressed keys (and level-2 derivation)
  double select_ms = 0;    // stage 1 scoring, pooling, top-k
  double attend_ms = 0;    // attention over the selected (or all) blocks
  // (Prefill runs both in one parallel phase: its wall time is split in proportion to the time
  // the work items spent in each.)
  // Decode only, parts of select_ms: stage-1 scoring, the per-head normalizers, the group sum,
  // pooling + top-k (each a parallel phase but the normalizers).
  double score_ms = 0, lse_ms = 0, group_sum_ms = 0, topk_ms = 0;
};

// Runs one call. `params` must come from CheckInputs with seqlens_k readable. Returns "" on
// success, else an error message; never throws, and no exception crosses a work item of
// `parallel_for` (guarded_parallel_for.h). Re-entrant: all scratch lives on the calling thread's
// stack or in per-call buffers. `profile` (benchmarks only) receives the stage timings when not null.
template <typename T>
std::string RunAttention(const AttentionAttributes& attrs, const AttentionParams& params, const AttentionData<T>& data,
                         const ParallelFor& parallel_for, KernelProfile* profile = nullptr);

}  // namespace infllmv2::cpu
