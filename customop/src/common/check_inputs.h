// The one input check of SwitchableAttention, used by the CPU and the CUDA kernel alike.
#pragma once

#include <string>

#include "infllmv2/attention_params.h"

namespace infllmv2 {

// Validates attributes once at kernel creation. Returns "" when valid, else a message naming the
// attribute, the expected and the actual value.
std::string CheckAttributes(const AttentionAttributes& attrs);

// Validates the shapes (and, when readable on the host, seqlens_k values) of one call and fills
// `params`. Returns "" when valid, else a message naming the input, the expected and the actual
// shape or value.
// seqlens_k may be [B] or [B, 1] (ReduceSum with keepdims, as genai-built graphs feed GQA).
bool SeqlensShapeOk(const InputShape& seqlens_k, int64_t batch);

std::string CheckInputs(const AttentionAttributes& attrs, const AttentionInputs& in,
                        AttentionParams* params);

}  // namespace infllmv2
