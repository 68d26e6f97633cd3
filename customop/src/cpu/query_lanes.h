// Query rows in vector lanes, the layout of the key-major microkernels (microkernels.h), used by
// selection (stage 1: the G heads of one token) and block attention (the rows of all tokens of a
// work item). Row r = t * G + g is head g of token t; key rows are read as they are.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "cpu/microkernels.h"

namespace infllmv2::cpu {

struct QueryLanes {
  int64_t gw = 0;  // rows rounded up to the vector width
  // Stage 1's floats per window of scores: gw, or for few rows (FewRows) the rows rounded up to a
  // power of two, the compact layout of the few-rows kernels (4 floats a window for 4 heads, not 16).
  int64_t ws = 0;
  // Row r, dim i at ((r / stride) * D + i) * stride + r % stride, stride = gw, or the vector width
  // when blocked; padding rows 0.
  std::vector<float> qt;
  std::vector<float> lse;  // stage 1: [ws] normalizers, +inf on padding heads (they add nothing)
  // One token's few heads (G <= few_rows_max, D a multiple of width): the rows again, as
  // few_rows_layout lays them out for the few-rows score kernels (which spend the lanes on rows of
  // several keys instead of on padding rows); empty otherwise.
  std::vector<float> few_rows;
  int64_t rows = 0;

  static bool FewRows(const Microkernels& mk, int64_t tokens, int64_t G, int64_t D) {
    return tokens == 1 && G <= mk.few_rows_max && D % mk.width == 0;
  }

  static int64_t LanesFor(const Microkernels& mk, int64_t rows) { return (rows + mk.width - 1) / mk.width * mk.width; }
  // ws of one token's G heads of size D.
  static int64_t ScoreStride(const Microkernels& mk, int64_t G, int64_t D) {
    if (!FewRows(mk, 1, G, D)) return LanesFor(mk, G);
    int64_t ws = 1;
    while (ws < G) ws *= 2;
    return ws;
  }
  // Heads g < G of `tokens` tokens, head g of token t at q + t * token_stride + g * D. Blocked: one
  // [D][width] block per lane vector, so that a vector's query and score rows are contiguous
  // (long [D][gw] rows fall into few L1 sets).
  void Set(const Microkernels& mk, const float* q, int64_t G, int64_t D, int64_t tokens = 1, int64_t token_stride = 0,
           bool blocked = false) {
    gw = LanesFor(mk, tokens * G);
    const int64_t stride = blocked ? mk.width : gw;
    qt.assign(static_cast<size_t>(D * gw), 0.0f);
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t g = 0; g < G; ++g) {
        const int64_t r = t * G + g;
        float* dst = qt.data() + (r / stride) * D * stride + r % stride;
        for (int64_t i = 0; i < D; ++i) dst[i * stride] = q[t * token_stride + g * D + i];
      }
    ws = tokens == 1 ? ScoreStride(mk, G, D) : gw;
    lse.assign(static_cast<size_t>(ws), std::numeric_limits<float>::infinity());
    rows = tokens * G;
    few_rows.clear();
    if (FewRows(mk, tokens, G, D)) {
      few_rows.assign(static_cast<size_t>(mk.few_rows_max * D), 0.0f);
      mk.few_rows_layout(q, static_cast<int>(G), D, few_rows.data());
    }
  }
};

}  // namespace infllmv2::cpu
