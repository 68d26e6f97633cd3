// The CUDA kernels on the host emulation against the double reference (fp16 and bf16 I/O) and the
// CPU kernel (fp16), on small shapes (the emulator runs every CUDA thread as a std::thread).
// Tolerances: docs/numerics.md.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>

#include "common/call_plan.h"
#include "cuda/selection.cuh"
#include "cuda/split_kv.cuh"
#include "cuda_emu_backend.h"
#include "score_precision_case.h"

namespace infllmv2::testing {
namespace {

// Tolerances of the CUDA kernel against the double reference (docs/numerics.md): P is rounded to
// the 16-bit type before P V (FlashAttention-2), keys/values/queries are exact 16-bit values.
template <typename T>
Tolerance CudaTolerance() {
  if constexpr (std::is_same_v<T, Float16>)
    return {2e-3, 1e-3, 0.0, 1e-3};
  else
    return {1.6e-2, 8e-3, 0.0, 8e-3};
}

template <typename T>
void ExpectCudaMatchesReference(Case c, bool share = false, int kv_splits = 0, int stage1_splits = 0) {
  c.round = [](float x) { return ToFloat(FromFloat<T>(x)); };
  Tensors t = MakeTensors(c);
  Complete(c);
  SCOPED_TRACE(std::string(std::is_same_v<T, Float16> ? "fp16 " : "bf16 ") + Describe(c) + (share ? " shared" : "") +
               " kv_splits " + std::to_string(kv_splits));
  const auto ref = RunReference<T>(c, t);
  const auto k = RunCudaEmu<T>(c, t, share, true, true, kv_splits, nullptr, nullptr, nullptr,
                               [stage1_splits](cuda::RunOptions& o) { o.stage1_splits = stage1_splits; });
  ASSERT_EQ(k.error, "");
  const Tolerance tol = CudaTolerance<T>();
  EXPECT_EQ(k.selected_blocks, ref.selected_blocks);
  EXPECT_LE(MaxAbsDiff(k.output, ref.output), tol.output);
  if (!share) {  // shared buffers keep the caller's rows past the valid length; the reference zeroes them
    EXPECT_LE(MaxAbsDiff(k.present_key, ref.present_key), tol.present_key);
    EXPECT_LE(MaxAbsDiff(k.present_value, ref.present_value), tol.present_value);
  }
  EXPECT_LE(MaxAbsDiff(k.present_compressed_key, ref.present_compressed_key), tol.present_compressed_key);
  if constexpr (std::is_same_v<T, Float16>) {  // and the CPU kernel: identical selections and caches
    const auto cpu = RunKernel<Float16>(c, t, false, share);
    ASSERT_EQ(cpu.error, "");
    EXPECT_EQ(k.selected_blocks, cpu.selected_blocks);
    EXPECT_EQ(0, std::memcmp(k.present_value.data(), cpu.present_value.data(), 2 * k.present_value.size()));
    std::vector<double> cpu_key(cpu.present_key.size());
    for (size_t i = 0; i < cpu_key.size(); ++i) cpu_key[i] = ToFloat(cpu.present_key[i]);
    EXPECT_LE(MaxAbsDiff(k.present_key, cpu_key), 1e-3);
  }
}

void BothTypes(const Case& c, bool share = false, int kv_splits = 0, int stage1_splits = 0) {
  ExpectCudaMatchesReference<Float16>(c, share, kv_splits, stage1_splits);
  ExpectCudaMatchesReference<BFloat16>(c, share, kv_splits, stage1_splits);
}

TEST(CudaEmu, DenseFirstPrompt) {
  int i = 0;
  for (auto [S, G, D] : std::vector<std::tuple<int, int, int>>{{17, 2, 64}, {70, 1, 128}, {5, 16, 64}}) {
    Case c;
    c.seq_len = S;
    c.kv_num_heads = 1 + i % 2;
    c.num_heads = c.kv_num_heads * G;
    c.head_size = D;
    c.mode = 1;
    c.seed = 500 + i++;
    BothTypes(c);
  }
}

TEST(CudaEmu, DenseDecodeAndChunkedPrefill) {
  int i = 0;
  for (auto [S, P] : std::vector<std::pair<int, int>>{{1, 130}, {7, 100}}) {
    Case c;
    c.seq_len = S;
    c.past_capacity = P + 5;
    c.totals = {P + S};
    c.num_heads = 4;
    c.kv_num_heads = 2;
    c.mode = 1;
    c.seed = 600 + i++;
    BothTypes(c, false, /*kv_splits=*/-1);  // the plain kernel (the automatic choice splits these: SplitKv* tests)
  }
}

TEST(CudaEmu, RaggedPackedRotarySoftcapWindow) {
  Case c;
  c.batch = 3;
  c.seq_len = 20;
  c.totals = {20, 7, 13};
  c.mode = 1;
  c.packed = true;
  c.rotary = true;
  BothTypes(c);
  Case d;
  d.batch = 2;
  d.seq_len = 3;
  d.past_capacity = 90;
  d.totals = {93, 40};
  d.mode = 1;
  d.rotary = true;
  d.interleaved = true;
  d.attrs.softcap = 2.0f;
  d.attrs.local_window_size = 37;
  BothTypes(d);
}

TEST(CudaEmu, SharedBuffersAndCompressedState) {
  Case c;
  c.seq_len = 2;
  c.past_capacity = 80;
  c.totals = {70};
  c.total_sequence_length = 80;
  c.mode = 1;
  c.compressed_state_in = Case::State::kPerturbed;
  BothTypes(c, /*share=*/true);
}

// Sparse mode within the budget: every block up to the token's own (no stage 1).
TEST(CudaEmu, SparseWithinBudget) {
  Case c;
  c.seq_len = 3;
  c.past_capacity = 120;
  c.totals = {123};
  c.mode = 2;
  c.attrs = SmallBudget();
  BothTypes(c);
}

// Small blocks so that stage 1 runs at emulator-friendly lengths: K = 4 + 32/16 = 6 blocks of 16
// tokens (several blocks per 64-key tile of the attention kernel), windows of 8 every 4 tokens.
AttentionAttributes TinyBlocks() {
  AttentionAttributes a;
  a.block_size = 16;
  a.compress_kernel = 8;
  a.compress_stride = 4;
  a.window_size = 32;
  a.topk = 4;
  return a;
}

// Head sizes 96 and 256 (their own tiles: D = 256 keeps Q in shared memory and uses 32-key tiles):
// a dense prompt over several key tiles with a ragged chunk after a past (boundary and full tiles,
// the two-stage pipeline over many tiles), the plain and the split-KV kernel, and dense decode on
// the 16-row decode tile; D = 96 also sparse through stage 1 (a chunk past the budget) with the
// 128-row prefill tile and G = 2 (several tokens per 16-row slice). D = 256 with an entry that
// may run sparse is refused naming stage 1's limit.
TEST(CudaEmu, HeadSizes96And256) {
  int i = 0;
  for (const int D : {96, 256}) {
    for (const int splits : {-1, 3}) {
      Case c;
      c.batch = 2;
      c.seq_len = 40;
      c.past_capacity = 110;
      c.totals = {150, 41};
      c.num_heads = 2;
      c.kv_num_heads = 1;
      c.head_size = D;
      c.mode = 1;
      c.attrs.softcap = D == 96 ? 3.0f : 0.0f;
      c.seed = 900 + i++;
      BothTypes(c, false, splits);
    }
    Case d;
    d.batch = 2;
    d.seq_len = 1;
    d.past_capacity = 140;
    d.totals = {141, 37};
    d.num_heads = 8;
    d.kv_num_heads = 2;
    d.head_size = D;
    d.mode = 1;
    d.seed = 900 + i++;
    BothTypes(d);
  }
  Case c;
  c.seq_len = 12;
  c.past_capacity = 100;
  c.totals = {112};
  c.num_heads = 2;
  c.kv_num_heads = 1;
  c.head_size = 96;
  c.mode = 2;
  c.attrs = TinyBlocks();
  c.seed = 910;
  BothTypes(c);
  c.head_size = 256;
  Tensors t = MakeTensors(c);
  Complete(c);
  EXPECT_NE(RunCudaEmu<Float16>(c, t).error.find("sparse mode supports head sizes up to 128"), std::string::npos);
}

// Stage 1 on the device (tokens past the budget of K = 6 blocks): selections identical to the
// reference and the CPU kernel (fp16), outputs within tolerance. Prefill, both normalizers.
TEST(CudaEmu, SparseStage1Prefill) {
  for (int lse : {1, 0}) {
    Case c;
    c.seq_len = 112;
    c.num_heads = 4;
    c.kv_num_heads = 1;
    c.mode = 2;
    c.attrs = TinyBlocks();
    c.attrs.lse_approx = lse;
    c.seed = 700 + lse;
    BothTypes(c);
  }
}

// Decode (ragged batch: one entry past the budget, one within) and a prefill chunk after a past,
// G = 16 and D = 128 (the official shape), incremental compressed state.
TEST(CudaEmu, SparseStage1DecodeAndChunk) {
  Case c;
  c.batch = 2;
  c.seq_len = 1;
  c.past_capacity = 450;
  c.totals = {451, 300};
  c.num_heads = 16;
  c.kv_num_heads = 1;
  c.head_size = 128;
  c.mode = 2;
  c.attrs = SmallBudget();
  c.compressed_state_in = Case::State::kConsistent;
  c.seed = 710;
  BothTypes(c);
  Case d;
  d.seq_len = 16;
  d.past_capacity = 120;
  d.totals = {136};
  d.num_heads = 16;
  d.kv_num_heads = 1;
  d.head_size = 128;
  d.mode = 2;
  d.attrs = TinyBlocks();
  d.attrs.lse_approx = 0;
  d.seed = 711;
  BothTypes(d);
}

// Stage 1's window chunks (selection.cuh): the normalizer partials of 1, 2 and 3 chunks of 64
// windows merged, level-2 rows near a chunk's end reading the next chunk's windows, blocks pooled
// across chunk edges. A decode token (G = 16, D = 128, 149 windows; the launch's chunk count
// checked) and a 4-token chunk of G = 4 (four tokens in one 16-row tile), both normalizers; the
// score_precision 1 rounding with 2 chunks.
TEST(CudaEmu, Stage1WindowChunks) {
  int i = 0;
  for (auto [S, G, lse, splits] :
       std::vector<std::tuple<int, int, int, int>>{{1, 16, 1, 2}, {1, 16, 0, 3}, {4, 4, 1, 3}, {4, 4, 0, 1}}) {
    Case c;
    c.seq_len = S;
    c.past_capacity = 600;
    c.totals = {600 + S};
    c.num_heads = G;
    c.kv_num_heads = 1;
    c.head_size = G == 16 ? 128 : 64;
    c.mode = 2;
    c.attrs = TinyBlocks();
    c.attrs.lse_approx = lse;
    c.attrs.score_precision = i == 2 ? 1 : 0;
    c.compressed_state_in = Case::State::kConsistent;
    c.seed = 740 + i++;
    SCOPED_TRACE("S " + std::to_string(S) + " G " + std::to_string(G) + " splits " + std::to_string(splits));
    BothTypes(c, false, 0, splits);
    // The chunk count the launches ran with.
    c.round = [](float x) { return ToFloat(FromFloat<Float16>(x)); };
    Tensors t = MakeTensors(c);
    std::vector<emu::LaunchCounts> counts;
    emu::RecordCounts(&counts);
    const auto r = RunCudaEmu<Float16>(c, t, false, true, true, 0, nullptr, nullptr, nullptr,
                                       [splits = splits](cuda::RunOptions& o) { o.stage1_splits = splits; });
    emu::RecordCounts(nullptr);
    ASSERT_EQ(r.error, "");
    bool seen = false;
    for (const auto& k : counts)
      if (k.kernel == "Stage1LseKernel") {
        EXPECT_EQ(k.grid.x, static_cast<unsigned>(splits));
        seen = true;
      }
    EXPECT_TRUE(seen);
  }
}

// Stage 1's first two kernels on their own: the block scores they leave for the top-k equal the
// spec's formula evaluated in double (scores, level-2 or level-1 log-sum-exp per head, group sum,
// max-pool) within fp32 rounding, for every candidate block of every token. Where a selection
// test only sees the order of the scores, this sees their values, so a normalizer term lost at a
// chunk edge shows.
template <typename T, int D>
void ExpectStage1BlockScores(Case c, int splits) {
  c.round = [](float x) { return ToFloat(FromFloat<T>(x)); };
  Tensors t = MakeTensors(c);
  Complete(c);
  const auto full = RunCudaEmu<T>(c, t);  // the compressed keys the kernels read
  ASSERT_EQ(full.error, "");
  const AttentionParams& p = full.params;
  ASSERT_EQ(p.head_size, D);
  BufferFacts f;
  f.has_required_outputs = f.has_seqlens = f.has_present_compressed = f.has_selected_blocks = true;
  cuda::KernelArgs<T> a;
  a.rules = MakeCallRules(c.attrs, p, f);
  a.d.seqlens_k = t.seqlens_k.data();
  std::vector<T> q(t.query.size());
  for (size_t i = 0; i < q.size(); ++i) q[i] = FromFloat<T>(t.query[i]);
  a.q = q.data();
  a.q_heads = static_cast<int>(p.num_heads);
  a.comp = const_cast<T*>(full.present_compressed_key.data());
  cuda::Stage1Shape sh = cuda::Stage1ShapeOf(c.attrs, p, splits);
  ASSERT_EQ(sh.tokens, p.seq_len);
  sh.s_count = static_cast<int>(p.seq_len);
  sh.units = (sh.s_count + sh.tpt - 1) / sh.tpt;
  const int64_t BH = p.batch * p.kv_num_heads;
  std::vector<cuda::Stage1Partial> part(static_cast<size_t>(BH * sh.units * sh.ht * sh.splits * 16));
  std::vector<float> scores(static_cast<size_t>(BH * sh.s_count * sh.nblk), std::nanf(""));
  sh.part = part.data();
  sh.scores = scores.data();
  const emu::dim3 block(cuda::kS1Threads);
  const auto Hkv = static_cast<unsigned>(p.kv_num_heads), B = static_cast<unsigned>(p.batch);
  emu::Launch(emu::dim3(static_cast<unsigned>(sh.units * sh.ht * sh.splits), Hkv, B), block,
              [&] { cuda::Stage1LseKernel<T, D>(a, sh); });
  emu::Launch(emu::dim3(static_cast<unsigned>(sh.units * sh.splits), Hkv, B), block,
              [&] { cuda::Stage1GroupKernel<T, D>(a, sh); });
  const CallRules& r = a.rules;
  const BlockWindows bw = BlockWindowsOf(r);
  int checked = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    const EntryPlan e = PlanEntry(r, t.seqlens_k.data(), b);
    for (int64_t h = 0; h < p.kv_num_heads; ++h)
      for (int64_t s = 0; s < p.seq_len; ++s) {
        const int64_t pos = e.past + s;
        if (!PlanToken(r, e, pos).needs_stage1) continue;
        const Stage1Levels lv = LevelsOf(r, e, pos);
        const SelectionSpan sp = SpanOf(r, pos);
        const int64_t G = p.group, n1 = lv.nvis1, st = c.attrs.compress_kernel / c.attrs.compress_stride;
        std::vector<double> x(static_cast<size_t>(G * n1)), lse(static_cast<size_t>(G));
        for (int64_t g = 0; g < G; ++g)
          for (int64_t j = 0; j < n1; ++j) {
            double dot = 0;
            for (int d = 0; d < D; ++d)
              dot += ToFloat(q[static_cast<size_t>(((b * p.seq_len + s) * p.num_heads + h * G + g) * D + d)]) *
                     ToFloat(full.present_compressed_key[static_cast<size_t>(
                         ((b * p.kv_num_heads + h) * p.present_compressed_capacity + j) * D + d)]);
            x[static_cast<size_t>(g * n1 + j)] = dot * p.scale;
          }
        for (int64_t g = 0; g < G; ++g) {
          std::vector<double> rows;
          const double* xg = &x[static_cast<size_t>(g * n1)];
          if (lv.use_k2)
            for (int64_t J = 0; J < lv.nvis2; ++J)
              rows.push_back(0.25 * (xg[4 * J] + xg[4 * J + st] + xg[4 * J + 2 * st] + xg[4 * J + 3 * st]));
          else
            rows.assign(xg, xg + n1);
          double mx = -INFINITY, sum = 0;
          for (double v : rows) mx = std::max(mx, v);
          for (double v : rows) sum += std::exp(v - mx);
          lse[static_cast<size_t>(g)] = mx + std::log(sum);
        }
        for (int64_t blk = sp.init_hi; blk < sp.local_lo; ++blk) {
          double best = -INFINITY;
          for (int64_t j = std::max<int64_t>(0, blk * bw.per_block - bw.back);
               j <= std::min(n1 - 1, blk * bw.per_block + bw.ahead); ++j) {
            double grp = 0;
            for (int64_t g = 0; g < G; ++g)
              grp += std::exp(x[static_cast<size_t>(g * n1 + j)] - lse[static_cast<size_t>(g)]);
            best = std::max(best, grp);
          }
          const float got = scores[static_cast<size_t>(((b * p.kv_num_heads + h) * sh.s_count + s) * sh.nblk + blk)];
          ASSERT_NEAR(got, best, 2e-5 * best + 1e-9)
              << "entry " << b << " head " << h << " token " << s << " block " << blk;
          ++checked;
        }
      }
  }
  EXPECT_GT(checked, 0);
}

TEST(CudaEmu, Stage1BlockScoresAreTheFormula) {
  int i = 0;
  for (auto [S, lse, splits] : std::vector<std::tuple<int, int, int>>{{1, 1, 3}, {1, 0, 2}, {4, 1, 2}}) {
    Case c;
    c.batch = 2;
    c.seq_len = S;
    c.past_capacity = 600;
    c.totals = {600 + S, 420 + S};
    c.num_heads = S == 1 ? 16 : 4;
    c.kv_num_heads = 1;
    c.head_size = S == 1 ? 128 : 64;
    c.mode = 2;
    c.attrs = TinyBlocks();
    c.attrs.lse_approx = lse;
    c.compressed_state_in = Case::State::kConsistent;
    c.seed = 760 + i++;
    SCOPED_TRACE("S " + std::to_string(S) + " lse_approx " + std::to_string(lse) + " splits " + std::to_string(splits));
    if (S == 1) {
      ExpectStage1BlockScores<Float16, 128>(c, splits);
      ExpectStage1BlockScores<BFloat16, 128>(c, splits);
    } else {
      ExpectStage1BlockScores<Float16, 64>(c, splits);
    }
  }
}

// Stage 1 in token chunks (the driver's loop for long prefills, whose block scores would exceed
// the scratch bound): a 112-token prefill of G = 4 in launches of 8 tokens (14 x 3 stage-1
// launches, their count checked), against the reference and the CPU kernel.
TEST(CudaEmu, Stage1TokenChunks) {
  Case c;
  c.seq_len = 112;
  c.num_heads = 4;
  c.kv_num_heads = 1;
  c.mode = 2;
  c.attrs = TinyBlocks();
  c.seed = 750;
  auto tokens8 = [](cuda::RunOptions& o) { o.stage1_tokens = 8; };
  for (const bool bf16 : {false, true}) {
    if (bf16)
      c.round = [](float x) { return ToFloat(FromFloat<BFloat16>(x)); };
    else
      c.round = [](float x) { return ToFloat(FromFloat<Float16>(x)); };
    Tensors t = MakeTensors(c);
    Complete(c);
    const auto ref = bf16 ? RunReference<BFloat16>(c, t).selected_blocks : RunReference<Float16>(c, t).selected_blocks;
    std::vector<emu::LaunchCounts> log;
    emu::RecordCounts(&log);
    const auto sel =
        bf16 ? RunCudaEmu<BFloat16>(c, t, false, true, true, 0, nullptr, nullptr, nullptr, tokens8).selected_blocks
             : RunCudaEmu<Float16>(c, t, false, true, true, 0, nullptr, nullptr, nullptr, tokens8).selected_blocks;
    emu::RecordCounts(nullptr);
    EXPECT_EQ(sel, ref) << (bf16 ? "bf16" : "fp16");
    int topk = 0;
    for (const auto& k : log) topk += k.kernel == "Stage1TopKKernel" ? 1 : 0;
    EXPECT_EQ(topk, 14);
  }
}

// More heads per group than one shared-memory chunk (G = 20), packed QKV with rotary, auto mode
// with one entry dense and one sparse (dense_len), two kv heads.
TEST(CudaEmu, SparseStage1LargeGroupAutoMode) {
  Case c;
  c.batch = 2;
  c.seq_len = 2;
  c.past_capacity = 200;
  c.totals = {202, 90};
  c.num_heads = 40;
  c.kv_num_heads = 2;
  c.mode = 0;
  c.packed = true;
  c.rotary = true;
  c.attrs = TinyBlocks();
  c.attrs.dense_len = 150;
  c.seed = 720;
  BothTypes(c);
}

// score_precision 1 (bf16 group sums before pooling) on the device: the tie that exists only
// after rounding (score_precision_case.h) resolves as the reference's rule says in both modes, and
// a random prefill beyond the budget (TinyBlocks) equals the reference and the CPU kernel.
template <typename T>
void ExpectBf16TieResolvedAsTheReference() {
  int cases = 0;
  for (int k = 0; k < 16 && cases < 3; ++k) {  // the first three variants that tie in bf16
    Tensors t;
    Case c = Bf16TieCase(k, t);
    c.round = [](float x) { return ToFloat(FromFloat<T>(x)); };
    SCOPED_TRACE(std::string(std::is_same_v<T, Float16> ? "fp16 " : "bf16 ") + "k=" + std::to_string(k));
    Case bf = c;
    bf.attrs.score_precision = 1;
    const auto ref32 = RunReference<T>(c, t), ref16 = RunReference<T>(bf, t);
    if (ref32.selected_blocks == ref16.selected_blocks) continue;  // this k does not tie in bf16
    ++cases;
    const auto k32 = RunCudaEmu<T>(c, t), k16 = RunCudaEmu<T>(bf, t);
    ASSERT_EQ(k32.error, "");
    ASSERT_EQ(k16.error, "");
    EXPECT_EQ(k32.selected_blocks, ref32.selected_blocks);
    EXPECT_EQ(k16.selected_blocks, ref16.selected_blocks);
  }
  EXPECT_EQ(cases, 3);
}

TEST(CudaEmu, ScorePrecisionBf16) {
  ExpectBf16TieResolvedAsTheReference<Float16>();
  ExpectBf16TieResolvedAsTheReference<BFloat16>();
  Case c;
  c.seq_len = 112;
  c.num_heads = 4;
  c.kv_num_heads = 1;
  c.mode = 2;
  c.attrs = TinyBlocks();
  c.attrs.score_precision = 1;
  c.seed = 730;
  BothTypes(c);
}

// Split-KV (split_kv.cuh), forced split counts: 1 (the split path's plumbing alone), 2, and more
// splits than an entry has key tiles (the 5-token entry: every split but the first is empty and
// must write the neutral partial). Dense decode, ragged batch, G = 1, 3 (odd), 16, D = 64 and 128.
TEST(CudaEmu, SplitKvDenseDecode) {
  int i = 0;
  for (auto [G, D, splits] : std::vector<std::tuple<int, int, int>>{{1, 64, 1}, {16, 128, 2}, {3, 64, 9}}) {
    Case c;
    c.batch = 3;
    c.seq_len = 1;
    c.past_capacity = 200;
    c.totals = {201, 90, 5};
    c.kv_num_heads = 1 + i % 2;
    c.num_heads = c.kv_num_heads * G;
    c.head_size = D;
    c.mode = 1;
    c.seed = 800 + i++;
    BothTypes(c, false, splits);
  }
}

// Dense short chunk (S = 5 after a past, several tokens per CTA) with a local window and softcap:
// range splits start at the window's first tile; rotary, packed QKV. Three splits.
TEST(CudaEmu, SplitKvDenseChunkWindow) {
  Case c;
  c.batch = 2;
  c.seq_len = 5;
  c.past_capacity = 250;
  c.totals = {255, 12};
  c.num_heads = 6;
  c.kv_num_heads = 2;
  c.mode = 1;
  c.packed = true;
  c.rotary = true;
  c.attrs.softcap = 2.0f;
  c.attrs.local_window_size = 150;
  c.seed = 810;
  BothTypes(c, false, 3);
}

// Sparse: selection lists (stage 1, K = 6 blocks of 16) split by list entries, decode with a
// ragged batch (one entry past the budget, one within it: range splits, one very short), G = 16
// with D = 128 and G = 5 with D = 64; splits 2 and 9 (> K: empty list splits).
TEST(CudaEmu, SplitKvSparseDecode) {
  int i = 0;
  for (auto [G, D, splits] : std::vector<std::tuple<int, int, int>>{{16, 128, 2}, {5, 64, 9}}) {
    Case c;
    c.batch = 3;
    c.seq_len = 1;
    c.past_capacity = 200;
    c.totals = {201, 70, 3};
    c.kv_num_heads = 1;
    c.num_heads = G;
    c.head_size = D;
    c.mode = 2;
    c.attrs = TinyBlocks();
    c.compressed_state_in = Case::State::kConsistent;
    c.seed = 820 + i++;
    BothTypes(c, false, splits);
  }
}

// Sparse short chunk (S = 4 after a past, tokens with different lists in one CTA), auto mode with
// one dense and one sparse entry, 5 splits. (The automatic choice splits every decode case above
// this file's split tests too: their grids are a few CTAs.)
TEST(CudaEmu, SplitKvSparseChunkAuto) {
  Case c;
  c.batch = 2;
  c.seq_len = 4;
  c.past_capacity = 160;
  c.totals = {164, 60};
  c.num_heads = 3;
  c.kv_num_heads = 1;
  c.mode = 0;
  c.attrs = TinyBlocks();
  c.attrs.dense_len = 100;
  c.seed = 830;
  BothTypes(c, false, 5);
}

// The host-side split choice: from host facts only, 1 when the plain grid fills the GPU.
TEST(CudaEmu, SplitKvChoice) {
  AttentionAttributes a;
  AttentionParams p;
  p.batch = 1;
  p.seq_len = 1;
  p.num_heads = 32;
  p.kv_num_heads = 2;
  p.group = 16;
  p.total_sequence_length = 131072;
  p.budget = 96;
  p.mode = AttentionMode::kForceDense;
  EXPECT_EQ(cuda::ChooseKvSplits(a, p), cuda::kMaxKvSplits);  // 2 CTAs: as many splits as allowed
  p.batch = 16;
  EXPECT_EQ(cuda::ChooseKvSplits(a, p), 9);  // 32 CTAs: ceil(264 / 32)
  p.batch = 1;
  p.mode = AttentionMode::kForceSparse;
  EXPECT_EQ(cuda::ChooseKvSplits(a, p), 48);  // 96 blocks x 64 keys / 128 keys per split
  p.total_sequence_length = 200;
  EXPECT_EQ(cuda::ChooseKvSplits(a, p), 2);  // short context: one split per 128 keys
  p.seq_len = 8192;                          // prefill: the plain grid is 2048 x 2 CTAs
  EXPECT_EQ(cuda::ChooseKvSplits(a, p), 1);
  // A forced count out of range is refused with the reason.
  Case c;
  c.seq_len = 1;
  c.past_capacity = 10;
  c.totals = {11};
  Tensors t = MakeTensors(c);
  Complete(c);
  for (int bad : {-2, cuda::kMaxKvSplits + 1})
    EXPECT_NE(RunCudaEmu<Float16>(c, t, false, true, true, bad)
                  .error.find("kv_splits " + std::to_string(bad) + " out of range"),
              std::string::npos);
}

// seqlens_k is read on the device and never checked there against the buffers: values the host
// check refuses (negative, past the capacity, INT32_MAX) must make no kernel read or write outside
// a buffer (ASan/TSan builds) and give the documented result (docs/op-spec.md): the entry's output
// rows NaN, its selection rows -1, its cache rows not written; other entries unaffected.
TEST(CudaEmu, HostileSeqlensStayInsideTheBuffers) {
  for (const bool share : {true, false})
    for (const int kv_splits : {-1, 3}) {
      Case c;
      c.batch = 4;
      c.seq_len = 2;
      c.past_capacity = 112;
      c.totals = {100, 90, 80, 112};
      c.total_sequence_length = 112;
      c.mode = 2;
      c.attrs = TinyBlocks();  // stage 1 past 96 tokens
      c.compressed_state_in = Case::State::kConsistent;
      c.round = [](float x) { return ToFloat(FromFloat<Float16>(x)); };
      Tensors t = MakeTensors(c);
      SCOPED_TRACE(std::string(share ? "shared" : "separate") + " kv_splits " + std::to_string(kv_splits));
      const auto good = RunCudaEmu<Float16>(c, t, share, true, true, kv_splits);
      ASSERT_EQ(good.error, "");
      // Entries 0-2 hostile (total -4, capacity + 1, INT32_MAX + 1);
      // entry 3 as checked.
      const std::vector<int32_t> hostile = {-5, 112, std::numeric_limits<int32_t>::max(), t.seqlens_k[3]};
      const auto bad = RunCudaEmu<Float16>(c, t, share, true, true, kv_splits, hostile.data());
      ASSERT_EQ(bad.error, "");
      const auto& p = bad.params;
      const size_t out_entry = static_cast<size_t>(p.seq_len * p.num_heads * p.head_size);
      const size_t sel_entry = static_cast<size_t>(p.kv_num_heads * p.seq_len * p.budget);
      const size_t cache_entry = static_cast<size_t>(p.kv_num_heads * p.present_capacity * p.head_size);
      for (size_t b = 0; b < 4; ++b) {
        SCOPED_TRACE("entry " + std::to_string(b));
        for (size_t i = b * out_entry; i < (b + 1) * out_entry; ++i) {
          if (b < 3) {
            ASSERT_TRUE(std::isnan(ToFloat(bad.output[i]))) << i;
          } else {
            ASSERT_EQ(bad.output[i].bits, good.output[i].bits) << i;
          }
        }
        for (size_t i = b * sel_entry; i < (b + 1) * sel_entry; ++i)
          ASSERT_EQ(bad.selected_blocks[i], b < 3 ? -1 : good.selected_blocks[i]) << i;
        if (share && b < 3) {  // the past rows of a shared cache stay as they were
          for (size_t i = b * cache_entry; i < (b + 1) * cache_entry; ++i)
            ASSERT_EQ(bad.present_key[i].bits, FromFloat<Float16>(t.past_key[i]).bits) << i;
        }
        if (b == 3) {
          for (size_t i = b * cache_entry; i < (b + 1) * cache_entry; ++i)
            ASSERT_EQ(bad.present_key[i].bits, good.present_key[i].bits) << i;
        }
      }
    }
}

// A call no entry of which can run sparse (forced dense, or auto with total_sequence_length below
// dense_len) runs no selection kernel and asks for no scratch when neither selected_blocks nor
// present_compressed_key is requested; requested, the selection rows are -1.
TEST(CudaEmu, DenseCallsRunNoSelectionWork) {
  for (const int mode : {1, 0}) {
    Case c;
    c.batch = 2;
    c.past_capacity = 90;
    c.totals = {91, 60};
    c.mode = mode;  // auto: dense_len 8192 > total_sequence_length 91
    c.round = [](float x) { return ToFloat(FromFloat<Float16>(x)); };
    Tensors t = MakeTensors(c);
    SCOPED_TRACE("mode " + std::to_string(mode));
    size_t requests = 0;
    const auto bare = RunCudaEmu<Float16>(c, t, false, false, false, -1, nullptr, &requests);
    ASSERT_EQ(bare.error, "");
    EXPECT_EQ(requests, 0u);
    requests = 0;
    const auto full = RunCudaEmu<Float16>(c, t, false, true, true, -1, nullptr, &requests);
    ASSERT_EQ(full.error, "");
    EXPECT_EQ(requests, 0u);
    for (int32_t blk : full.selected_blocks) ASSERT_EQ(blk, -1);
    for (size_t i = 0; i < full.output.size(); ++i) ASSERT_EQ(bare.output[i].bits, full.output[i].bits) << i;
  }
}

// Grids beyond the device's limits (grid.y = B x Hkv above 65535 here) are refused before any
// launch, with an error naming the kernel.
TEST(CudaEmu, GridLimitsAreCheckedBeforeLaunching) {
  Case c;
  c.batch = 65536;
  c.num_heads = c.kv_num_heads = 1;
  c.totals.assign(static_cast<size_t>(c.batch), 1);
  c.mode = 1;
  Tensors t = MakeTensors(c);
  const auto r = RunCudaEmu<Float16>(c, t, false, false, false, -1);
  EXPECT_NE(r.error.find("KvCacheWriteKernel needs a grid of (1, 65536, 1) blocks"), std::string::npos) << r.error;
}

// A launch that fails (the emulator fails the n-th launch of the call, as a GPU refuses one for
// lack of resources) makes the call return an error naming the kernel; every kernel of a sparse
// call with rotary, on the plain and the split-KV path, is checked.
TEST(CudaEmu, LaunchErrorsNameTheKernel) {
  for (const int kv_splits : {-1, 2}) {
    Case c;
    c.seq_len = 1;
    c.past_capacity = 200;
    c.totals = {201};
    c.num_heads = 2;
    c.kv_num_heads = 1;
    c.mode = 2;
    c.rotary = true;
    c.attrs = TinyBlocks();
    c.compressed_state_in = Case::State::kConsistent;
    Tensors t = MakeTensors(c);
    Complete(c);
    std::vector<std::string> failed;
    for (int n = 0; n < 12; ++n) {
      emu::FailLaunchAfter(n);
      const auto r = RunCudaEmu<Float16>(c, t, false, true, true, kv_splits);
      emu::FailLaunchAfter(-1);
      if (r.error.empty()) break;
      const size_t at = r.error.find(" failed to launch: emulated launch failure");
      ASSERT_NE(at, std::string::npos) << r.error;
      failed.push_back(r.error.substr(std::strlen("CUDA kernel: "), at - std::strlen("CUDA kernel: ")));
    }
    const std::vector<std::string> expected =
        kv_splits > 0 ? std::vector<std::string>{"KvCacheWriteKernel",  "QueryPrepKernel",        "CompressKernel",
                                                 "SelectionFillKernel", "Stage1LseKernel",        "Stage1GroupKernel",
                                                 "Stage1TopKKernel",    "SplitKvAttentionKernel", "KvCombineKernel"}
                      : std::vector<std::string>{"KvCacheWriteKernel",  "QueryPrepKernel",     "CompressKernel",
                                                 "SelectionFillKernel", "Stage1LseKernel",     "Stage1GroupKernel",
                                                 "Stage1TopKKernel",    "BlockAttentionKernel"};
    EXPECT_EQ(failed, expected) << "kv_splits " << kv_splits;
  }
}

// cp.async and ldmatrix need 16-byte-aligned addresses: a tensor view at another offset (here
// each 16-bit tensor in turn, moved 2 bytes into a copy) is refused on the host, naming it, before
// any launch (without the check the emulated cp.async aborts on the misaligned address).
TEST(CudaEmu, MisalignedTensorsAreRefused) {
  Case c;
  c.seq_len = 3;
  c.past_capacity = 40;
  c.totals = {43};
  c.mode = 1;
  c.rotary = true;
  Tensors t = MakeTensors(c);
  Complete(c);
  using T = Float16;
  std::vector<T> moved(1 << 16);
  auto shift = [&moved](const T* p, size_t n) {
    std::memcpy(moved.data() + 1, p, n * sizeof(T));
    return moved.data() + 1;  // vector storage is 16-byte aligned: +1 element is 2 bytes off
  };
  const int64_t q_elems = c.batch * c.seq_len * c.num_heads * c.head_size;
  const std::vector<std::pair<std::string, std::function<void(AttentionData<T>&)>>> cases = {
      {"query", [&](AttentionData<T>& d) { d.query = shift(d.query, q_elems); }},
      {"key", [&](AttentionData<T>& d) { d.key = shift(d.key, 16); }},
      {"past_key", [&](AttentionData<T>& d) { d.past_key = shift(d.past_key, 16); }},
      {"cos_cache", [&](AttentionData<T>& d) { d.cos_cache = shift(d.cos_cache, 16); }},
      {"output", [&](AttentionData<T>& d) { d.output = const_cast<T*>(shift(d.output, 16)); }},
      {"present_value", [&](AttentionData<T>& d) { d.present_value = const_cast<T*>(shift(d.present_value, 16)); }}};
  for (const auto& [name, adjust] : cases) {
    const auto r = RunCudaEmu<T>(c, t, false, false, false, -1, nullptr, nullptr, adjust);
    EXPECT_EQ(r.error, "CUDA kernel: " + name +
                           " does not start on a 16-byte boundary (the kernels copy 16-byte chunks); pass a tensor "
                           "whose data is 16-byte aligned");
  }
  EXPECT_EQ(RunCudaEmu<T>(c, t, false, false, false, -1).error, "");  // aligned: runs
}

// A cache updated in place (present buffers = past buffers) gets only its new rows written: the
// cache-write grid covers S rows and the compression grid the windows S tokens can complete, not
// the capacity (a decode step at capacity 400: 1 tile instead of 25 and 13 per head),
// with results bit-identical to separate buffers. Decode and a 9-token chunk, ragged pasts.
TEST(CudaEmu, InPlaceCacheUpdatesLaunchOverTheNewRowsOnly) {
  for (const int S : {1, 9}) {
    Case c;
    c.batch = 2;
    c.seq_len = S;
    c.past_capacity = 400;
    c.totals = {400, 150 + S};
    c.num_heads = 2;
    c.kv_num_heads = 1;
    c.mode = 2;
    c.attrs = TinyBlocks();
    c.compressed_state_in = Case::State::kConsistent;
    c.round = [](float x) { return ToFloat(FromFloat<Float16>(x)); };
    Tensors t = MakeTensors(c);
    SCOPED_TRACE("S " + std::to_string(S));
    std::vector<emu::dim3> grids;
    emu::RecordLaunches(&grids);
    const auto separate = RunCudaEmu<Float16>(c, t, false, true, true, -1);
    emu::RecordLaunches(nullptr);
    ASSERT_EQ(separate.error, "");
    ASSERT_GE(grids.size(), 2u);       // KvCacheWriteKernel, CompressKernel first (no rotary)
    EXPECT_EQ(grids[0].x, 400u / 16);  // separate buffers: every present row (copy, new, zero)
    const unsigned compressed_rows = static_cast<unsigned>(separate.present_compressed_key.size() / (2 * 64));
    EXPECT_EQ(grids[1].x, (compressed_rows + 7) / 8);
    // Shared caches, and present_compressed_key = past_compressed_key (holding the past's windows).
    ASSERT_EQ(t.past_compressed_key.size(), separate.present_compressed_key.size());
    std::vector<Float16> compressed;
    auto share_compressed = [&](AttentionData<Float16>& d) {
      compressed.assign(d.past_compressed_key, d.past_compressed_key + separate.present_compressed_key.size());
      d.past_compressed_key = d.present_compressed_key = compressed.data();
    };
    grids.clear();
    emu::RecordLaunches(&grids);
    const auto shared = RunCudaEmu<Float16>(c, t, true, true, true, -1, nullptr, nullptr, share_compressed);
    emu::RecordLaunches(nullptr);
    ASSERT_EQ(shared.error, "");
    ASSERT_GE(grids.size(), 2u);
    EXPECT_EQ(grids[0].x, static_cast<unsigned>((S + 15) / 16));
    EXPECT_EQ(grids[1].x, static_cast<unsigned>((S / c.attrs.compress_stride + 1 + 7) / 8));
    EXPECT_EQ(grids[0].y, 2u);
    for (size_t i = 0; i < shared.output.size(); ++i) ASSERT_EQ(shared.output[i].bits, separate.output[i].bits) << i;
    EXPECT_EQ(shared.selected_blocks, separate.selected_blocks);
    // The valid rows of each entry's cache and compressed keys agree (shared buffers keep the
    // caller's rows past the valid length).
    const auto& p = shared.params;
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t h = 0; h < p.kv_num_heads; ++h) {
        const int64_t total = c.totals[static_cast<size_t>(b)], bh = b * p.kv_num_heads + h;
        for (int64_t r = 0; r < total * p.head_size; ++r) {
          const size_t i = static_cast<size_t>(bh * p.present_capacity * p.head_size + r);
          ASSERT_EQ(shared.present_key[i].bits, separate.present_key[i].bits) << i;
          ASSERT_EQ(shared.present_value[i].bits, separate.present_value[i].bits) << i;
        }
        const int64_t windows = NumWindows(total, c.attrs.compress_kernel, c.attrs.compress_stride);
        for (int64_t r = 0; r < windows * p.head_size; ++r) {
          const size_t i = static_cast<size_t>(bh * compressed_rows * p.head_size + r);
          ASSERT_EQ(compressed[i].bits, separate.present_compressed_key[i].bits) << i;
        }
      }
  }
}

// RunOptions::mark (the GPU check's per-stage events) names the stages in launch order, the ones
// that do not run left out: split-KV sparse decode, plain dense decode with no selection output.
TEST(CudaEmu, StageMarksFollowTheLaunches) {
  Case c;
  c.seq_len = 1;
  c.past_capacity = 200;
  c.totals = {201};
  c.num_heads = 2;
  c.kv_num_heads = 1;
  c.mode = 2;
  c.attrs = TinyBlocks();
  c.compressed_state_in = Case::State::kConsistent;
  Tensors t = MakeTensors(c);
  Complete(c);
  std::vector<std::string> marks;
  auto record = [&marks](cuda::RunOptions& o) {
    o.mark = [](void* ctx, const char* stage) { static_cast<std::vector<std::string>*>(ctx)->push_back(stage); };
    o.mark_ctx = &marks;
  };
  ASSERT_EQ(RunCudaEmu<Float16>(c, t, false, true, true, 2, nullptr, nullptr, nullptr, record).error, "");
  EXPECT_EQ(marks, (std::vector<std::string>{"cache_write", "compress", "selection", "attention", "combine", "end"}));
  marks.clear();
  c.mode = 1;
  ASSERT_EQ(RunCudaEmu<Float16>(c, t, false, false, false, -1, nullptr, nullptr, nullptr, record).error, "");
  EXPECT_EQ(marks, (std::vector<std::string>{"cache_write", "attention", "end"}));
}

}  // namespace
}  // namespace infllmv2::testing
