// CUDA kernel of SwitchableAttention (fp16 and bf16 on the device): runs one call's stages on a
// stream, no host synchronization and no device-to-host copy (per-entry decisions are made on the
// device from seqlens_k by common/call_rules.h). No ONNX Runtime types. Under the host compiler the same
// kernels run on the host emulation (emu/), which is how the native tests exercise them.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

#include "common/float16.h"
#include "infllmv2/attention_data.h"
#include "infllmv2/attention_params.h"

namespace infllmv2::cuda {

// Device scratch of `bytes` bytes, valid until the call's work on the stream is done (ORT's
// stream-aware scratch, ort/call_scratch.h; a plain buffer in tests). Returns null on failure.
using ScratchAllocator = std::function<void*(size_t bytes)>;

// Tuning knobs (tests force the paths with them; the op uses the defaults).
struct RunOptions {
  // Attention key splits: 0 = chosen from the call's host facts (launch_shape.h: ChooseKvSplits;
  // 1 there means the plain kernel); -1 = the plain kernel; n >= 1 = the split-KV path with
  // exactly n splits (at most kMaxKvSplits).
  int kv_splits = 0;
  // Stage-1 window chunks per unit of query rows: 0 = chosen from the call's host facts
  // (selection.cuh: Stage1ShapeOf); n >= 1 = about n (chunks stay whole 64-window tiles, so fewer
  // when the windows are fewer than 64 n).
  int stage1_splits = 0;
  // Query tokens per stage-1 launch: 0 = all of the call's, or fewer when their block scores
  // would exceed the scratch bound (selection.cuh: kS1ScoreScratchBytes); n >= 1 = n, rounded down
  // to whole 16-row units (at least one).
  int stage1_tokens = 0;
  // Called on the host as each stage is about to be enqueued (kStageNames order, stages that do not
  // run skipped) and once after the last with "end": the GPU check records CUDA events there for
  // per-stage times. Null: nothing.
  void (*mark)(void* ctx, const char* stage) = nullptr;
  void* mark_ctx = nullptr;
};

// The stages RunOptions::mark names: cache write (+ rotated queries), level-1 compression,
// selection (lists within the budget, then stage 1: normalizers, group sums and pooling, top-k), attention
// (plain or split-KV partials), the split-KV combine.
constexpr const char* kStageNames[] = {"cache_write", "compress", "selection", "attention", "combine"};

// `data`: device pointers (seqlens_k too); `stream`: a cudaStream_t (nullptr under emulation).
// Returns "" or why the call cannot run (never throws). Head sizes: 64, 96, 128, 256 (256 dense only).
template <typename T>
std::string RunAttention(const AttentionAttributes& attrs, const AttentionParams& params, const AttentionData<T>& data,
                         const ScratchAllocator& scratch, void* stream, const RunOptions& options = {});

bool SupportsHeadSize(int64_t head_size);

}  // namespace infllmv2::cuda
