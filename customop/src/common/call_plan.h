// The call plan of SwitchableAttention: every per-call decision, made once from the attributes,
// the checked params, the per-entry lengths (seqlens_k on the host) and facts about the buffers.
// Backend-neutral: the CPU kernel executes it today, the CUDA kernel will execute the same plan;
// neither re-derives a decision. docs/architecture.md shows where it sits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "infllmv2/attention_data.h"
#include "infllmv2/attention_params.h"

namespace infllmv2 {

// What the plan needs to know about one call's buffers: which optional outputs exist and which
// outputs alias inputs (pointer equality: the caller bound one buffer as both). Nothing is read.
struct BufferFacts {
  bool has_required_outputs = false;    // output, present_key and present_value given
  bool has_seqlens = false;             // seqlens_k readable
  bool key_in_place = false;            // present_key == past_key
  bool value_in_place = false;          // present_value == past_value
  bool has_present_compressed = false;  // output 3 requested
  bool compressed_in_place = false;     // present_compressed_key == past_compressed_key
  bool has_selected_blocks = false;     // output 4 requested
};

template <typename T>
BufferFacts FactsOf(const AttentionData<T>& d, const AttentionParams& p) {
  BufferFacts f;
  f.has_required_outputs = d.output != nullptr && d.present_key != nullptr && d.present_value != nullptr;
  f.has_seqlens = d.seqlens_k != nullptr;
  f.key_in_place = p.has_past && d.present_key == d.past_key;
  f.value_in_place = p.has_past && d.present_value == d.past_value;
  f.has_present_compressed = d.present_compressed_key != nullptr;
  f.compressed_in_place = p.has_past_compressed && f.has_present_compressed &&
                          d.present_compressed_key == d.past_compressed_key;
  f.has_selected_blocks = d.selected_blocks != nullptr;
  return f;
}

// One batch entry.
struct EntryPlan {
  int64_t total = 0;          // valid keys after this call (seqlens_k + 1)
  int64_t past = 0;           // valid keys before it (0 in a first prompt)
  bool sparse = false;        // the mode this entry runs (UseSparse)
  int64_t windows = 0;        // N1(total): level-1 compressed keys after this call
  int64_t past_windows = 0;   // of them, copied from past_compressed_key (0 when not given)
  int64_t level2_windows = 0; // N2(total): level-2 windows (stage-1 normalizer)
  bool needs_stage1 = false;  // a valid token of this call outgrows the budget (sparse only)
};

struct CallPlan {
  std::vector<EntryPlan> entries;  // [batch]
  bool any_sparse = false;
  bool single_token = false;       // S == 1 (decode): backends split a token's work, not tokens

  // Stage 1: KV cache write.
  bool kv_in_place = false;        // write only the new rows into the shared past/present buffers
  // Stage 2: level-1 compressed keys.
  bool compute_compressed = false;     // the output is requested or an entry runs sparse
  bool compressed_to_scratch = false;  // needed but not requested: the backend owns the buffer
  bool compressed_in_place = false;    // update the shared past/present buffer in place
  int64_t compressed_capacity = 0;     // rows per (b, h) of the buffer that holds them
  // Stage 3: selection.
  bool any_stage1 = false;             // some entry needs stage 1
  bool write_selection = false;        // selected_blocks requested
  int64_t budget = 0;                  // K: blocks per selection row
  int64_t local_blocks = 0;            // L: window_size / block_size

  // Token rules (p = the token's absolute position).
  int64_t block_size = 0, init_blocks = 0, local_window = -1;
  // Sparse token whose blocks 0..p/Bk exceed the budget (else it takes them all, no stage 1).
  bool OutgrowsBudget(int64_t p) const { return p / block_size + 1 > budget; }
  // First key a dense token attends to (local_window_size; 0 when off).
  int64_t DenseFirstKey(int64_t p) const { return local_window > 0 && p - local_window + 1 > 0 ? p - local_window + 1 : 0; }
};

// Builds the plan of one call. `seqlens_k` is host memory ([batch]). Returns "" or a message
// naming the problem (a buffer-sharing rule or local_window_size in a sparse entry).
std::string BuildCallPlan(const AttentionAttributes& attrs, const AttentionParams& params, const int32_t* seqlens_k,
                          const BufferFacts& buffers, CallPlan* plan);

}  // namespace infllmv2
