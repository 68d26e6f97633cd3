// The one parameter set of SwitchableAttention (docs/op-spec.md), shared by the input check, the
// CPU kernel, the CUDA kernel and the tests. Plain data only: no ONNX Runtime types.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace infllmv2 {

// Value of the optional `attention_mode` input (docs/op-spec.md, input 10).
enum class AttentionMode : int32_t {
  kAuto = 0,         // dense iff total length < dense_len (per batch entry)
  kForceDense = 1,   // always dense (= com.microsoft::GroupQueryAttention)
  kForceSparse = 2,  // always InfLLM-V2 sparse
};

// Node attributes, read once when the kernel is created and immutable afterwards.
struct AttentionAttributes {
  int64_t num_heads = 0;           // H: query heads (required)
  int64_t kv_num_heads = 0;        // Hkv: key/value heads (required)
  float scale = 0.0f;              // softmax scale; 0 means 1/sqrt(D)
  float softcap = 0.0f;            // 0 = off; else softcap * tanh(score / softcap)
  int64_t do_rotary = 0;           // 1: apply rotary to q and k inside the op
  int64_t rotary_interleaved = 0;  // 1: rotate (2i, 2i+1) pairs; 0: (i, i + rotary_dim/2)
  int64_t local_window_size = -1;  // dense only: attend to the last local_window_size keys (GQA); -1 = off
  // Sparse (InfLLM-V2) attributes; defaults are MiniCPM4.1's.
  int64_t block_size = 64;       // B: key/value block size of selection and attention
  int64_t compress_kernel = 32;  // l1: level-1 compression window
  int64_t compress_stride = 16;  // s1: level-1 compression stride
  int64_t init_blocks = 1;       // always-selected leading blocks
  int64_t window_size = 2048;    // local window in tokens (window_size / B blocks + own block)
  int64_t topk = 64;             // dynamic blocks; budget K = topk + window_size / B
  int64_t dense_len = 8192;      // auto mode: dense iff total < dense_len; -1 = always sparse
  int64_t lse_approx = 1;        // 1: normalize stage-1 scores by the LSE over level-2 keys
  int64_t score_precision = 0;   // 0: fp32 group-summed stage-1 scores; 1: rounded to bf16 (RNE) before pooling

  int64_t LocalBlocks() const { return window_size / block_size; }
  int64_t Budget() const { return topk + LocalBlocks(); }  // K, last dim of selected_blocks
};

// Shape of one input as seen by the check; `present == false` for an omitted optional input.
struct InputShape {
  bool present = false;
  std::vector<int64_t> dims;
};

// Everything the check saw, in input order (docs/op-spec.md inputs 0..10).
struct AttentionInputs {
  InputShape query, key, value, past_key, past_value, seqlens_k, total_sequence_length, cos_cache, sin_cache,
      past_compressed_key, attention_mode;
  const int32_t* seqlens_k_data = nullptr;  // host copy, or nullptr when not readable (device)
  int32_t total_sequence_length_value = 0;  // always on the host
  int32_t attention_mode_value = 0;         // 0 when the input is absent
};

// Derived sizes of one call. Filled by CheckInputs, read by every kernel.
struct AttentionParams {
  int64_t batch = 0;                        // B
  int64_t seq_len = 0;                      // S: new tokens per batch entry
  int64_t num_heads = 0;                    // H
  int64_t kv_num_heads = 0;                 // Hkv
  int64_t group = 0;                        // G = H / Hkv
  int64_t head_size = 0;                    // D
  bool packed_qkv = false;                  // query holds [q | k | v] per token
  bool has_past = false;                    // past_key/past_value given
  int64_t past_capacity = 0;                // P: dim 2 of past_key (0 without past)
  int64_t present_capacity = 0;             // dim 2 of present_key = max(total_sequence_length, P)
  int64_t total_sequence_length = 0;        // input 6
  bool is_first_prompt = false;             // S == total_sequence_length: the past is ignored
  int64_t rotary_dim = 0;                   // 2 * cos_cache dim 1 when do_rotary
  int64_t max_position = 0;                 // cos_cache dim 0 when do_rotary
  bool has_past_compressed = false;         // input 9 given
  int64_t past_compressed_capacity = 0;     // C: dim 2 of past_compressed_key
  int64_t present_compressed_capacity = 0;  // dim 2 of present_compressed_key
  AttentionMode mode = AttentionMode::kAuto;
  float scale = 0.0f;  // resolved scale (never 0)
  int64_t budget = 0;  // K: last dim of selected_blocks
};

}  // namespace infllmv2
