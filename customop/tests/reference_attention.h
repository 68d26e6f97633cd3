// Slow double-precision reference of SwitchableAttention (test-only). Written straight from
// docs/op-spec.md with no tiling, no online softmax and no shortcuts, so that the CPU kernel (and
// later the CUDA kernel) can be compared with it.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "infllmv2/attention_params.h"

namespace infllmv2::reference {

struct Inputs {  // values as double, layouts as in docs/op-spec.md; empty = absent
  std::vector<double> query, key, value, past_key, past_value, cos_cache, sin_cache, past_compressed_key;
  std::vector<int32_t> seqlens_k;
  // Rounding to the IO element type, applied where the op stores a computed value in T (rotated
  // q and k, compressed keys): identity for a pure double reference.
  std::function<double(double)> store = [](double x) { return x; };
};

struct Outputs {
  std::vector<double> output;                  // [B, S, H*D]
  std::vector<double> present_key, present_value;  // [B, Hkv, present_capacity, D]
  std::vector<double> present_compressed_key;  // [B, Hkv, present_compressed_capacity, D]
  std::vector<int32_t> selected_blocks;        // [B, Hkv, S, K]
};

// `params` from CheckInputs; returns every output (present_* as the non-shared layout).
Outputs Run(const AttentionAttributes& attrs, const AttentionParams& params, const Inputs& in);

}  // namespace infllmv2::reference
