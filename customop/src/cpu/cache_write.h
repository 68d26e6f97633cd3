// Stages 1 and 2 of the CPU kernel: the KV cache write and the level-1 compressed keys.
#pragma once

#include "cpu/call_context.h"

namespace infllmv2::cpu {

// present_key/present_value: past rows (unless in place), then the new (rotated) keys and values.
template <typename T>
void WriteKeyValueCache(const Call<T>& c, const ParallelFor& pf);

// Level-1 compressed keys of every complete window of the present keys into `out` ([B, Hkv,
// rules.compressed_capacity, D]): windows entirely in the past copied from past_compressed_key
// when the plan says so, new ones the fp32 mean of the window's keys, stored in T.
template <typename T>
void WriteCompressedKeys(const Call<T>& c, T* out, const ParallelFor& pf);

}  // namespace infllmv2::cpu
