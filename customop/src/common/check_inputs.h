// The one input check of SwitchableAttention, used by the CPU and the CUDA kernel alike.
#pragma once

#include <string>

#include "infllmv2/attention_params.h"

namespace infllmv2 {

// Upper bounds of the attributes (docs/op-spec.md): positions are int32 (seqlens_k), blocks and
// windows are at most 64k tokens, and a selection row holds at most 2^20 blocks.
constexpr int64_t kMaxHeads = 4096;
constexpr int64_t kMaxTokens = 2147483647;
constexpr int64_t kMaxBlockTokens = 65536;
constexpr int64_t kMaxBudget = 1 << 20;

// Validates attributes once at kernel creation. Returns "" when valid, else a message naming the
// attribute, the expected and the actual value.
std::string CheckAttributes(const AttentionAttributes& attrs);

// Whether seqlens_k has an allowed shape: [B] or [B, 1] (ReduceSum with keepdims, as genai-built
// graphs feed GQA).
bool SeqlensShapeOk(const InputShape& seqlens_k, int64_t batch);

// Validates the shapes (and, when readable on the host, seqlens_k values) of one call and fills
// `params`. Returns "" when valid, else a message naming the input, the expected and the actual
// shape or value.
std::string CheckInputs(const AttentionAttributes& attrs, const AttentionInputs& in, AttentionParams* params);

}  // namespace infllmv2
