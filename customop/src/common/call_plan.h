// The call plan of the CPU kernel: the call's rules (common/call_rules.h) and every batch entry's
// plan, evaluated once from seqlens_k on the host. The CUDA kernels evaluate the same rules on the
// device (seqlens_k stays there); both refuse the same buffer layouts (CheckBuffers).
// docs/architecture.md shows where it sits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/call_rules.h"
#include "infllmv2/attention_data.h"
#include "infllmv2/attention_params.h"

namespace infllmv2 {

// "" or why the buffers cannot serve the call: a required one missing, or a past/present sharing
// rule broken. Both backends check this before any other work.
inline std::string CheckBuffers(const AttentionParams& p, const BufferFacts& f) {
  if (!f.has_seqlens || !f.has_required_outputs) return "seqlens_k, output, present_key and present_value are required";
  if (f.key_in_place != f.value_in_place)
    return "past_key/present_key and past_value/present_value must both share a buffer or both not";
  if (f.key_in_place && p.past_capacity != p.present_capacity)
    return "Shared past/present buffers need past_key dim 2 (" + std::to_string(p.past_capacity) +
           ") >= total_sequence_length (" + std::to_string(p.total_sequence_length) + ")";
  if (f.compressed_in_place && p.past_compressed_capacity != p.present_compressed_capacity)
    return "Shared past/present compressed-key buffers need past_compressed_key dim 2 >= " +
           std::to_string(p.present_compressed_capacity);
  return "";
}

// local_window_size works in dense mode only: the message when an entry (or, b < 0, some entry of
// a call whose lengths the host does not see) may run sparse.
inline std::string LocalWindowError(int64_t b) {
  return "local_window_size is only supported in dense mode" +
         (b >= 0 ? " (batch entry " + std::to_string(b) + " runs sparse)" : std::string()) +
         "; set attention_mode=1 or dense_len above the context length";
}

struct CallPlan {
  CallRules rules;
  std::vector<EntryPlan> entries;  // [batch]
  bool any_sparse = false;
  bool any_stage1 = false;             // some entry needs stage 1
  bool single_token = false;           // S == 1 (decode): the work of one token is split, not tokens
  bool compute_compressed = false;     // level-1 keys: the output is requested or an entry runs sparse
  bool compressed_to_scratch = false;  // needed but not requested: the backend owns the buffer
  bool write_selection = false;        // selected_blocks requested
};

// Builds the plan of one call. `seqlens_k` is host memory ([batch]). Returns "" or a message
// naming the problem (CheckBuffers, or local_window_size in a sparse entry).
std::string BuildCallPlan(const AttentionAttributes& attrs, const AttentionParams& params, const int32_t* seqlens_k,
                          const BufferFacts& buffers, CallPlan* plan);

}  // namespace infllmv2
