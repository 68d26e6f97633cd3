// Slow double-precision reference of SwitchableAttention (test-only). Written straight from
// docs/op-spec.md with no tiling, no online softmax and no shortcuts, so that the CPU kernel (and
// later the CUDA kernel) can be compared with it.
//
// It owns every rule it applies: the dense/sparse switch, window counts (N1, N2), local blocks,
// the budget K and the present capacities are derived here from the input shapes and the plain
// attribute values, not taken from the product's CheckInputs/AttentionParams or call_rules.h, so
// that a rule wrong in the product cannot be wrong in the reference the same way.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "infllmv2/attention_params.h"  // AttentionAttributes: plain attribute values only

namespace infllmv2::reference {

struct Inputs {  // values as double, layouts as in docs/op-spec.md; empty = absent
  std::vector<double> query, key, value, past_key, past_value, cos_cache, sin_cache, past_compressed_key;
  std::vector<int32_t> seqlens_k;
  // Shapes of what is given (docs/op-spec.md inputs): query [batch, seq_len, query_hidden];
  // past_key [batch, Hkv, past_len, D]; past_compressed_key [batch, Hkv, past_compressed_len, D];
  // cos_cache [*, rotary_half]. The head size follows from query_hidden and the attributes.
  int64_t batch = 0, seq_len = 0, query_hidden = 0, past_len = 0, past_compressed_len = 0, rotary_half = 0;
  int64_t total_sequence_length = 0;  // input 6
  int32_t attention_mode = 0;         // input 10 (0 when absent)
  // Rounding to the IO element type, applied where the op stores a computed value in T (rotated
  // q and k, compressed keys): identity for a pure double reference.
  std::function<double(double)> store = [](double x) { return x; };
};

struct Outputs {
  std::vector<double> output;                      // [B, S, H*D]
  std::vector<double> present_key, present_value;  // [B, Hkv, max(total_sequence_length, P), D]
  std::vector<double> present_compressed_key;      // [B, Hkv, max(C, N1(total_sequence_length)), D]
  std::vector<int32_t> selected_blocks;            // [B, Hkv, S, K]
  std::vector<char> sparse;                        // per batch entry: the mode the spec picks
};

// Selection rules of the official implementations that the op does not apply, or applies through
// an attribute mapping (docs/op-spec.md, "Compatibility with the official implementation"). Each is
// written here from its own description, so that a test can compare the op with it. The defaults
// are the op's rules.
struct Options {
  // The MiniCPM4 (June 2025) / CPM.cu scheme: top-k *excludes* the local window. Pooled scores of
  // every block of the sequence, init blocks +inf, the last `old_window_blocks` blocks up to the
  // query's own and every later block -inf; the `old_topk` best (ties: lower index) with blocks
  // after the query's dropped; then the window [qb - old_window_blocks + 1, qb] is added (stage
  // 2's block window). Stage 1 is normalized exactly over the level-1 keys. The attributes topk,
  // window_size and lse_approx are not read; the row length is old_topk + old_window_blocks.
  bool old_scheme = false;
  int64_t old_topk = 64, old_window_blocks = 32;
  // CPM.cu decode: stage 1 of a decode step (S = 1 with a past) leaves out the compressed windows
  // (level 1 and 2) that end at the current position.
  bool cpmcu_decode_skips_current_window = false;
  // The official stage-1 kernel's causal mask: in a first prompt of length L with L mod s2 = s2 - 1
  // (s2 = 4 compress_stride, 63 with the defaults) every row sees one level-2 key fewer (its most
  // recent) in the level-2 normalizer.
  bool level2_mask_quirk = false;
  // Skip stage 2 (output stays 0): for measurements of the selection alone.
  bool selection_only = false;
};

// Rounds to the nearest bfloat16 value (ties to even; subnormals kept, overflow to infinity).
double RoundToBf16(double x);

// Returns every output (present_* as the non-shared layout).
Outputs Run(const AttentionAttributes& attrs, const Inputs& in, const Options& options = {});

}  // namespace infllmv2::reference
