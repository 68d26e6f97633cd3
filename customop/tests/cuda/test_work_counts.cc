// The performance model's work counts (docs/gpu-performance.md) against what the kernels do on the
// host emulation: per kernel, the CTAs, the mma.sync count, the cp.async copies and bytes and the
// other global bytes (emu::LaunchCounts, counted by the primitives). Each expected value is the
// document's formula evaluated for the shape (with the call's own rules for the lengths, windows and
// spans), so a kernel that loads a compressed key or a K/V tile twice in one CTA, or runs a tile
// nobody needs, fails here.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/call_plan.h"
#include "cuda/block_attention.cuh"
#include "cuda/cache_write.cuh"
#include "cuda/kernel_traits.h"
#include "cuda/selection.cuh"
#include "cuda_emu_backend.h"

namespace infllmv2::testing {
namespace {

struct Work {
  uint64_t ctas = 0, mma = 0, cp_async = 0, cp_async_bytes = 0, load_bytes = 0, store_bytes = 0;
};

std::map<std::string, Work> Measured(const std::vector<emu::LaunchCounts>& log) {
  std::map<std::string, Work> m;
  for (const auto& c : log) {
    Work& w = m[c.kernel];
    w.ctas += c.ctas;
    w.mma += c.mma;
    w.cp_async += c.cp_async;
    w.cp_async_bytes += c.cp_async_bytes;
    w.load_bytes += c.load_bytes;
    w.store_bytes += c.store_bytes;
  }
  return m;
}

void ExpectWork(const std::map<std::string, Work>& got, const std::string& kernel, const Work& want) {
  SCOPED_TRACE(kernel);
  ASSERT_EQ(got.count(kernel), 1u);
  const Work& w = got.at(kernel);
  EXPECT_EQ(w.ctas, want.ctas);
  EXPECT_EQ(w.mma, want.mma);
  EXPECT_EQ(w.cp_async, want.cp_async);
  EXPECT_EQ(w.cp_async_bytes, want.cp_async_bytes);
  EXPECT_EQ(w.load_bytes, want.load_bytes);
  EXPECT_EQ(w.store_bytes, want.store_bytes);
}

uint64_t CeilDiv(int64_t a, int64_t b) { return static_cast<uint64_t>((a + b - 1) / b); }

// A decode step (S = 1) of a sparse call on shared K/V caches (in place) with separate compressed
// buffers, no rotary, fp16; entries past the budget run stage 1. The formulas per kernel:
//   KvCacheWriteKernel  in place: per (b, h) the S new rows, 2 D e bytes read and written each
//                       (e = 2-byte elements); one 16-row tile per (b, h).
//   CompressKernel      per (b, h) and compressed row j: j < past windows: D e read + D e written;
//                       j < windows: l1 D e read (the window's keys) + D e written; else D e written.
//   Stage1LseKernel     per chunk [W0, W1) of `chunk` windows: the windows [W0, hi), hi =
//                       min(N1, W1 + halo), halo = 3 st - 3 with lse_approx, each loaded once (D e
//                       bytes through cp.async) and the G query rows once (G D e) when hi > W0;
//                       mma = ceil((hi - W0) / 16) x 2 x D / 16; 16 partials (8 bytes) stored.
//   Stage1GroupKernel   the chunk's candidate blocks [blo, bhi) = [W0 / pb, W1 / pb) n [init_hi,
//                       local_lo): their windows [blo pb - back, (bhi - 1) pb + ahead] n [0, N1)
//                       loaded once, the G query rows once, mma = ceil(windows / 16) x D / 8; the
//                       unit's 16 x splits partials read twice (8 bytes; max, then sum), the
//                       blocks' scores stored (4 bytes).
//   Stage1TopKKernel    the candidates' scores read (4 bytes each), the budget's row written.
//   attention           per CTA of R query rows and each tile of 64 keys from the first visible key
//                       not yet covered (tiles start at visible keys, not on multiples of 64): K and V
//                       loaded once (64 x D / 8 copies each, the bytes of the keys < total), Q once
//                       (R x D / 8 copies, the bytes of the real rows); mma per tile = R x 64 x D /
//                       1024 (Q K^T and P V, every warp of the CTA).
// The attention formula takes the launch's R (AttentionRowsPerCta): a decode token's G = 16 query
// heads are one 16-row tile (R = 16, one warp), so no mma runs on empty rows.
TEST(WorkCounts, SparseDecodeMatchesTheModel) {
  using T = Float16;
  constexpr int64_t e = sizeof(T);
  for (const int lse : {1, 0}) {
    Case c;
    c.batch = 2;
    c.seq_len = 1;
    c.past_capacity = 600;
    c.totals = {600, 421};
    c.num_heads = 16;
    c.kv_num_heads = 1;
    c.head_size = 128;
    c.mode = 2;
    c.attrs.block_size = 16;
    c.attrs.compress_kernel = 8;
    c.attrs.compress_stride = 4;
    c.attrs.window_size = 32;
    c.attrs.topk = 4;
    c.attrs.lse_approx = lse;
    c.compressed_state_in = Case::State::kConsistent;
    c.round = [](float x) { return ToFloat(FromFloat<T>(x)); };
    c.seed = 900 + lse;
    Tensors t = MakeTensors(c);
    Complete(c);
    SCOPED_TRACE("lse_approx " + std::to_string(lse));
    std::vector<emu::LaunchCounts> log;
    emu::RecordCounts(&log);
    const auto r = RunCudaEmu<T>(c, t, /*share_buffers=*/true, true, true, /*kv_splits=*/-1, nullptr, nullptr, nullptr,
                                 [](cuda::RunOptions& o) { o.stage1_splits = 3; });
    emu::RecordCounts(nullptr);
    ASSERT_EQ(r.error, "");
    const auto got = Measured(log);

    const AttentionParams& p = r.params;
    BufferFacts f;
    f.has_required_outputs = f.has_seqlens = f.has_present_compressed = f.has_selected_blocks = true;
    f.key_in_place = f.value_in_place = true;
    const CallRules rules = MakeCallRules(c.attrs, p, f);
    const cuda::Stage1Shape sh = cuda::Stage1ShapeOf(c.attrs, p, 3);
    ASSERT_EQ(sh.splits, 3);
    const int64_t B = p.batch, Hkv = p.kv_num_heads, G = p.group, D = p.head_size, S = p.seq_len;
    const int64_t l1 = c.attrs.compress_kernel, st = l1 / c.attrs.compress_stride;
    const BlockWindows bw = BlockWindowsOf(rules);
    const int64_t pb = bw.per_block;
    Work cache, comp, lse_w, group, topk, attn;
    cache.ctas = static_cast<uint64_t>(B * Hkv);
    comp.ctas = static_cast<uint64_t>(cuda::CompressTiles(rules) * B * Hkv);
    lse_w.ctas = static_cast<uint64_t>(sh.splits * B * Hkv);
    group.ctas = lse_w.ctas;
    topk.ctas = static_cast<uint64_t>(S * B * Hkv);
    const int64_t R = cuda::AttentionRowsPerCta(S, G, D);
    constexpr int64_t kKeys = cuda::AttnTraits<2, 128, true>::kKeyTile;
    ASSERT_EQ(R, 16);
    const int64_t row_tiles = (S * G + R - 1) / R;
    attn.ctas = static_cast<uint64_t>(row_tiles * Hkv * B);
    for (int64_t b = 0; b < B; ++b) {
      const EntryPlan en = PlanEntry(rules, t.seqlens_k.data(), b);
      const int64_t pos = en.past;  // the step's one token
      for (int64_t h = 0; h < Hkv; ++h) {
        cache.load_bytes += static_cast<uint64_t>(S * 2 * D * e);
        cache.store_bytes += static_cast<uint64_t>(S * 2 * D * e);
        for (int64_t j = 0; j < p.present_compressed_capacity; ++j) {
          if (j < en.past_windows)
            comp.load_bytes += static_cast<uint64_t>(D * e);
          else if (j < en.windows)
            comp.load_bytes += static_cast<uint64_t>(l1 * D * e);
          comp.store_bytes += static_cast<uint64_t>(D * e);
        }
        lse_w.store_bytes += static_cast<uint64_t>(sh.splits * 16 * 8);
        const TokenPlan tp = PlanToken(rules, en, pos);
        std::set<int64_t> visible;  // the keys the token sees
        if (tp.needs_stage1) {
          const Stage1Levels lv = LevelsOf(rules, en, pos);
          const SelectionSpan sp = SpanOf(rules, pos);
          const int64_t n1 = lv.nvis1, halo = lv.use_k2 && 3 * st - 3 > 0 ? 3 * st - 3 : 0;
          for (int64_t ch = 0; ch < sh.splits; ++ch) {
            const int64_t W0 = ch * sh.chunk, W1 = W0 + sh.chunk;
            const int64_t hi = std::min(n1, W1 + halo);
            if (hi > W0) {
              lse_w.cp_async += static_cast<uint64_t>((hi - W0 + G) * D / 8);
              lse_w.cp_async_bytes += static_cast<uint64_t>((hi - W0 + G) * D * e);
              lse_w.mma += CeilDiv(hi - W0, 16) * static_cast<uint64_t>(2 * D / 16);
            }
            const int64_t blo = std::max(W0 / pb, sp.init_hi), bhi = std::min(W1 / pb, sp.local_lo);
            if (blo >= bhi) continue;
            const int64_t wlo = std::max<int64_t>(0, blo * pb - bw.back);
            const int64_t whi = std::min(n1, (bhi - 1) * pb + bw.ahead + 1);
            const int64_t windows = std::max<int64_t>(0, whi - wlo);
            group.cp_async += static_cast<uint64_t>((windows + G) * D / 8);
            group.cp_async_bytes += static_cast<uint64_t>((windows + G) * D * e);
            group.mma += CeilDiv(windows, 16) * static_cast<uint64_t>(D / 8);
            group.load_bytes += static_cast<uint64_t>(2 * 16 * sh.ht * sh.splits * 8);
            group.store_bytes += static_cast<uint64_t>((bhi - blo) * 4);
          }
          topk.load_bytes += static_cast<uint64_t>((sp.local_lo - sp.init_hi) * 4);
          topk.store_bytes += static_cast<uint64_t>(p.budget * 4);
          const int32_t* row = r.selected_blocks.data() + (b * Hkv + h) * S * p.budget;
          for (int64_t i = 0; i < p.budget && row[i] >= 0; ++i)
            for (int64_t k = row[i] * c.attrs.block_size; k < (row[i] + 1) * c.attrs.block_size && k <= pos; ++k)
              visible.insert(k);
        } else {
          for (int64_t k = 0; k <= pos; ++k) visible.insert(k);
        }
        // Attention: one CTA (row_tiles = 1 here) per (b, h).
        attn.cp_async += static_cast<uint64_t>(R * D / 8);
        attn.cp_async_bytes += static_cast<uint64_t>(S * G * D * e);
        // Tiles start at the first visible key not yet covered (not on multiples of kKeys).
        std::vector<int64_t> tiles;
        for (auto it = visible.begin(); it != visible.end(); it = visible.lower_bound(tiles.back() + kKeys))
          tiles.push_back(*it);
        for (int64_t k0 : tiles) {
          const int64_t keys = std::min<int64_t>(kKeys, en.total - k0);
          attn.cp_async += static_cast<uint64_t>(2 * kKeys * D / 8);
          attn.cp_async_bytes += static_cast<uint64_t>(2 * keys * D * e);
          attn.mma += static_cast<uint64_t>(R * kKeys * D / 1024);
        }
      }
    }
    ExpectWork(got, "KvCacheWriteKernel", cache);
    ExpectWork(got, "CompressKernel", comp);
    ExpectWork(got, "Stage1LseKernel", lse_w);
    ExpectWork(got, "Stage1GroupKernel", group);
    ExpectWork(got, "Stage1TopKKernel", topk);
    // The attention kernel's global stores (the output rows) are plain stores, not yet counted.
    attn.store_bytes = got.count("BlockAttentionKernel") ? got.at("BlockAttentionKernel").store_bytes : 0;
    ExpectWork(got, "BlockAttentionKernel", attn);
  }
}

}  // namespace
}  // namespace infllmv2::testing
