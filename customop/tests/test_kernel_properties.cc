// Properties of the CPU kernel that hold in both modes: full budget == dense (bit for bit), decode
// after prefill == one full prefill, incremental compressed state == recomputation, shared buffers,
// re-entrancy.
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <cstring>
#include <limits>

#include "cpu/reused_scratch.h"
#include "test_support.h"

namespace infllmv2::testing {
namespace {

TEST(KernelProperties, BudgetCoveringEveryBlockIsBitIdenticalToDense) {
  for (auto [S, P] : std::vector<std::pair<int64_t, int64_t>>{{150, 1000}, {1, 3000}, {300, 0}}) {
    Case c;
    c.seq_len = S;
    c.past_capacity = P;
    c.num_heads = 8;
    c.kv_num_heads = 2;
    c.rotary = true;
    c.attrs.topk = 1000;  // budget 1032 blocks > every context here
    Tensors t = MakeTensors(c);
    c.mode = 1;
    auto dense = RunKernel<float>(c, t);
    c.mode = 2;
    auto sparse = RunKernel<float>(c, t);
    ASSERT_EQ(dense.error, "");
    ASSERT_EQ(sparse.error, "");
    ASSERT_EQ(dense.output.size(), sparse.output.size());
    EXPECT_EQ(0, std::memcmp(dense.output.data(), sparse.output.data(), dense.output.size() * sizeof(float)))
        << "S=" << S << " P=" << P;
  }
}

// Prefill of n-1 tokens, then one decode step fed with the prefill's present K/V (and compressed
// keys when `with_state`), vs one prefill of all n tokens: the last row must agree.
void CheckDecodeAfterPrefill(int32_t mode, bool with_state) {
  const int64_t n = 900, H = 8, Hkv = 2, D = 64;
  Case full;
  full.seq_len = n;
  full.num_heads = H;
  full.kv_num_heads = Hkv;
  full.head_size = D;
  full.rotary = true;
  full.attrs = SmallBudget();
  full.mode = mode;
  full.seed = 77;
  Tensors tf = MakeTensors(full);
  auto rf = RunKernel<float>(full, tf);
  ASSERT_EQ(rf.error, "");

  Case pre = full;
  pre.seq_len = n - 1;
  pre.totals.clear();
  pre.total_sequence_length = 0;
  Tensors tp = tf;
  tp.query.resize((n - 1) * H * D);
  tp.key.resize((n - 1) * Hkv * D);
  tp.value.resize((n - 1) * Hkv * D);
  tp.seqlens_k = {static_cast<int32_t>(n - 2)};
  Complete(pre);
  auto rp = RunKernel<float>(pre, tp);
  ASSERT_EQ(rp.error, "");

  Case dec = full;
  dec.seq_len = 1;
  dec.past_capacity = n - 1;
  dec.totals = {static_cast<int32_t>(n)};
  dec.total_sequence_length = 0;
  Tensors td = tf;
  td.query.assign(tf.query.end() - H * D, tf.query.end());
  td.key.assign(tf.key.end() - Hkv * D, tf.key.end());
  td.value.assign(tf.value.end() - Hkv * D, tf.value.end());
  td.past_key = rp.present_key;
  td.past_value = rp.present_value;
  td.seqlens_k = {static_cast<int32_t>(n - 1)};
  if (with_state) td.past_compressed_key = rp.present_compressed_key;
  Complete(dec);
  auto rd = RunKernel<float>(dec, td);
  ASSERT_EQ(rd.error, "");

  double diff = 0;
  for (int64_t i = 0; i < H * D; ++i)
    diff = std::max(diff, double(std::abs(rd.output[i] - rf.output[(n - 1) * H * D + i])));
  EXPECT_LE(diff, 1e-6) << "mode " << mode;
  // Same selection for the last token.
  const int64_t K = rf.params.budget;
  for (int64_t h = 0; h < Hkv; ++h)
    for (int64_t k = 0; k < K; ++k)
      EXPECT_EQ(rd.selected_blocks[h * K + k], rf.selected_blocks[(h * n + n - 1) * K + k]);
  // Compressed keys: incremental (copied + new window) == recomputed from the whole cache.
  ASSERT_EQ(rd.present_compressed_key.size(), rf.present_compressed_key.size());
  EXPECT_EQ(0, std::memcmp(rd.present_compressed_key.data(), rf.present_compressed_key.data(),
                           rd.present_compressed_key.size() * sizeof(float)));
}

TEST(KernelProperties, DecodeAfterPrefillEqualsFullPrefillDense) { CheckDecodeAfterPrefill(1, false); }
TEST(KernelProperties, DecodeAfterPrefillEqualsFullPrefillSparse) { CheckDecodeAfterPrefill(2, false); }
TEST(KernelProperties, IncrementalCompressedStateEqualsRecompute) { CheckDecodeAfterPrefill(2, true); }

TEST(KernelProperties, ChunkedPrefillEqualsOneShotSparse) {
  const int64_t n = 600, cut = 350, H = 4, Hkv = 1, D = 64;
  Case full;
  full.seq_len = n;
  full.num_heads = H;
  full.kv_num_heads = Hkv;
  full.attrs = SmallBudget();
  full.mode = 2;
  Tensors tf = MakeTensors(full);
  auto rf = RunKernel<float>(full, tf);
  ASSERT_EQ(rf.error, "");
  Case a = full;
  a.seq_len = cut;
  a.totals = {static_cast<int32_t>(cut)};
  a.total_sequence_length = 0;
  Tensors ta = tf;
  ta.query.resize(cut * H * D);
  ta.key.resize(cut * Hkv * D);
  ta.value.resize(cut * Hkv * D);
  ta.seqlens_k = {static_cast<int32_t>(cut - 1)};
  auto ra = RunKernel<float>(a, ta);
  ASSERT_EQ(ra.error, "");
  Case b = full;
  b.seq_len = n - cut;
  b.past_capacity = cut;
  b.totals = {static_cast<int32_t>(n)};
  b.total_sequence_length = 0;
  Tensors tb = tf;
  tb.query.assign(tf.query.begin() + cut * H * D, tf.query.end());
  tb.key.assign(tf.key.begin() + cut * Hkv * D, tf.key.end());
  tb.value.assign(tf.value.begin() + cut * Hkv * D, tf.value.end());
  tb.past_key = ra.present_key;
  tb.past_value = ra.present_value;
  tb.past_compressed_key = ra.present_compressed_key;
  tb.seqlens_k = {static_cast<int32_t>(n - 1)};
  auto rb = RunKernel<float>(b, tb);
  ASSERT_EQ(rb.error, "");
  double diff = 0;
  for (size_t i = 0; i < rb.output.size(); ++i)
    diff = std::max(diff, double(std::abs(rb.output[i] - rf.output[cut * H * D + i])));
  EXPECT_LE(diff, 1e-6);
}

TEST(KernelProperties, SharedBuffersEqualSeparateBuffers) {
  for (int32_t mode : {1, 2}) {
    Case c;
    c.batch = 2;
    c.seq_len = 1;
    c.past_capacity = 800;
    c.totals = {500, 799};
    c.attrs = SmallBudget();
    c.mode = mode;
    c.total_sequence_length = 800;  // capacity == total: present may alias past
    Tensors t = MakeTensors(c);
    auto sep = RunKernel<float>(c, t, true, false);
    auto shared = RunKernel<float>(c, t, true, true);
    ASSERT_EQ(sep.error, "");
    ASSERT_EQ(shared.error, "");
    EXPECT_EQ(sep.output, shared.output);
    EXPECT_EQ(sep.selected_blocks, shared.selected_blocks);
    // Valid rows of the cache agree; the shared buffer keeps its old tail.
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t h = 0; h < c.kv_num_heads; ++h)
        for (int64_t i = 0; i < c.totals[b] * c.head_size; ++i) {
          const size_t at = ((b * c.kv_num_heads + h) * 800) * c.head_size + i;
          ASSERT_EQ(sep.present_key[at], shared.present_key[at]);
        }
  }
}

// Runs case c on 4 threads at once, `steps` times each (threads 0 and 2 with the parallel loop, 1
// and 3 serially): every result equals the serial one (TSan runs these too).
void ExpectConcurrentCallsMatchSerial(Case c, int steps) {
  Tensors t = MakeTensors(c);
  auto expected = RunKernel<float>(c, t, false);
  std::vector<KernelOutputs<float>> got(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] {
      for (int step = 0; step < steps; ++step) got[i] = RunKernel<float>(c, t, i % 2 == 0);
    });
  for (auto& th : threads) th.join();
  for (auto& g : got) {
    EXPECT_EQ(g.output, expected.output);
    EXPECT_EQ(g.selected_blocks, expected.selected_blocks);
  }
}

TEST(KernelProperties, ConcurrentCallsAreIndependent) {
  Case c;
  c.seq_len = 40;
  c.past_capacity = 600;
  c.attrs = SmallBudget();
  c.mode = 2;
  ExpectConcurrentCallsMatchSerial(c, 1);
}

// Decode steps, each thread with its own stage-1 scratch (ReusedScratch is per thread), kept
// between its steps.
TEST(KernelProperties, ConcurrentDecodeStepsAreIndependent) {
  Case c;
  c.past_capacity = 3000;
  c.num_heads = 8;
  c.attrs = SmallBudget();
  c.mode = 2;
  ExpectConcurrentCallsMatchSerial(c, 3);
}

TEST(ReusedScratch, OneBufferPerThreadKeptBetweenBorrows) {
  using cpu::ReusedScratch;
  float* first = nullptr;
  {
    const ReusedScratch<float> a(1000);
    first = a.data();
    std::fill(a.data(), a.data() + 1000, 1.0f);  // the whole buffer is writable (ASan checks the bounds)
  }
  {
    const ReusedScratch<float> again(600);  // smaller: the same buffer
    EXPECT_EQ(again.data(), first);
    const ReusedScratch<float> nested(600);  // borrowed already: a buffer of its own
    EXPECT_NE(nested.data(), first);
  }
  {
    const ReusedScratch<float> huge(ReusedScratch<float>::kKeepLimit / sizeof(float) + 1);  // not kept
    EXPECT_NE(huge.data(), first);
  }
  {
    const ReusedScratch<float> small(1000);  // the kept one survived the unkept borrow
    EXPECT_EQ(small.data(), first);
  }
  {
    const ReusedScratch<float> larger(5000);  // grown
    std::fill(larger.data(), larger.data() + 5000, 2.0f);
    first = larger.data();
  }
  float* other = nullptr;
  std::thread([&] {
    const ReusedScratch<float> theirs(1000);
    other = theirs.data();
  }).join();
  EXPECT_NE(other, first);  // another thread's own buffer (freed when it exited)
}

// A decode step at long context takes no fresh pages once the calling thread has run one: its
// stage-1 scores and group sums (17 x windows floats per (b, h) with 16 heads: 4.5 MB here) reuse
// the thread's scratch. A fresh allocation per step costs a page fault per 4 KiB, as
// much time as the scoring itself.
TEST(KernelProperties, DecodeAtLongContextTakesNoFreshPagesPerStep) {
  Case c;
  c.past_capacity = 131072;  // shared buffers, as a KV-cache owner decodes: 128k tokens with the new one
  c.totals = {131072};
  c.total_sequence_length = 131072;
  c.kv_num_heads = 8;
  c.num_heads = 128;  // 16 heads per KV head: 16 lanes of scores at every vector width
  c.head_size = 16;
  c.compressed_state_in = Case::State::kConsistent;
  c.mode = 2;
  Tensors t = MakeTensors(c);
  KernelOutputs<float> r;
  PreparedCall<float> call;
  ASSERT_TRUE(PrepareCall<float>(c, t, true, 0.0f, 0, r, call)) << r.error;
  auto faults = [] {
    rusage u{};
    getrusage(RUSAGE_THREAD, &u);
    return u.ru_minflt;
  };
  const cpu::ParallelFor serial(cpu::SerialFor);  // every page touched on this thread
  for (int warm = 0; warm < 3; ++warm) ASSERT_EQ(cpu::RunAttention<float>(c.attrs, r.params, call.data, serial), "");
  // The fewest faults of 4 steps. A Release build takes 0; an ASan build 120-150, its allocator
  // handing out fresh memory and shadow for the step's small vectors. Allocated per step, the
  // scores alone take a fault per page of them (1088 pages).
  long fewest = std::numeric_limits<long>::max();
  for (int step = 0; step < 4; ++step) {
    const long before = faults();
    ASSERT_EQ(cpu::RunAttention<float>(c.attrs, r.params, call.data, serial), "");
    fewest = std::min(fewest, faults() - before);
  }
  // 16 lanes of scores and one group sum per window, 8191 windows, 8 (b, h): 1087 pages.
  const long scores_pages = static_cast<long>((16 + 1) * (131072 / 16 - 1) * 8 * sizeof(float) / 4096);
  EXPECT_LT(fewest, scores_pages / 3) << "minor page faults in a decode step at 128k (fewest of 4), scores "
                                      << scores_pages << " pages";
}

}  // namespace
}  // namespace infllmv2::testing
