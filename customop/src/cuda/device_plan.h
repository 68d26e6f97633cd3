// The call plan (common/call_plan.h) as the CUDA kernels execute it: seqlens_k lives on the device
// and is never copied to the host, so every per-entry value of EntryPlan (total, past, mode, window
// counts, stage-1 need) is derived on the device, by every kernel that needs it, from the call-wide
// part built on the host (DevicePlan: attributes, params and buffer facts only). EntryOf() follows
// BuildCallPlan's rules; tests/cuda checks that they agree on every entry.
#pragma once

#include <cstdint>

#include "common/call_plan.h"
#include "cuda/primitives.h"
#include "infllmv2/attention_params.h"

namespace infllmv2::cuda {

// Plain data passed to every kernel by value.
struct DevicePlan {
  // params
  int batch, seq_len, num_heads, kv_num_heads, group, head_size;
  int past_capacity, present_capacity, past_compressed_capacity;
  int compressed_capacity;  // rows per (b, h) of the buffer the compressed keys go to
  int rotary_dim;
  bool packed_qkv, is_first_prompt, do_rotary, rotary_interleaved;
  float scale, softcap;
  // mode: -1 force dense, 1 force sparse, 0 auto (sparse iff dense_len == -1 or total >= dense_len)
  int mode_rule;
  int64_t dense_len;
  int local_window;  // local_window_size (-1 off)
  int block_size, compress_kernel, compress_stride, init_blocks, local_blocks, budget, lse_approx;
  int score_precision;  // 1: group sums rounded to bf16 before pooling
  // buffer facts
  bool kv_in_place, compressed_in_place, past_compressed_given;  // given and not a first prompt
  // attention: 1 = one CTA per (64 query rows, kv head, entry) over all of its keys; > 1 = the
  // split-KV path (split_kv.cuh) with this many key splits per such CTA. Host-only choice.
  int kv_splits;
};

struct DeviceEntry {
  int total, past;
  bool sparse;
  int windows, past_windows, level2_windows;
  bool needs_stage1;
};

IL_HD int NumWindowsDev(int length, int kernel, int stride) { return length < kernel ? 0 : (length - kernel) / stride + 1; }

IL_HD bool OutgrowsBudgetDev(const DevicePlan& p, int pos) { return pos / p.block_size + 1 > p.budget; }
IL_HD int DenseFirstKeyDev(const DevicePlan& p, int pos) {
  return p.local_window > 0 && pos - p.local_window + 1 > 0 ? pos - p.local_window + 1 : 0;
}

IL_HD DeviceEntry EntryOf(const DevicePlan& p, const int32_t* seqlens_k, int b) {
  DeviceEntry e;
  e.total = seqlens_k[b] + 1;
  e.past = p.is_first_prompt ? 0 : e.total - p.seq_len;
  e.sparse = p.mode_rule > 0 || (p.mode_rule == 0 && (p.dense_len == -1 || e.total >= p.dense_len));
  e.windows = NumWindowsDev(e.total, p.compress_kernel, p.compress_stride);
  e.level2_windows = NumWindowsDev(e.total, 4 * p.compress_kernel, 4 * p.compress_stride);
  e.past_windows = p.past_compressed_given ? NumWindowsDev(e.past, p.compress_kernel, p.compress_stride) : 0;
  const int last = (e.total < e.past + p.seq_len ? e.total : e.past + p.seq_len) - 1;
  e.needs_stage1 = e.sparse && last >= e.past && OutgrowsBudgetDev(p, last);
  return e;
}

// Built on the host from what the host knows (no seqlens_k). `error` is "" or what BuildCallPlan
// would refuse that does not depend on seqlens_k (buffer sharing rules).
inline DevicePlan MakeDevicePlan(const AttentionAttributes& a, const AttentionParams& p, const BufferFacts& f) {
  DevicePlan d{};
  d.batch = static_cast<int>(p.batch);
  d.seq_len = static_cast<int>(p.seq_len);
  d.num_heads = static_cast<int>(p.num_heads);
  d.kv_num_heads = static_cast<int>(p.kv_num_heads);
  d.group = static_cast<int>(p.group);
  d.head_size = static_cast<int>(p.head_size);
  d.past_capacity = static_cast<int>(p.past_capacity);
  d.present_capacity = static_cast<int>(p.present_capacity);
  d.past_compressed_capacity = static_cast<int>(p.past_compressed_capacity);
  const bool compute_compressed = f.has_present_compressed || p.mode != AttentionMode::kForceDense;
  const bool to_scratch = compute_compressed && !f.has_present_compressed;
  const int64_t scratch_rows = NumWindows(p.total_sequence_length, a.compress_kernel, a.compress_stride);
  d.compressed_capacity = static_cast<int>(to_scratch ? (scratch_rows > 1 ? scratch_rows : 1) : p.present_compressed_capacity);
  d.rotary_dim = static_cast<int>(p.rotary_dim);
  d.packed_qkv = p.packed_qkv;
  d.is_first_prompt = p.is_first_prompt;
  d.do_rotary = a.do_rotary != 0;
  d.rotary_interleaved = a.rotary_interleaved != 0;
  d.scale = p.scale;
  d.softcap = a.softcap;
  d.mode_rule = p.mode == AttentionMode::kForceDense ? -1 : p.mode == AttentionMode::kForceSparse ? 1 : 0;
  d.dense_len = a.dense_len;
  d.local_window = static_cast<int>(a.local_window_size);
  d.block_size = static_cast<int>(a.block_size);
  d.compress_kernel = static_cast<int>(a.compress_kernel);
  d.compress_stride = static_cast<int>(a.compress_stride);
  d.init_blocks = static_cast<int>(a.init_blocks);
  d.local_blocks = static_cast<int>(a.LocalBlocks());
  d.budget = static_cast<int>(p.budget);
  d.lse_approx = static_cast<int>(a.lse_approx);
  d.score_precision = static_cast<int>(a.score_precision);
  d.kv_in_place = f.key_in_place;
  d.compressed_in_place = f.compressed_in_place;
  d.past_compressed_given = p.has_past_compressed && !p.is_first_prompt;
  d.kv_splits = 1;  // the driver chooses (split_kv.cuh: ChooseKvSplits)
  return d;
}

}  // namespace infllmv2::cuda
