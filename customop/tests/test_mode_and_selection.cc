// The mode switch at its edge and block selection with hand-derived expectations: each
// expected value below is a literal worked out from docs/op-spec.md in the comment above it, and
// every case is checked against the kernel (all backends) and against the reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "common/call_plan.h"
#include "cpu/selection.h"
#include "test_support.h"

namespace infllmv2::testing {
namespace {

// ---- Mode: auto mode is sparse iff total >= dense_len ("Mode" in docs/op-spec.md). ----

// Decode, ragged batch: entry 0 has total = dense_len - 1 (dense), entry 1 total = dense_len
// (sparse). Both lengths are beyond the budget (K = 6 blocks of 64, 11 blocks exist), so a forced
// sparse run differs from a forced dense one and the auto run must equal the right one bit for bit.
TEST(Mode, AutoSwitchesExactlyAtDenseLen) {
  Case c;
  c.batch = 2;
  c.past_capacity = 700;
  c.totals = {699, 700};
  c.attrs = SmallBudget();
  c.attrs.dense_len = 700;
  c.seed = 31;
  Tensors t = MakeTensors(c);
  c.mode = 0;
  const auto autom = ExpectBackendsMatchReference<float>(c, t);
  EXPECT_EQ(RunReference<float>(c, t).sparse, (std::vector<char>{0, 1})) << "the reference's own switch";
  c.mode = 1;
  const auto dense = RunKernel<float>(c, t);
  c.mode = 2;
  const auto sparse = RunKernel<float>(c, t);
  ASSERT_EQ(autom.error, "");
  ASSERT_EQ(dense.error, "");
  ASSERT_EQ(sparse.error, "");
  const size_t row = static_cast<size_t>(c.num_heads * c.head_size), K = 6, sel_row = c.kv_num_heads * K;
  ASSERT_EQ(autom.output.size(), 2 * row);
  ASSERT_EQ(autom.selected_blocks.size(), 2 * sel_row);
  auto slice = [](const std::vector<float>& v, size_t b, size_t n) {
    return std::vector<float>(v.begin() + b * n, v.begin() + (b + 1) * n);
  };
  for (size_t b = 0; b < 2; ++b)
    EXPECT_NE(slice(dense.output, b, row), slice(sparse.output, b, row))
        << "entry " << b << " cannot tell the modes apart";
  // Entry 0 (total 699 = dense_len - 1): dense, selected_blocks all -1.
  EXPECT_EQ(slice(autom.output, 0, row), slice(dense.output, 0, row));
  EXPECT_EQ(std::vector<int32_t>(autom.selected_blocks.begin(), autom.selected_blocks.begin() + sel_row),
            std::vector<int32_t>(sel_row, -1));
  // Entry 1 (total 700 = dense_len): sparse; the query at p = 699 is in block 10, so each row is
  // [0 (init), 4 dynamic, 9, 10 (local)]: no -1, starts with 0, ends with 9, 10.
  EXPECT_EQ(slice(autom.output, 1, row), slice(sparse.output, 1, row));
  for (size_t h = 0; h < static_cast<size_t>(c.kv_num_heads); ++h) {
    const int32_t* r = autom.selected_blocks.data() + sel_row + h * K;
    EXPECT_EQ(r[0], 0);
    EXPECT_EQ(r[4], 9);
    EXPECT_EQ(r[5], 10);
    for (size_t k = 0; k < K; ++k) EXPECT_NE(r[k], -1);
  }
}

// The same edge one entry at a time, in a first prompt (S = total) with dense_len = 200.
TEST(Mode, AutoFirstPromptAtDenseLenMinusOneAndDenseLen) {
  for (int32_t total : {199, 200}) {
    Case c;
    c.seq_len = total;
    c.attrs = SmallBudget();
    c.attrs.dense_len = 200;
    c.seed = 32;
    Tensors t = MakeTensors(c);
    c.mode = 0;
    const auto autom = ExpectBackendsMatchReference<float>(c, t);
    c.mode = total == 200 ? 2 : 1;  // the expected mode, as a literal rule of the spec
    const auto forced = RunKernel<float>(c, t);
    ASSERT_EQ(autom.error, "");
    EXPECT_EQ(autom.output, forced.output) << "total " << total;
    EXPECT_EQ(autom.selected_blocks, forced.selected_blocks) << "total " << total;
    // Last row (p = total - 1, block 3): dense -1 everywhere; sparse [0, 1, 2, 3, -1, -1] (4 blocks <= K).
    const int32_t* last = autom.selected_blocks.data() + (total - 1) * 6;
    const std::vector<int32_t> want =
        total == 200 ? std::vector<int32_t>{0, 1, 2, 3, -1, -1} : std::vector<int32_t>(6, -1);
    EXPECT_EQ(std::vector<int32_t>(last, last + 6), want) << "total " << total;
  }
}

// ---- Selection with hand-derived rows. ----
// Geometry: block_size Bk = 16, compress_kernel l1 = 8, compress_stride s1 = 4, so window j covers
// tokens [4j, 4j + 8) and block b meets windows 4b-1 .. 4b+3 (as with the defaults); init_blocks 1,
// window_size 16 (L = 1 local block besides the query's own), topk 4: K = 5.
// Inputs: H = 2 query heads on Hkv = 1, D = 8; every key is 0 except planted tokens with key
// +8·e0 ("hot") or -8·e0 ("cold"); every query is 4·e0. A window's stage-1 score then depends only
// on the planted tokens it holds: windows without any score exactly the same (ties), a window with
// one hot token scores higher, with cold tokens lower.
AttentionAttributes HandGeometry() {
  AttentionAttributes a;
  a.block_size = 16;
  a.compress_kernel = 8;
  a.compress_stride = 4;
  a.init_blocks = 1;
  a.window_size = 16;
  a.topk = 4;
  return a;
}

struct Plant {
  int64_t token;
  float sign;
};

void SetKey(Case& c, Tensors& t, int64_t token, float v) {
  const int64_t D = c.head_size, past = c.seq_len == c.total_sequence_length ? 0 : c.totals[0] - c.seq_len;
  std::vector<float>& dst = token < past ? t.past_key : t.key;
  const int64_t row = token < past ? token : token - past;
  for (int64_t i = 0; i < D; ++i) dst[row * D + i] = i == 0 ? v : 0.0f;
}

// S = 1 (decode at p = total - 1) or S = total (first prompt, every row p = 0 .. total - 1).
std::pair<Case, Tensors> HandCase(int64_t total, int64_t S, const std::vector<Plant>& plants) {
  Case c;
  c.seq_len = S;
  c.past_capacity = S == total ? 0 : total - S;
  c.totals = {static_cast<int32_t>(total)};
  c.num_heads = 2;
  c.kv_num_heads = 1;
  c.head_size = 8;
  c.attrs = HandGeometry();
  c.mode = 2;
  c.seed = 41;
  Tensors t = MakeTensors(c);
  for (int64_t tok = 0; tok < total; ++tok) SetKey(c, t, tok, 0.0f);
  for (const Plant& pl : plants) SetKey(c, t, pl.token, 8.0f * pl.sign);
  for (size_t i = 0; i < t.query.size(); ++i) t.query[i] = i % 8 == 0 ? 4.0f : 0.0f;
  return {c, t};
}

// Kernel (every backend) and reference against the literal rows at the given query rows.
void ExpectRows(const Case& c, const Tensors& t, const std::vector<std::pair<int64_t, std::vector<int32_t>>>& rows) {
  const auto k = ExpectBackendsMatchReference<float>(c, t);
  const auto r = RunReference<float>(c, t);
  ASSERT_EQ(k.selected_blocks.size(), static_cast<size_t>(c.seq_len * 5));
  ASSERT_EQ(r.selected_blocks.size(), static_cast<size_t>(c.seq_len * 5));
  for (const auto& [s, want] : rows) {
    EXPECT_EQ(std::vector<int32_t>(k.selected_blocks.begin() + s * 5, k.selected_blocks.begin() + s * 5 + 5), want)
        << "kernel, query row " << s;
    EXPECT_EQ(std::vector<int32_t>(r.selected_blocks.begin() + s * 5, r.selected_blocks.begin() + s * 5 + 5), want)
        << "reference, query row " << s;
  }
}

// Decode at p = 192: qb = 12, blocks 0..12 (13 > K). Forced: 0 (init), 11, 12 (local); 2 slots
// for candidates 1..10. Hot tokens 56, 120, 152 sit at offset 8 of blocks 3, 7, 9, i.e. only in
// windows 4b+1 and 4b+2 of their own block: blocks 3, 7 and 9 score exactly the same (the same
// window contents), every other candidate scores exactly the zero-window score. Ties go to the
// lower block: 3 and 7, not 9.
TEST(Selection, ExactTiesGoToTheLowerBlock) {
  auto [c, t] = HandCase(193, 1, {{56, 1}, {120, 1}, {152, 1}});
  ExpectRows(c, t, {{0, {0, 3, 7, 11, 12}}});
}

// Decode at p = 192 as above. Block 0 holds 16 cold tokens: its windows 0..3 all score below the
// zero-window score (window 3 = tokens 12..19 holds 4 of them), so it ranks last of all blocks,
// but it is an init block and is selected anyway. Hot token 104 (block 6, offset 8) takes one
// slot; the other goes to the lowest of the tied zero-score blocks: block 1 (its window 3 is
// cold, but its windows 4..7 are zero).
TEST(Selection, InitBlockIsForcedThoughItScoresLowest) {
  std::vector<Plant> plants;
  for (int64_t tok = 0; tok < 16; ++tok) plants.push_back({tok, -1});
  plants.push_back({104, 1});
  auto [c, t] = HandCase(193, 1, plants);
  ExpectRows(c, t, {{0, {0, 1, 6, 11, 12}}});
}

// Decode at p = 192 as above. Hot token 79 is the last token of block 4: it lies in windows 18
// (tokens 72..79) and 19 (tokens 76..83). Window 19 = 4·5 - 1 also meets block 5 (tokens 80..83),
// so blocks 4 and 5 score the same hot value and take both slots: [0, 4, 5, 11, 12]. (Pooling over
// 4b..4b+3 only would give block 5 the zero score and the second slot to block 1.)
TEST(Selection, HotWindowOnTheLeftEdgeCountsForTheNextBlock) {
  auto [c, t] = HandCase(193, 1, {{79, 1}});
  ExpectRows(c, t, {{0, {0, 4, 5, 11, 12}}});
}

// First prompt of 97 tokens, hot token 47 (windows 10 and 11; window 11 = 4·3 - 1 meets block 3).
// Rows with qb + 1 <= K blocks select every block 0..qb and pad with -1 (fewer blocks than the
// budget): p = 0 -> [0], p = 47 (qb 2) -> [0, 1, 2], p = 79 (qb 4) -> [0..4]. p = 80 (qb 5, 6
// blocks): forced 0, 4, 5; candidates 1..3 for 2 slots; windows up to j = 18 are visible (4j + 7
// <= 80); blocks 2 (windows 7..11) and 3 (windows 11..15) hold the hot window -> [0, 2, 3, 4, 5].
// p = 96 (qb 6): forced 0, 5, 6; candidates 1..4; again 2 and 3 -> [0, 2, 3, 5, 6].
TEST(Selection, PrefillRowsBelowAndBeyondTheBudget) {
  auto [c, t] = HandCase(97, 97, {{47, 1}});
  ExpectRows(c, t,
             {{0, {0, -1, -1, -1, -1}},
              {47, {0, 1, 2, -1, -1}},
              {79, {0, 1, 2, 3, 4}},
              {80, {0, 2, 3, 4, 5}},
              {96, {0, 2, 3, 5, 6}}});
}

// ---- The per-call rules themselves (common/call_rules.h), the one definition every backend runs. ----

CallRules RulesFor(AttentionMode mode, int64_t dense_len) {
  CallRules r{};
  r.mode = mode;
  r.dense_len = dense_len;
  r.seq_len = 1;
  r.block_size = 64;
  r.compress_kernel = 32;
  r.compress_stride = 16;
  r.init_blocks = 1;
  r.local_blocks = 2;
  r.budget = 6;
  r.local_window = -1;
  r.total_sequence_length = r.past_capacity = 1 << 20;
  return r;
}

TEST(CallRules, ModeRule) {
  EXPECT_FALSE(UseSparse(RulesFor(AttentionMode::kAuto, 700), 699));
  EXPECT_TRUE(UseSparse(RulesFor(AttentionMode::kAuto, 700), 700));
  EXPECT_TRUE(UseSparse(RulesFor(AttentionMode::kAuto, -1), 1));
  EXPECT_FALSE(UseSparse(RulesFor(AttentionMode::kForceDense, -1), 1 << 20));
  EXPECT_TRUE(UseSparse(RulesFor(AttentionMode::kForceSparse, 1 << 20), 1));
}

// Decode entry with seqlens_k 699: total 700, past 699; 42 level-1 windows (of 32 at 16), 9
// level-2 ones (of 128 at 64), 11 blocks > budget 6: stage 1.
TEST(CallRules, EntryAndTokenPlans) {
  CallRules r = RulesFor(AttentionMode::kAuto, 700);
  const int32_t seqlens[] = {699, 698};
  const EntryPlan e = PlanEntry(r, seqlens, 0);
  EXPECT_EQ(e.total, 700);
  EXPECT_EQ(e.past, 699);
  EXPECT_TRUE(e.sparse);
  EXPECT_EQ(e.windows, 42);
  EXPECT_EQ(e.level2_windows, 9);
  EXPECT_EQ(e.past_windows, 0);
  EXPECT_TRUE(e.needs_stage1);
  EXPECT_FALSE(PlanEntry(r, seqlens, 1).sparse);
  EXPECT_TRUE(PlanToken(r, e, 699).needs_stage1);
  EXPECT_EQ(PlanToken(r, e, 700).len, 0);         // padding
  EXPECT_EQ(PlanToken(r, e, 6 * 64 - 1).len, 6);  // the last position within the budget
  const EntryPlan d = PlanEntry(r, seqlens, 1);
  r.local_window = 100;
  EXPECT_EQ(PlanToken(r, d, 698).len, -1);
  EXPECT_EQ(PlanToken(r, d, 698).dense_lo, 599);
  EXPECT_EQ(DenseFirstKey(r, 50), 0);
}

// Token at 699 (block 10): local blocks 8..10, init block 0, candidates 1..7, room for 6 - 4 = 2.
TEST(CallRules, SelectionSpan) {
  const CallRules r = RulesFor(AttentionMode::kForceSparse, -1);
  const SelectionSpan s = SpanOf(r, 699);
  EXPECT_EQ(s.qb, 10);
  EXPECT_EQ(s.local_lo, 8);
  EXPECT_EQ(s.init_hi, 1);
  EXPECT_EQ(s.n_forced, 4);
  EXPECT_EQ(s.take, 2);
  CallRules tight = r;
  tight.budget = 2;  // fewer than the forced blocks: no candidate, never a negative count
  EXPECT_EQ(SpanOf(tight, 699).take, 0);
  const BlockWindows bw = BlockWindowsOf(r);
  EXPECT_EQ(bw.per_block, 4);
  EXPECT_EQ(bw.back, 1);
  EXPECT_EQ(bw.ahead, 3);
}

// Lengths the buffers cannot hold (the host check refuses them; the device plans the entry as
// invalid, with nothing to read or write).
TEST(CallRules, LengthFaults) {
  CallRules r = RulesFor(AttentionMode::kAuto, 700);
  r.seq_len = 2;
  r.total_sequence_length = 112;
  r.past_capacity = 110;
  EXPECT_EQ(LengthFaultOf(r, 112), LengthFault::kNone);
  EXPECT_EQ(LengthFaultOf(r, 0), LengthFault::kOutOfRange);
  EXPECT_EQ(LengthFaultOf(r, 113), LengthFault::kOutOfRange);
  EXPECT_EQ(LengthFaultOf(r, 1), LengthFault::kShorterThanNew);
  r.past_capacity = 100;
  EXPECT_EQ(LengthFaultOf(r, 103), LengthFault::kPastTooLong);
  r.past_capacity = 110;
  r.past_compressed_given = true;
  r.past_compressed_capacity = 4;  // 100 past tokens: 5 windows of 32 at 16
  EXPECT_EQ(LengthFaultOf(r, 102), LengthFault::kPastWindowsTooMany);
  const int32_t hostile[] = {-5, 112, 2147483647};
  for (int b = 0; b < 3; ++b) {
    const EntryPlan e = PlanEntry(r, hostile, b);
    EXPECT_FALSE(e.valid);
    EXPECT_EQ(e.total, 0);
    EXPECT_FALSE(e.sparse);
    EXPECT_EQ(PlanToken(r, e, 0).len, 0);
    EXPECT_EQ(RotaryPosition(e, 0), 0);
  }
}

// Rank keys: higher score first; equal scores: lower block first; NaN ranks as -inf, -0 as +0.
TEST(CallRules, RankKeyOrder) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_GT(RankKey(1.0f, 5), RankKey(0.5f, 0));
  EXPECT_GT(RankKey(0.5f, 2), RankKey(0.5f, 3));
  EXPECT_GT(RankKey(-1.0f, 0), RankKey(-2.0f, 0));
  EXPECT_GT(RankKey(inf, 9), RankKey(1e30f, 0));
  EXPECT_GT(RankKey(-1e30f, 9), RankKey(-inf, 0));
  EXPECT_EQ(RankKey(nan, 4), RankKey(-inf, 4));
  EXPECT_EQ(RankKey(-0.0f, 4), RankKey(0.0f, 4));
  EXPECT_GT(RankKey(0.0f, 4), RankKey(-1e-45f, 0));
  EXPECT_EQ(BlockOfKey(RankKey(0.25f, 4095)), 4095);
}

// ---- The CPU kernel's top-k (cpu::SelectFromScores) against a plain sort of the spec's order. ----

// Group sums drawn from a few values (ties everywhere, -0 and +0 among them) or spread out, every
// candidate count from 1 to past the budget and a few long ones, both score precisions: the
// selected blocks are init, then the `take` candidates of largest block score (ties: lower block),
// in block order, then the local blocks.
TEST(Selection, TopKEqualsASortOfScoreThenLowerBlock) {
  CallRules r = RulesFor(AttentionMode::kForceSparse, 0);  // blocks of 64, windows 32 / 16, 1 init, 2 local
  r.budget = 12;
  std::mt19937 rng(5);
  std::vector<uint64_t> scratch;
  for (int precision = 0; precision < 2; ++precision)
    for (int ties = 0; ties < 2; ++ties)
      for (int64_t pos : {int64_t{200}, int64_t{700}, int64_t{900}, int64_t{1000}, int64_t{5000}, int64_t{70000}}) {
        r.score_precision = precision;
        const int64_t nvis1 = (pos + 1 - 32) / 16 + 1;
        std::vector<float> g(static_cast<size_t>(nvis1));
        const float few[] = {0.5f, -0.0f, 0.0f, 1.25f, 0.5f + 1e-7f, 3.0f};
        std::uniform_real_distribution<float> u(0.0f, 2.0f);
        for (auto& v : g) v = ties ? few[rng() % 6] : u(rng);
        // Expected, from the spec: block scores (max over windows 4b - 1 .. 4b + 3, bf16-rounded
        // for precision 1), candidates 1 .. qb - 3 sorted by score, then block.
        const int64_t qb = pos / 64, local_lo = qb - 2;
        std::vector<std::pair<float, int64_t>> cand;
        for (int64_t b = 1; b < local_lo; ++b) {
          float best = -INFINITY;
          for (int64_t j = std::max<int64_t>(0, 4 * b - 1); j <= std::min(nvis1 - 1, 4 * b + 3); ++j)
            best = std::max(best, g[j]);
          if (precision) best = ToFloat(FromFloat<BFloat16>(best));
          cand.push_back({best == 0.0f ? 0.0f : best, b});
        }
        std::stable_sort(cand.begin(), cand.end(), [](const auto& x, const auto& y) { return x.first > y.first; });
        const int64_t take = std::min<int64_t>(static_cast<int64_t>(cand.size()), 12 - 1 - 3);
        std::vector<int32_t> want{0};
        std::vector<int32_t> taken;
        for (int64_t i = 0; i < take; ++i) taken.push_back(static_cast<int32_t>(cand[i].second));
        std::sort(taken.begin(), taken.end());
        want.insert(want.end(), taken.begin(), taken.end());
        for (int64_t b = local_lo; b <= qb; ++b) want.push_back(static_cast<int32_t>(b));
        std::vector<int32_t> got(12, -7);
        const int64_t n = cpu::SelectFromScores(r, pos, g.data(), nvis1, scratch, got.data());
        got.resize(static_cast<size_t>(n));
        EXPECT_EQ(got, want) << "pos " << pos << " ties " << ties << " precision " << precision;
      }
}

}  // namespace
}  // namespace infllmv2::testing
