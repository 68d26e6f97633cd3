// A decode step whose two best candidate blocks differ in fp32 and tie once their group-summed
// stage-1 scores are rounded to bf16 (score_precision 1): fp32 picks the higher block, bf16 the
// lower index. Used by the CPU and the emulated CUDA tests of score_precision.
#pragma once

#include <cmath>

#include "test_support.h"

namespace infllmv2::testing {

// One kv head of one query head, D 64 (the CUDA kernel's smallest), scale 1, query (1, 0, ..., 0): a window's score is
// the mean of dimension 0 of its keys. Block 16, windows 8 at stride 4; init 1, a one-block window, topk 3: budget 4 =
// block 0, one block by score and the local blocks qb - 1, qb. Total 100 (p = 99, qb 6): candidates 1..4. Keys are 0
// but in block 1 (value a) and block 3 (value c = a + 2^-12), so block 3 scores exp(2^-12) = 1 + 2.4e-4 times block 1
// (blocks 2 and 4 see only half-covered windows): fp32 picks block 3; bf16 (relative spacing 2^-8) usually rounds both
// to one value and, on the tie, picks block 1. a = 2^-5 + k 2^-12: a and c are exact in fp32, fp16 and bf16. Whether
// the variant k ties in bf16 is for the caller to check (on the reference).
inline Case Bf16TieCase(int k, Tensors& t) {
  Case c;
  c.seq_len = 1;
  c.past_capacity = 99;
  c.num_heads = 1;
  c.kv_num_heads = 1;
  c.head_size = 64;
  c.attrs.block_size = 16;
  c.attrs.compress_kernel = 8;
  c.attrs.compress_stride = 4;
  c.attrs.window_size = 16;
  c.attrs.topk = 3;
  c.attrs.scale = 1.0f;
  c.mode = 2;
  c.seed = 2700 + k;
  t = MakeTensors(c);
  const float a = std::ldexp(1.0f, -5) + static_cast<float>(k) * std::ldexp(1.0f, -12);
  const float hot = a + std::ldexp(1.0f, -12);
  std::fill(t.query.begin(), t.query.end(), 0.0f);
  t.query[0] = 1.0f;
  std::fill(t.past_key.begin(), t.past_key.end(), 0.0f);
  std::fill(t.key.begin(), t.key.end(), 0.0f);
  for (int64_t tok = 16; tok < 32; ++tok) t.past_key[tok * c.head_size] = a;
  for (int64_t tok = 48; tok < 64; ++tok) t.past_key[tok * c.head_size] = hot;
  return c;
}

}  // namespace infllmv2::testing
