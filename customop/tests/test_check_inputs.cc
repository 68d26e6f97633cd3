// Bad attributes and inputs give a message naming the problem (never a crash).
#include <gtest/gtest.h>

#include "test_support.h"

namespace infllmv2::testing {
namespace {

Case Base() {
  Case c;
  c.seq_len = 1;
  c.past_capacity = 10;
  c.num_heads = 4;
  c.kv_num_heads = 2;
  c.head_size = 16;
  return c;
}

std::string CheckError(Case c, const std::function<void(AttentionInputs&)>& mutate) {
  Tensors t = MakeTensors(c);
  AttentionInputs in = ShapesOf(c, t);
  mutate(in);
  AttentionParams p;
  std::string e = CheckAttributes(c.attrs);
  return e.empty() ? CheckInputs(c.attrs, in, &p) : e;
}

TEST(CheckInputs, ValidCaseHasNoError) {
  EXPECT_EQ(CheckError(Base(), [](AttentionInputs&) {}), "");
}

TEST(CheckInputs, WrongQueryRankNamesInput) {
  auto e = CheckError(Base(), [](AttentionInputs& in) { in.query.dims = {1, 64}; });
  EXPECT_NE(e.find("'query'"), std::string::npos) << e;
  EXPECT_NE(e.find("[1,64]"), std::string::npos) << e;
}

TEST(CheckInputs, KeyDimMismatchNamesExpectedAndActual) {
  auto e = CheckError(Base(), [](AttentionInputs& in) { in.key.dims = {1, 1, 48}; });
  EXPECT_NE(e.find("'key'"), std::string::npos) << e;
  EXPECT_NE(e.find("[1,1,32]"), std::string::npos) << e;
  EXPECT_NE(e.find("[1,1,48]"), std::string::npos) << e;
}

TEST(CheckInputs, KeyWithoutValueIsRefused) {
  auto e = CheckError(Base(), [](AttentionInputs& in) { in.value.present = false; });
  EXPECT_NE(e.find("'key' and 'value'"), std::string::npos) << e;
}

TEST(CheckInputs, GroupNotIntegralIsRefused) {
  Case c = Base();
  c.num_heads = 5;
  auto e = CheckError(c, [](AttentionInputs&) {});
  EXPECT_NE(e.find("num_heads"), std::string::npos) << e;
}

TEST(CheckInputs, HeadSizeNotMultipleOf8IsRefused) {
  Case c = Base();
  c.head_size = 12;
  auto e = CheckError(c, [](AttentionInputs&) {});
  EXPECT_NE(e.find("multiple of 8"), std::string::npos) << e;
}

TEST(CheckInputs, RotaryWithoutCachesIsRefused) {
  Case c = Base();
  c.rotary = true;
  auto e = CheckError(c, [](AttentionInputs& in) { in.cos_cache.present = in.sin_cache.present = false; });
  EXPECT_NE(e.find("cos_cache"), std::string::npos) << e;
}

TEST(CheckInputs, SeqlensBeyondPastBufferIsRefused) {
  Case c = Base();
  Tensors t = MakeTensors(c);
  t.seqlens_k[0] = 20;  // 21 total = 20 past > capacity 10 (and > total_sequence_length)
  AttentionInputs in = ShapesOf(c, t);
  in.total_sequence_length_value = 21;
  AttentionParams p;
  auto e = CheckInputs(c.attrs, in, &p);
  EXPECT_NE(e.find("'seqlens_k'"), std::string::npos) << e;
  EXPECT_NE(e.find("holds only 10"), std::string::npos) << e;
}

TEST(CheckInputs, SeqlensAboveTotalIsRefused) {
  Case c = Base();
  Tensors t = MakeTensors(c);
  t.seqlens_k[0] = 50;
  AttentionInputs in = ShapesOf(c, t);
  AttentionParams p;
  auto e = CheckInputs(c.attrs, in, &p);
  EXPECT_NE(e.find("must be in [1, total_sequence_length = 11]"), std::string::npos) << e;
}

TEST(CheckInputs, NegativeSeqlensIsRefused) {
  Case c = Base();
  Tensors t = MakeTensors(c);
  t.seqlens_k[0] = -7;
  AttentionInputs in = ShapesOf(c, t);
  AttentionParams p;
  EXPECT_NE(CheckInputs(c.attrs, in, &p), "");
}

TEST(CheckInputs, TotalShorterThanQueryIsRefused) {
  auto e = CheckError(Base(), [](AttentionInputs& in) { in.total_sequence_length_value = 0; });
  EXPECT_NE(e.find("total_sequence_length"), std::string::npos) << e;
}

TEST(CheckInputs, BadAttentionModeIsRefused) {
  auto e = CheckError(Base(), [](AttentionInputs& in) { in.attention_mode_value = 7; });
  EXPECT_NE(e.find("attention_mode"), std::string::npos) << e;
}

TEST(CheckInputs, CompressedStateTooShortIsRefused) {
  Case c = Base();
  c.past_capacity = 100;
  c.head_size = 16;
  Tensors t = MakeTensors(c);
  AttentionInputs in = ShapesOf(c, t);
  in.past_compressed_key = {true, {1, 2, 3, 16}};  // 100 past tokens need 5 windows
  AttentionParams p;
  auto e = CheckInputs(c.attrs, in, &p);
  EXPECT_NE(e.find("'past_compressed_key'"), std::string::npos) << e;
}

TEST(CheckAttributes, BadSparseAttributesAreRefused) {
  AttentionAttributes a;
  a.num_heads = 4;
  a.kv_num_heads = 2;
  EXPECT_EQ(CheckAttributes(a), "");
  auto bad = [&](auto mutate, const char* word) {
    AttentionAttributes b = a;
    mutate(b);
    auto e = CheckAttributes(b);
    EXPECT_NE(e.find(word), std::string::npos) << e;
  };
  bad([](AttentionAttributes& b) { b.kv_num_heads = 0; }, "kv_num_heads");
  bad([](AttentionAttributes& b) { b.block_size = 40; }, "block_size");
  bad([](AttentionAttributes& b) { b.window_size = 100; }, "window_size");
  bad([](AttentionAttributes& b) { b.topk = 1; }, "topk");
  bad([](AttentionAttributes& b) { b.compress_kernel = 24; }, "compress_kernel");
  bad([](AttentionAttributes& b) { b.dense_len = -5; }, "dense_len");
  bad([](AttentionAttributes& b) { b.scale = -1.0f; }, "scale");
  bad([](AttentionAttributes& b) { b.local_window_size = 0; }, "local_window_size");
}

TEST(RunAttention, LocalWindowInSparseModeIsAnErrorNotACrash) {
  Case c = Base();
  c.attrs.local_window_size = 4;
  c.mode = 2;
  Tensors t = MakeTensors(c);
  auto r = RunKernel<float>(c, t);
  EXPECT_NE(r.error.find("local_window_size"), std::string::npos) << r.error;
}

}  // namespace
}  // namespace infllmv2::testing
