// The tile shapes of the attention kernels (block_attention.cuh), one traits struct per
// (element type, head size, variant). Plain constants, no kernels, so host code (the driver's grid,
// launch_shape.h's split choice, the GPU check) reads the same numbers the kernels are built with.
//
// Variants: prefill (many query rows: 8 warps, 128 rows per CTA; 4 warps and 64 rows at D = 256)
// and decode (one warp, one 16-row tile: a decode token's G query heads of one kv head, or 16 / G
// consecutive tokens when G < 16; the split-KV path supplies the parallelism over keys).
//
// Shared memory: Q staging (rows x (D + 8) elements, the +8 pad keeps ldmatrix rows 16-byte aligned
// and off one bank) and kStages K/V tile pairs (kKeyTile x (D + 8) each). With Q in registers the
// staging area is dead once the fragments are loaded, so it overlays the K/V stages. D = 256 keeps Q
// in shared memory instead (the fragments and O do not fit 255 registers together) and uses 32-key
// tiles, so two stages fit sm_80's 163 KiB per CTA: 64 x 264 x 2 + 4 x 32 x 264 x 2 B = 99 KiB.
#pragma once

#include <cstdint>

namespace infllmv2::cuda {

constexpr int kMaxDynamicSmem = 163 * 1024;  // sm_80's opt-in limit per CTA (sm_90: 227 KiB)

template <int ElemBytes, int D, bool kDecode>
struct AttnTraits {
  static_assert(D % 16 == 0 && D >= 32 && D <= 256, "head size: a multiple of 16 in [32, 256]");
  static constexpr int kHeadSize = D;
  static constexpr bool kIsDecode = kDecode;
  static constexpr int kWarps = kDecode ? 1 : D <= 128 ? 8 : 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kRows = 16 * kWarps;            // query rows per CTA (16 per warp)
  static constexpr int kKeyTile = D <= 128 ? 64 : 32;  // keys per tile (at most 64: masks are 64-bit)
  static constexpr int kStages = 2;                    // K/V tile pairs in flight (the next one loads during this one)
  static constexpr bool kQInRegisters = D <= 128;
  static constexpr int kStride = D + 8;  // elements per shared row
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
  static constexpr int kTileBytes = kKeyTile * kStride * ElemBytes;
  static constexpr int kQBytes = kRows * kStride * ElemBytes;
  static constexpr int kKvBytes = 2 * kStages * kTileBytes;
  static constexpr int kSmemBytes = kQInRegisters ? (kQBytes > kKvBytes ? kQBytes : kKvBytes) : kQBytes + kKvBytes;
  // CTAs per SM the register budget is sized for (__launch_bounds__; the SASS check verifies that
  // registers x threads x this fits the 64 K registers of an SM and that nothing spills).
  static constexpr int kMinCtasPerSm = kDecode ? 2 : 1;
  static_assert(kKeyTile <= 64 && kSmemBytes <= kMaxDynamicSmem, "tile does not fit");
};

// The variant a call runs: decode when every row of the call fits one 16-row tile.
inline bool UseDecodeTile(int64_t seq_len, int64_t group) { return seq_len * group <= 16; }

// Query rows per CTA of the variant a call runs (the driver's grid and ChooseKvSplits); the same for
// both 16-bit types.
inline int AttentionRowsPerCta(int64_t seq_len, int64_t group, int64_t head_size) {
  if (UseDecodeTile(seq_len, group)) return AttnTraits<2, 64, true>::kRows;
  switch (head_size) {
    case 64:
      return AttnTraits<2, 64, false>::kRows;
    case 96:
      return AttnTraits<2, 96, false>::kRows;
    case 128:
      return AttnTraits<2, 128, false>::kRows;
    default:
      return AttnTraits<2, 256, false>::kRows;
  }
}

}  // namespace infllmv2::cuda
