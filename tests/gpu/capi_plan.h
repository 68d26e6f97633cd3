// The host half of the GPU check's C ABI (capi_plan.cc): the op's attributes and checked params
// from the ABI's attr/dim arrays. Shared with capi.cu.
#pragma once

#include <cstdint>
#include <string>

#include "infllmv2/attention_params.h"

namespace infllmv2::gpu_check {

// attr: block_size, compress_kernel, compress_stride, init_blocks, window_size, topk, dense_len,
// lse_approx, score_precision, softcap x 1024, rotary_dim (0: off), rotary_interleaved (12 values;
// the Extras overload reads the first 8). dim: B, S, H, Hkv, D,
// past capacity (0: none), total_sequence_length, attention_mode, kv_splits (cuda::RunOptions: 0 automatic, -1 no
// split, n splits), past_compressed_key capacity (0: none). Checked by the op's own CheckAttributes/CheckInputs; "" or
// the reason.
std::string Plan(const int64_t* attr, const int64_t* dim, AttentionAttributes* a, AttentionParams* p);

// What the C++ driver adds to a case: softcap, score_precision, and rotary (cos/sin caches of
// rotary_dim / 2 columns, one row per position up to total_sequence_length + 8). rotary_dim 0: off.
struct Extras {
  float softcap = 0.0f;
  int64_t score_precision = 0;
  int64_t rotary_dim = 0;
  bool interleaved = false;
};
std::string Plan(const int64_t* attr, const int64_t* dim, const Extras& x, AttentionAttributes* a, AttentionParams* p);

}  // namespace infllmv2::gpu_check
