// The one place that decides dense or sparse (docs/op-spec.md, "Mode").
#pragma once

#include "infllmv2/attention_params.h"

namespace infllmv2 {

// Per batch entry: forced modes win; in auto mode sparse iff dense_len == -1 or total >= dense_len.
inline bool UseSparse(const AttentionAttributes& attrs, AttentionMode mode, int64_t total_length) {
  switch (mode) {
    case AttentionMode::kForceDense: return false;
    case AttentionMode::kForceSparse: return true;
    case AttentionMode::kAuto: break;
  }
  return attrs.dense_len == -1 || total_length >= attrs.dense_len;
}

}  // namespace infllmv2
