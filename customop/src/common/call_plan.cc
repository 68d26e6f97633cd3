#include "common/call_plan.h"

#include <algorithm>

#include "common/mode_select.h"

namespace infllmv2 {

std::string BuildCallPlan(const AttentionAttributes& a, const AttentionParams& p, const int32_t* seqlens_k,
                          const BufferFacts& f, CallPlan* plan) {
  if (!f.has_seqlens || !f.has_required_outputs)
    return "seqlens_k, output, present_key and present_value are required";
  if (f.key_in_place != f.value_in_place)
    return "past_key/present_key and past_value/present_value must both share a buffer or both not";
  if (f.key_in_place && p.past_capacity != p.present_capacity)
    return "Shared past/present buffers need past_key dim 2 (" + std::to_string(p.past_capacity) +
           ") >= total_sequence_length (" + std::to_string(p.total_sequence_length) + ")";
  if (f.compressed_in_place && p.past_compressed_capacity != p.present_compressed_capacity)
    return "Shared past/present compressed-key buffers need past_compressed_key dim 2 >= " +
           std::to_string(p.present_compressed_capacity);

  CallPlan& c = *plan;
  c = CallPlan{};
  c.single_token = p.seq_len == 1;
  c.kv_in_place = f.key_in_place;
  c.budget = p.budget;
  c.local_blocks = a.LocalBlocks();
  c.block_size = a.block_size;
  c.init_blocks = a.init_blocks;
  c.local_window = a.local_window_size;
  c.write_selection = f.has_selected_blocks;
  const bool past_compressed = p.has_past_compressed && !p.is_first_prompt;
  c.entries.resize(static_cast<size_t>(p.batch));
  for (int64_t b = 0; b < p.batch; ++b) {
    EntryPlan& e = c.entries[static_cast<size_t>(b)];
    e.total = TotalLength(seqlens_k, b);
    e.past = PastLength(p, e.total);
    e.sparse = UseSparse(a, p.mode, e.total);
    if (e.sparse && a.local_window_size > 0)
      return "local_window_size is only supported in dense mode (batch entry " + std::to_string(b) +
             " runs sparse); set attention_mode=1 or dense_len above the context length";
    e.windows = NumWindows(e.total, a.compress_kernel, a.compress_stride);
    e.level2_windows = NumWindows(e.total, 4 * a.compress_kernel, 4 * a.compress_stride);
    e.past_windows = past_compressed ? NumWindows(e.past, a.compress_kernel, a.compress_stride) : 0;
    // The last valid token has the largest past: it outgrows the budget first.
    const int64_t last = std::min(e.total, e.past + p.seq_len) - 1;
    e.needs_stage1 = e.sparse && last >= e.past && c.OutgrowsBudget(last);
    c.any_sparse |= e.sparse;
    c.any_stage1 |= e.needs_stage1;
  }
  c.compute_compressed = f.has_present_compressed || c.any_sparse;
  c.compressed_to_scratch = c.compute_compressed && !f.has_present_compressed;
  c.compressed_in_place = f.compressed_in_place;
  c.compressed_capacity = c.compressed_to_scratch
                              ? std::max<int64_t>(NumWindows(p.total_sequence_length, a.compress_kernel, a.compress_stride), 1)
                              : p.present_compressed_capacity;
  return "";
}

}  // namespace infllmv2
