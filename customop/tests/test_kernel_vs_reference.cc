// CPU kernel vs the double-precision reference, dense and sparse, over shapes straddling block and
// window boundaries (S, P in {1, 15, 16, 31, 63, 64, 65, 127, 2047, 2048, 2113, 8191, 8192},
// G in {1, 2, 3, 8, 16}, D in {64, 96, 128}; D in {8, 16, 32}, the lane-major p.V path, in SmallHeadSizes).
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <string>

#include "test_support.h"

namespace infllmv2::testing {
namespace {

// fp32 I/O: every backend against the reference (tolerances per backend, test_support.h).
void ExpectMatchesReference(Case c) {
  Tensors t = MakeTensors(c);
  ExpectBackendsMatchReference<float>(c, t);
}

// fp16 I/O: the same outputs within fp16 rounding (the reference rounds to fp16 where the op
// stores); present_value is copied, so it must equal the rounded inputs exactly.
KernelOutputs<Float16> ExpectFp16MatchesReference(Case c) {
  c.round = [](float x) { return ToFloat(FromFloat<Float16>(x)); };
  Tensors t = MakeTensors(c);
  return ExpectBackendsMatchReference<Float16>(c, t);
}

const int64_t kGroups[] = {1, 2, 3, 8, 16};
const int64_t kHeadSizes[] = {64, 96, 128};

TEST(DenseVsReference, FirstPromptPrefill) {
  int i = 0;
  for (int64_t S : {1, 15, 16, 31, 63, 64, 65, 127}) {
    Case c;
    c.seq_len = S;
    c.kv_num_heads = 1 + i % 2;
    c.num_heads = c.kv_num_heads * kGroups[i % 5];
    c.head_size = kHeadSizes[i % 3];
    c.mode = 1;
    c.seed = 100 + i++;
    ExpectMatchesReference(c);
  }
}

TEST(DenseVsReference, Decode) {
  int i = 0;
  for (int64_t P : {1, 15, 16, 31, 63, 64, 65, 127, 2047, 2048, 2113}) {
    Case c;
    c.seq_len = 1;
    c.past_capacity = P;
    c.kv_num_heads = 2;
    c.num_heads = 2 * kGroups[i % 5];
    c.head_size = kHeadSizes[i % 3];
    c.mode = 1;
    c.seed = 200 + i++;
    ExpectMatchesReference(c);
  }
}

TEST(DenseVsReference, ChunkedPrefillAndSharedCapacity) {
  int i = 0;
  for (auto [S, P] : std::vector<std::pair<int64_t, int64_t>>{{15, 63}, {64, 127}, {65, 2047}, {31, 16}}) {
    Case c;
    c.seq_len = S;
    c.past_capacity = P + 7;  // buffer larger than the valid past
    c.totals = {static_cast<int32_t>(P + S)};
    c.num_heads = 2 * kGroups[(i + 1) % 5];
    c.kv_num_heads = 2;
    c.mode = 1;
    c.seed = 300 + i++;
    ExpectMatchesReference(c);
  }
}

TEST(DenseVsReference, RaggedBatchPackedRotarySoftcapWindow) {
  Case c;
  c.batch = 3;
  c.seq_len = 20;
  c.totals = {20, 7, 13};
  c.mode = 1;
  ExpectMatchesReference(c);  // first prompt, right padded

  Case d;
  d.batch = 3;
  d.seq_len = 1;
  d.past_capacity = 40;
  d.totals = {10, 41, 25};
  d.mode = 1;
  d.packed = true;
  d.rotary = true;
  ExpectMatchesReference(d);

  Case e;
  e.seq_len = 70;
  e.rotary = true;
  e.interleaved = true;
  e.attrs.softcap = 5.0f;
  e.mode = 1;
  ExpectMatchesReference(e);

  Case f;
  f.seq_len = 65;
  f.past_capacity = 100;
  f.attrs.local_window_size = 37;
  f.mode = 1;
  f.seed = 9;
  ExpectMatchesReference(f);
}

TEST(DenseVsReference, LongDecode) {
  for (int64_t P : {8191, 8192}) {
    Case c;
    c.past_capacity = P;
    c.num_heads = 16;
    c.kv_num_heads = 1;
    c.head_size = 128;
    c.mode = 1;
    ExpectMatchesReference(c);
  }
}

TEST(SparseVsReference, DecodeDefaultsBeyondTheBudget) {
  int i = 0;
  for (int64_t P : {6143, 8191, 8192, 9000}) {
    Case c;
    c.past_capacity = P;
    c.num_heads = 16;
    c.kv_num_heads = 1 + i % 2;
    c.num_heads = 16 * c.kv_num_heads;
    c.head_size = i % 2 ? 128 : 64;
    c.mode = 2;
    c.seed = 400 + i++;
    ExpectMatchesReference(c);
  }
}

// 5 to 8 query heads per KV head (Qwen2.5's 7): a decode step scores them with the few-rows
// kernels at 16 lanes (8 rows of two keys per vector, padding rows discarded), below it with the
// key-major ones; both modes, both head sizes, with and without the compressed state.
TEST(KernelVsReference, DecodeWithFiveToEightHeadsPerKvHead) {
  int i = 0;
  for (int64_t G : {5, 7, 8})
    for (int64_t D : {64, 128}) {
      Case c;
      c.past_capacity = 5000 + 37 * i;
      c.kv_num_heads = 2;
      c.num_heads = 2 * G;
      c.head_size = D;
      c.mode = i % 3 == 0 ? 1 : 2;
      c.compressed_state_in = i % 2 ? Case::State::kConsistent : Case::State::kNone;
      c.seed = 470 + i++;
      ExpectMatchesReference(c);
    }
}

// A decode step splits each (b, h)'s stage-1 windows and attended blocks into slices by the core
// count (DecodeSlices; INFLLMV2_DECODE_SLICES forces it): every slice count merges to the reference,
// dense and sparse.
// Runs `body` once with the environment variable `name` set to each of `values` (traced), then
// unsets it: the kernel's switches for paths that otherwise follow the machine's core count.
void ForEachSetting(const char* name, std::initializer_list<const char*> values, const std::function<void()>& body) {
  for (const char* value : values) {
    SCOPED_TRACE(std::string(name) + "=" + value);
    setenv(name, value, 1);
    body();
  }
  unsetenv(name);
}

TEST(KernelVsReference, DecodeAtEverySliceCount) {
  ForEachSetting("INFLLMV2_DECODE_SLICES", {"1", "2", "3", "8"}, [] {
    for (int mode : {1, 2}) {
      Case c;
      c.past_capacity = 9000;
      c.kv_num_heads = 2;
      c.num_heads = 8;
      c.head_size = 64;
      c.mode = mode;
      c.seed = 450 + mode;
      ExpectMatchesReference(c);
    }
  });
}

// Whether a decode step runs as one phase (each (b, h) selected and attended by one thread) follows
// the core count (DecodeOnePhase; INFLLMV2_DECODE_ONE_PHASE forces it): both ways merge to the
// reference, with one KV head and with three, below and beyond the budget in one ragged batch.
TEST(KernelVsReference, DecodeInOnePhaseAndInSeveral) {
  ForEachSetting("INFLLMV2_DECODE_ONE_PHASE", {"0", "1"}, [] {
    for (int64_t kv : {1, 3}) {
      Case c;
      c.batch = 2;
      c.past_capacity = 5000;
      c.totals = {5000, 300};  // beyond and within the small budget (6 blocks of 64)
      c.attrs = SmallBudget();
      c.kv_num_heads = kv;
      c.num_heads = 4 * kv;
      c.head_size = 32;
      c.mode = 2;
      c.seed = 470 + static_cast<int>(kv);
      ExpectMatchesReference(c);
    }
  });
}

TEST(SparseVsReference, SmallBudgetPrefillDecodeChunked) {
  int i = 0;
  struct Shape {
    int64_t S, P;
  };
  for (Shape s : {Shape{127, 0}, Shape{200, 0}, Shape{1, 383}, Shape{1, 1000}, Shape{1, 2113}, Shape{65, 2047},
                  Shape{16, 1007}, Shape{31, 2048}}) {
    Case c;
    c.seq_len = s.S;
    c.past_capacity = s.P;
    c.kv_num_heads = 1 + i % 2;
    c.num_heads = c.kv_num_heads * kGroups[i % 5];
    c.head_size = kHeadSizes[i % 3];
    c.attrs = SmallBudget();
    c.attrs.lse_approx = i % 3 == 2 ? 0 : 1;
    c.rotary = i % 4 == 1;
    c.mode = 2;
    c.seed = 500 + i++;
    ExpectMatchesReference(c);
  }
}

// Head sizes 8, 16 and 32 (lane-major accumulators at AVX-512; the row kernel elsewhere): dense
// and sparse prefill, decode and chunked prefill, groups that fill one or several lane vectors
// and leave padding lanes, rotary on some, fp16 on the last shapes.
TEST(KernelVsReference, SmallHeadSizes) {
  int i = 0;
  struct Shape {
    int64_t S, P;
    int32_t mode;
  };
  for (int64_t D : {8, 16, 32})
    for (Shape s : {Shape{65, 0, 1}, Shape{1, 2113, 1}, Shape{31, 127, 1}, Shape{200, 0, 2}, Shape{1, 1000, 2},
                    Shape{65, 2047, 2}}) {
      Case c;
      c.seq_len = s.S;
      c.past_capacity = s.P;
      c.kv_num_heads = 1 + i % 2;
      c.num_heads = c.kv_num_heads * kGroups[i % 5];
      c.head_size = D;
      c.mode = s.mode;
      if (s.mode == 2) c.attrs = SmallBudget();
      c.rotary = i % 4 == 1;
      c.seed = 1300 + i++;
      SCOPED_TRACE(::testing::Message() << "D=" << D << " S=" << s.S << " P=" << s.P << " mode=" << s.mode);
      ExpectMatchesReference(c);
      if (s.P > 1000) ExpectFp16MatchesReference(c);
    }
}

TEST(SparseVsReference, AutoModeRaggedBatchSwitchesPerEntry) {
  Case c;
  c.batch = 3;
  c.seq_len = 1;
  c.past_capacity = 1500;
  c.totals = {300, 1501, 1100};
  c.attrs = SmallBudget();
  c.attrs.dense_len = 1000;  // entry 0 dense, entries 1 and 2 sparse
  c.mode = 0;
  ExpectMatchesReference(c);
}

TEST(KernelVsReference, OneTokenStepsWithSoftcap) {
  // One-token steps score key-major (not through transposed key tiles): softcap there too.
  for (int32_t mode : {1, 2}) {
    Case c;
    c.seq_len = 1;
    c.past_capacity = 700;
    c.totals = {700};
    c.attrs = SmallBudget();
    c.attrs.softcap = 5.0f;
    c.mode = mode;
    ExpectMatchesReference(c);
  }
}

TEST(KernelVsReference, ChunkedPrefillWithRaggedBatch) {
  // Unlike GQA (batch 1 only), any batch may continue a prompt, each entry at its own past length.
  for (int32_t mode : {1, 2}) {
    Case c;
    c.batch = 2;
    c.seq_len = 20;
    c.past_capacity = 700;
    c.totals = {400, 713};
    c.attrs = SmallBudget();
    c.mode = mode;
    c.rotary = true;
    ExpectMatchesReference(c);
  }
}

TEST(SparseVsReference, OtherGeometry) {
  Case c;
  c.seq_len = 40;
  c.past_capacity = 900;
  c.attrs.block_size = 32;
  c.attrs.compress_kernel = 16;
  c.attrs.compress_stride = 8;
  c.attrs.window_size = 64;
  c.attrs.init_blocks = 2;
  c.attrs.topk = 5;
  c.mode = 2;
  ExpectMatchesReference(c);
}

TEST(Fp16VsReference, DenseAndSparse) {
  int i = 0;
  for (int32_t mode : {1, 2}) {
    for (bool rotary : {false, true}) {
      Case c;
      c.seq_len = 33;
      c.past_capacity = 700;
      c.num_heads = 8;
      c.kv_num_heads = 2;
      c.attrs = SmallBudget();
      c.rotary = rotary;
      c.mode = mode;
      c.seed = 600 + i++;
      ExpectFp16MatchesReference(c);
    }
  }
}

// One-token steps of an fp16 model beyond the budget: decode scores the fp16 compressed keys as
// the microkernel converts them (prefill converts them all once), without and with an explicit
// past compressed state (past_compressed_key, input 9). A perturbed state must change the
// selection (the state is read, not recomputed) and still match the reference, which reads it too.
TEST(Fp16VsReference, SparseDecode) {
  int i = 0;
  for (int64_t P : {1000, 4000}) {
    std::vector<int32_t> consistent_sel;
    for (auto state : {Case::State::kNone, Case::State::kConsistent, Case::State::kPerturbed}) {
      Case c;
      c.past_capacity = P;
      c.num_heads = 8;
      c.kv_num_heads = 2;
      c.attrs = SmallBudget();
      c.compressed_state_in = state;
      c.mode = 2;
      c.seed = 700 + i;
      const auto k = ExpectFp16MatchesReference(c);
      ASSERT_FALSE(k.selected_blocks.empty());
      if (state == Case::State::kConsistent) consistent_sel = k.selected_blocks;
      if (state == Case::State::kPerturbed) {
        EXPECT_NE(k.selected_blocks, consistent_sel)
            << "a different past_compressed_key did not change the selection: is it read?";
      }
    }
    ++i;
  }
}

// Chunked fp16 prefill on top of a past compressed state (windows before the chunk copied, the
// others computed from the fp16 cache), dense and sparse rows in one ragged batch.
TEST(Fp16VsReference, ChunkedPrefillWithPastCompressedState) {
  for (auto state : {Case::State::kConsistent, Case::State::kPerturbed}) {
    Case c;
    c.batch = 2;
    c.seq_len = 20;
    c.past_capacity = 700;
    c.totals = {400, 713};
    c.num_heads = 4;
    c.kv_num_heads = 2;
    c.attrs = SmallBudget();
    c.compressed_state_in = state;
    c.rotary = true;
    c.mode = 2;
    c.seed = 750;
    ExpectFp16MatchesReference(c);
  }
}

}  // namespace
}  // namespace infllmv2::testing
