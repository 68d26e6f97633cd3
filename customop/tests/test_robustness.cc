// The op inside a long-lived host process: no exception may cross a work item of the host's
// thread pool, and attributes are bounded so that sizes derived from them cannot overflow.
#include <gtest/gtest.h>

#include <atomic>
#include <limits>
#include <stdexcept>

#include "cpu/guarded_parallel_for.h"
#include "test_support.h"

namespace infllmv2::testing {
namespace {

TEST(GuardedParallelFor, ExceptionInAWorkItemIsRethrownAfterTheLoopOnTheCaller) {
  std::atomic<int> running{0};
  bool overlap_after_throw = false;
  cpu::ParallelFor pool = ThreadedFor;
  cpu::GuardedParallelFor guarded(pool);
  try {
    guarded(1000, [&](size_t i) {
      ++running;
      if (i == 3) {
        --running;
        throw std::length_error("planted failure in item 3");
      }
      --running;
    });
    FAIL() << "the error of item 3 was not rethrown";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "planted failure in item 3");
    overlap_after_throw = running.load() != 0;  // every worker has left the loop body
  }
  EXPECT_FALSE(overlap_after_throw);
}

// Items that start after the failure was recorded return at once (on one thread: exactly the
// items before the failing one ran).
TEST(GuardedParallelFor, ItemsAfterTheFailureDoNotRun) {
  int ran = 0;
  cpu::ParallelFor serial = cpu::SerialFor;
  cpu::GuardedParallelFor guarded(serial);
  EXPECT_THROW(guarded(1000,
                       [&](size_t i) {
                         ++ran;
                         if (i == 3) throw std::length_error("planted");
                       }),
               std::runtime_error);
  EXPECT_EQ(ran, 4);
}

TEST(GuardedParallelFor, AllocationFailureBecomesOutOfMemory) {
  cpu::ParallelFor pool = ThreadedFor;
  cpu::GuardedParallelFor guarded(pool);
  try {
    guarded(4, [](size_t i) {
      if (i == 2) throw std::bad_alloc();
    });
    FAIL() << "not rethrown";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "out of memory");
  }
}

// The repro of the crash: a budget whose per-item selection lists cannot be allocated (16 tokens x
// 2^58 blocks: std::length_error, thrown without allocating, so the sanitized build sees the same
// path). The attribute check refuses such a budget; called without the check, the kernel must
// return an error from inside a work item of a two-thread pool, not crash.
TEST(Robustness, KernelReturnsAnErrorWhenAWorkItemThrows) {
  Case c;
  c.seq_len = 40;
  c.head_size = 16;
  c.mode = 2;
  c.attrs = SmallBudget();
  c.attrs.topk = int64_t{1} << 58;
  Tensors t = MakeTensors(c);
  // RunKernel runs CheckAttributes first; call the kernel directly with the unchecked attributes.
  AttentionParams p;
  ASSERT_EQ(CheckInputs(c.attrs, ShapesOf(c, t), &p), "");
  std::vector<float> out(static_cast<size_t>(p.batch * p.seq_len * p.num_heads * p.head_size));
  std::vector<float> pk(static_cast<size_t>(p.batch * p.kv_num_heads * p.present_capacity * p.head_size)),
      pv(pk.size());
  AttentionData<float> d;
  d.query = t.query.data();
  d.key = t.key.data();
  d.value = t.value.data();
  d.seqlens_k = t.seqlens_k.data();
  d.output = out.data();
  d.present_key = pk.data();
  d.present_value = pv.data();
  const std::string err = cpu::RunAttention<float>(c.attrs, p, d, ThreadedFor);
  EXPECT_NE(err.find("CPU kernel: "), std::string::npos) << err;
}

TEST(CheckAttributes, UpperBoundsNameTheAttributeAndTheLimit) {
  auto err = [](auto set) {
    AttentionAttributes a;
    a.num_heads = 4;
    a.kv_num_heads = 2;
    set(a);
    return CheckAttributes(a);
  };
  EXPECT_EQ(err([](AttentionAttributes&) {}), "");
  EXPECT_NE(err([](AttentionAttributes& a) { a.topk = int64_t{1} << 31; }).find("'topk'"), std::string::npos);
  EXPECT_NE(err([](AttentionAttributes& a) { a.topk = (1 << 20) - 1; }).find("1048576"), std::string::npos)
      << "topk + window_size / block_size is the budget";
  EXPECT_EQ(err([](AttentionAttributes& a) { a.topk = (1 << 20) - 32; }), "");
  EXPECT_NE(err([](AttentionAttributes& a) { a.num_heads = a.kv_num_heads = int64_t{1} << 40; }).find("'num_heads'"),
            std::string::npos);
  EXPECT_NE(err([](AttentionAttributes& a) { a.block_size = int64_t{1} << 20; }).find("'block_size'"),
            std::string::npos);
  EXPECT_NE(err([](AttentionAttributes& a) { a.dense_len = int64_t{1} << 40; }).find("'dense_len'"), std::string::npos);
  EXPECT_EQ(err([](AttentionAttributes& a) { a.dense_len = std::numeric_limits<int32_t>::max(); }), "")
      << "the rewriter's dense-only value";
  EXPECT_NE(err([](AttentionAttributes& a) { a.window_size = int64_t{1} << 40; }).find("'window_size'"),
            std::string::npos);
  EXPECT_NE(err([](AttentionAttributes& a) { a.local_window_size = int64_t{1} << 40; }).find("'local_window_size'"),
            std::string::npos);
}

}  // namespace
}  // namespace infllmv2::testing
