// The driver of the CUDA kernel (mirrors cpu/attention_cpu.cc): the call's stages in order on one
// stream: 1. KV cache write (+ rotated queries), 2. level-1 compressed keys, 3. selection lists,
// 4. attention. Included by the per-dtype .cu files (nvcc) and by emu/kernels_emu.cc (host). The
// attention kernels are compiled per (type, head size) in instantiations/ (attention_launch.h).
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "common/call_plan.h"
#include "cuda/attention_cuda.h"
#include "cuda/attention_launch.h"
#include "cuda/cache_write.cuh"
#include "cuda/launch_shape.h"
#include "cuda/selection.cuh"

namespace infllmv2::cuda {

// The head sizes with attention instantiations (instantiations/); stage 1 has its own limit
// (kStage1MaxHead), checked per call when an entry may run sparse.
inline bool SupportsHeadSizeImpl(int64_t d) { return d == 64 || d == 96 || d == 128 || d == 256; }

// "" or why a grid of (x, y, z) blocks cannot be launched (the device limits: x < 2^31, y and z at
// most 65535), naming the kernel.
inline std::string GridError(const char* kernel, int64_t x, int64_t y, int64_t z) {
  if (x < (int64_t{1} << 31) && y <= 65535 && z <= 65535) return "";
  return std::string("CUDA kernel: ") + kernel + " needs a grid of (" + std::to_string(x) + ", " + std::to_string(y) +
         ", " + std::to_string(z) + ") blocks, beyond the device's limits (x < 2^31, y and z <= 65535)";
}

// "" or the tensor the kernels cannot address: cp.async and ldmatrix move 16-byte chunks, so every
// 16-bit tensor starts on a 16-byte boundary and its rows (D elements) are whole chunks; int32
// tensors start on 4 bytes. A view at another offset (IOBinding) is refused, naming the tensor.
template <class T>
std::string AlignmentError(const AttentionData<T>& d, int64_t head_size) {
  if (head_size * static_cast<int64_t>(sizeof(T)) % 16 != 0)
    return "CUDA kernel: rows of head size " + std::to_string(head_size) + " are not a multiple of 16 bytes";
  const std::pair<const char*, const void*> chunked[] = {{"query", d.query},
                                                         {"key", d.key},
                                                         {"value", d.value},
                                                         {"past_key", d.past_key},
                                                         {"past_value", d.past_value},
                                                         {"cos_cache", d.cos_cache},
                                                         {"sin_cache", d.sin_cache},
                                                         {"past_compressed_key", d.past_compressed_key},
                                                         {"output", d.output},
                                                         {"present_key", d.present_key},
                                                         {"present_value", d.present_value},
                                                         {"present_compressed_key", d.present_compressed_key}};
  for (const auto& [name, ptr] : chunked)
    if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0)
      return std::string("CUDA kernel: ") + name +
             " does not start on a 16-byte boundary (the kernels copy 16-byte chunks); pass a tensor whose data is "
             "16-byte aligned";
  const std::pair<const char*, const void*> words[] = {{"seqlens_k", d.seqlens_k},
                                                       {"selected_blocks", d.selected_blocks}};
  for (const auto& [name, ptr] : words)
    if (reinterpret_cast<uintptr_t>(ptr) % 4 != 0)
      return std::string("CUDA kernel: ") + name + " does not start on a 4-byte boundary";
  return "";
}

template <class T>
std::string RunAttentionImpl(const AttentionAttributes& attrs, const AttentionParams& params,
                             const AttentionData<T>& data, const ScratchAllocator& scratch, void* stream_ptr,
                             const RunOptions& options) {
  const Stream stream = static_cast<Stream>(stream_ptr);
  const BufferFacts f = FactsOf(data, params);
  const std::string buffers = CheckBuffers(params, f);
  if (!buffers.empty()) return buffers;
  KernelArgs<T> a;
  a.rules = MakeCallRules(attrs, params, f);
  a.d = data;
  const CallRules& p = a.rules;
  // seqlens_k stays on the device: what depends on an entry's mode is decided by whether some entry
  // may run sparse. Exact: an entry the device plans has a total in [1, total_sequence_length] (any
  // other is invalid and dense, LengthFaultOf), and the mode rule is monotone in the total.
  const bool maybe_sparse = UseSparse(p, params.total_sequence_length);
  if (attrs.local_window_size > 0 && maybe_sparse) return LocalWindowError(-1);
  if (!SupportsHeadSizeImpl(params.head_size))
    return "CUDA kernel: head size " + std::to_string(params.head_size) + " not supported (64, 96, 128, 256)";
  const std::string alignment = AlignmentError(data, params.head_size);
  if (!alignment.empty()) return alignment;
  if (maybe_sparse && params.head_size > kStage1MaxHead)
    return "CUDA kernel: sparse mode supports head sizes up to " + std::to_string(kStage1MaxHead) +
           " (stage 1); head size " + std::to_string(params.head_size) + " runs dense only";
  if (maybe_sparse && params.group > kStage1MaxGroup)
    return "CUDA kernel: sparse mode supports at most " + std::to_string(kStage1MaxGroup) + " query heads per kv head";
  if (maybe_sparse && params.present_capacity > static_cast<int64_t>(kStage1MaxBlocks) * attrs.block_size)
    return "CUDA kernel: sparse mode supports at most " + std::to_string(kStage1MaxBlocks) + " blocks (" +
           std::to_string(static_cast<int64_t>(kStage1MaxBlocks) * attrs.block_size) + " positions)";

  if (maybe_sparse && attrs.lse_approx != 0 && attrs.compress_kernel / attrs.compress_stride > kS1MaxStep)
    return "CUDA kernel: sparse mode with lse_approx supports compress_kernel / compress_stride <= " +
           std::to_string(kS1MaxStep);
  if (options.kv_splits < -1 || options.kv_splits > kMaxKvSplits)
    return "CUDA kernel: kv_splits " + std::to_string(options.kv_splits) +
           " out of range (-1 = no split, 0 = automatic, 1.." + std::to_string(kMaxKvSplits) + ")";
  a.kv_splits = KvSplitsFor(options.kv_splits, attrs, params);
  const bool split_kv = options.kv_splits > 0 || a.kv_splits > 1;
  const int64_t B = params.batch, S = params.seq_len, H = params.num_heads, Hkv = params.kv_num_heads,
                D = params.head_size;
  const bool decode_tile = UseDecodeTile(S, params.group);
  const int64_t rows_per_cta = AttentionRowsPerCta(S, params.group, D);
  const int64_t row_tiles = (S * params.group + rows_per_cta - 1) / rows_per_cta;
  Stage1Shape s1 = Stage1ShapeOf(attrs, params, options.stage1_splits);
  if (options.stage1_tokens > 0 && options.stage1_tokens < s1.tokens)
    s1.tokens = options.stage1_tokens / s1.tpt * s1.tpt > s1.tpt ? options.stage1_tokens / s1.tpt * s1.tpt : s1.tpt;
  // Every grid below within the device's limits, checked before anything is launched.
  for (const std::string& e :
       {GridError("KvCacheWriteKernel", CacheWriteTiles(p), B * Hkv, 1), GridError("QueryPrepKernel", B * S, 1, 1),
        GridError("CompressKernel", CompressTiles(p), B * Hkv, 1), GridError("SelectionFillKernel", S, Hkv, B),
        GridError("Stage1LseKernel", (s1.tokens + s1.tpt - 1) / s1.tpt * s1.ht * s1.splits, Hkv, B),
        GridError("AttentionKernel", row_tiles * a.kv_splits, Hkv, B),
        GridError("KvCombineKernel", (B * S * H + kCombineWarps - 1) / kCombineWarps, 1, 1)})
    if (!e.empty()) return e;
  // Scratch: rotated queries, compressed keys nobody asked for, selection lists nobody asked for.
  const bool prep_query = p.do_rotary || p.packed_qkv;
  T* q_rot = nullptr;
  if (prep_query && (q_rot = static_cast<T*>(scratch(sizeof(T) * B * S * H * D))) == nullptr)
    return "CUDA kernel: out of memory";
  // A call no entry of which may run sparse computes compressed keys only when they are requested
  // and runs no selection kernel, with no scratch for either.
  const bool compute_compressed = f.has_present_compressed || maybe_sparse;
  const bool fill_selection = f.has_selected_blocks || maybe_sparse;
  a.comp = data.present_compressed_key;
  if (compute_compressed && a.comp == nullptr &&
      (a.comp = static_cast<T*>(scratch(sizeof(T) * B * Hkv * p.compressed_capacity * D))) == nullptr)
    return "CUDA kernel: out of memory";
  a.sel = data.selected_blocks;
  if (fill_selection && a.sel == nullptr &&
      (a.sel = static_cast<int32_t*>(scratch(sizeof(int32_t) * B * Hkv * S * p.budget))) == nullptr)
    return "CUDA kernel: out of memory";
  a.q = prep_query ? q_rot : data.query;
  a.q_heads = prep_query ? static_cast<int>(H) : p.packed_qkv ? static_cast<int>(H + 2 * Hkv) : static_cast<int>(H);

  auto mark = [&options](const char* stage) {
    if (options.mark != nullptr) options.mark(options.mark_ctx, stage);
  };
  // 1. KV cache write (+ rotated queries); in place over the new rows only.
  mark("cache_write");
  {
    auto* k = &KvCacheWriteKernel<T>;
    IL_LAUNCH("KvCacheWriteKernel", k, dim3(static_cast<unsigned>(CacheWriteTiles(p)), static_cast<unsigned>(B * Hkv)),
              dim3(kCacheThreads), stream, a);
  }
  if (prep_query) {
    auto* k = &QueryPrepKernel<T>;
    IL_LAUNCH("QueryPrepKernel", k, dim3(static_cast<unsigned>(B * S)), dim3(kCacheThreads), stream, a, q_rot);
  }
  // 2. Level-1 compressed keys; in place over the new windows only.
  if (compute_compressed) {
    mark("compress");
    auto* k = &CompressKernel<T>;
    IL_LAUNCH("CompressKernel", k, dim3(static_cast<unsigned>(CompressTiles(p)), static_cast<unsigned>(B * Hkv)),
              dim3(kCacheThreads), stream, a);
  }
  // 3. Selection lists: rows within the budget (and the -1 rows of dense and padding tokens when
  //    selected_blocks is requested), then stage 1 for the rows that outgrow it (CTAs of other
  //    tokens return at once; the per-entry decision is on the device).
  if (fill_selection) {
    mark("selection");
    const dim3 grid(static_cast<unsigned>(S), static_cast<unsigned>(Hkv), static_cast<unsigned>(B));
    auto* k = &SelectionFillKernel<T>;
    IL_LAUNCH("SelectionFillKernel", k, grid, dim3(kSelectThreads), stream, a);
    if (maybe_sparse) {
      // Stage 1 in token chunks whose block scores fit the scratch (one chunk but at long prefill).
      s1.part = static_cast<Stage1Partial*>(
          scratch(sizeof(Stage1Partial) * B * Hkv * ((s1.tokens + s1.tpt - 1) / s1.tpt) * s1.ht * s1.splits * 16));
      s1.scores = static_cast<float*>(scratch(sizeof(float) * B * Hkv * s1.tokens * s1.nblk));
      if (s1.part == nullptr || s1.scores == nullptr) return "CUDA kernel: out of memory";
      for (s1.s0 = 0; s1.s0 < S; s1.s0 += s1.tokens) {
        s1.s_count = static_cast<int>(S - s1.s0 < s1.tokens ? S - s1.s0 : s1.tokens);
        s1.units = (s1.s_count + s1.tpt - 1) / s1.tpt;
        const dim3 grid_lse(static_cast<unsigned>(s1.units * s1.ht * s1.splits), static_cast<unsigned>(Hkv),
                            static_cast<unsigned>(B));
        const dim3 grid_group(static_cast<unsigned>(s1.units * s1.splits), static_cast<unsigned>(Hkv),
                              static_cast<unsigned>(B));
        const dim3 grid_topk(static_cast<unsigned>(s1.s_count), static_cast<unsigned>(Hkv), static_cast<unsigned>(B));
        if (D == 64) {
          auto* k1 = &Stage1LseKernel<T, 64>;
          IL_LAUNCH("Stage1LseKernel", k1, grid_lse, dim3(kS1Threads), stream, a, s1);
          auto* k2 = &Stage1GroupKernel<T, 64>;
          IL_LAUNCH("Stage1GroupKernel", k2, grid_group, dim3(kS1Threads), stream, a, s1);
        } else if (D == 96) {
          auto* k1 = &Stage1LseKernel<T, 96>;
          IL_LAUNCH("Stage1LseKernel", k1, grid_lse, dim3(kS1Threads), stream, a, s1);
          auto* k2 = &Stage1GroupKernel<T, 96>;
          IL_LAUNCH("Stage1GroupKernel", k2, grid_group, dim3(kS1Threads), stream, a, s1);
        } else {
          auto* k1 = &Stage1LseKernel<T, 128>;
          IL_LAUNCH("Stage1LseKernel", k1, grid_lse, dim3(kS1Threads), stream, a, s1);
          auto* k2 = &Stage1GroupKernel<T, 128>;
          IL_LAUNCH("Stage1GroupKernel", k2, grid_group, dim3(kS1Threads), stream, a, s1);
        }
        auto* k3 = &Stage1TopKKernel<T>;
        IL_LAUNCH("Stage1TopKKernel", k3, grid_topk, dim3(kS1Threads), stream, a, s1);
      }
    }
  }
  // 4. Attention (split-KV: partials into fp32 scratch, then the combine kernel).
  AttentionGrid grid;
  grid.decode = decode_tile;
  grid.row_tiles = row_tiles;
  grid.out_rows = B * S * H;
  if (split_kv &&
      (grid.part = static_cast<float*>(scratch(sizeof(float) * B * S * H * a.kv_splits * (D + 2)))) == nullptr)
    return "CUDA kernel: out of memory";
  mark("attention");
  std::string error;
  switch (D) {
    case 64:
      error = LaunchAttention<T, 64>(a, grid, stream, options);
      break;
    case 96:
      error = LaunchAttention<T, 96>(a, grid, stream, options);
      break;
    case 128:
      error = LaunchAttention<T, 128>(a, grid, stream, options);
      break;
    default:
      error = LaunchAttention<T, 256>(a, grid, stream, options);
      break;
  }
  if (!error.empty()) return error;
  mark("end");
  return "";
}

}  // namespace infllmv2::cuda

namespace infllmv2::cuda {

template <typename T>
std::string RunAttention(const AttentionAttributes& attrs, const AttentionParams& params, const AttentionData<T>& data,
                         const ScratchAllocator& scratch, void* stream, const RunOptions& options) {
  try {
    return RunAttentionImpl<T>(attrs, params, data, scratch, stream, options);
  } catch (const std::exception& e) {
    return std::string("CUDA kernel: ") + e.what();
  }
}

}  // namespace infllmv2::cuda

// One dtype's entry point (explicit instantiation, one translation unit per dtype).
#define INFLLMV2_CUDA_INSTANTIATE(T)                                                                            \
  template std::string infllmv2::cuda::RunAttention<T>(const AttentionAttributes&, const AttentionParams&,      \
                                                       const AttentionData<T>&, const ScratchAllocator&, void*, \
                                                       const RunOptions&);
