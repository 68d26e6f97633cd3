// Random (mostly invalid) shapes and values: the check must either refuse with a message or the
// kernel must run cleanly (this suite runs under AddressSanitizer and UBSan).
#include <gtest/gtest.h>

#include "test_support.h"

namespace infllmv2::testing {
namespace {

TEST(RandomInputs, CheckRefusesOrKernelRunsCleanly) {
  std::mt19937 rng(2026);
  auto pick = [&](std::initializer_list<int64_t> v) { return *(v.begin() + rng() % v.size()); };
  int ran = 0, refused = 0;
  for (int iter = 0; iter < 400; ++iter) {
    AttentionAttributes a = SmallBudget();
    a.kv_num_heads = pick({1, 2, 3});
    a.num_heads = a.kv_num_heads * pick({1, 2, 3}) + (rng() % 10 == 0 ? 1 : 0);  // sometimes not a multiple
    a.do_rotary = pick({0, 0, 1});
    a.local_window_size = rng() % 8 == 0 ? pick({3, 40}) : -1;
    a.block_size = pick({32, 64, 64, 64, 48});
    const int64_t B = pick({1, 2, 3}), S = pick({1, 1, 5, 17, 70}), D = pick({8, 16, 16, 24, 12});
    const int64_t P = pick({0, 0, 10, 100, 300});
    const bool packed = pick({0, 0, 1}) == 1;
    AttentionInputs in;
    const int64_t qh = packed ? a.num_heads + 2 * a.kv_num_heads : a.num_heads;
    in.query = {true, {B, S, qh * D + (rng() % 10 == 0 ? 8 : 0)}};
    if (!packed) {
      in.key = {true, {B, S, a.kv_num_heads * D}};
      in.value = {rng() % 10 != 0, {B, S, a.kv_num_heads * D}};
    }
    if (P > 0) in.past_key = in.past_value = {true, {B, a.kv_num_heads, P, D + (rng() % 10 == 0 ? 8 : 0)}};
    std::vector<int32_t> seqlens(static_cast<size_t>(B));
    const int64_t total = P + S;
    for (auto& s : seqlens)
      s = static_cast<int32_t>(std::max<int64_t>(0, total - 1 - static_cast<int64_t>(rng() % 3)) +
                               (rng() % 10 == 0 ? 5 : 0));
    in.seqlens_k = {true, {B}};
    in.seqlens_k_data = seqlens.data();
    in.total_sequence_length = {true, {}};
    in.total_sequence_length_value = static_cast<int32_t>(P == 0 || rng() % 10 != 0 ? total : S);
    if (a.do_rotary && rng() % 10 != 0) in.cos_cache = in.sin_cache = {true, {total + 4, D / 2}};
    in.attention_mode = {true, {}};
    in.attention_mode_value = static_cast<int32_t>(rng() % 20 == 0 ? 3 : pick({0, 1, 2, 2}));
    AttentionParams p;
    std::string err = CheckAttributes(a);
    if (err.empty()) err = CheckInputs(a, in, &p);
    if (!err.empty()) {
      EXPECT_GT(err.size(), 10u);
      ++refused;
      continue;
    }
    // Valid: run the kernel on buffers of exactly the checked sizes.
    std::vector<float> q(static_cast<size_t>(B * S * (packed ? qh : a.num_heads) * D), 0.5f);
    std::vector<float> k(static_cast<size_t>(B * S * a.kv_num_heads * D), 0.25f), v(k.size(), 1.0f);
    std::vector<float> pk(static_cast<size_t>(B * a.kv_num_heads * std::max<int64_t>(P, 1) * D), 0.1f),
        pv(pk.size(), 0.2f);
    std::vector<float> cs(static_cast<size_t>((total + 4) * (D / 2)), 1.0f), sn(cs.size(), 0.0f);
    std::vector<float> out(static_cast<size_t>(B * S * a.num_heads * D));
    std::vector<float> presk(static_cast<size_t>(B * a.kv_num_heads * p.present_capacity * D)), presv(presk.size());
    std::vector<float> comp(
        static_cast<size_t>(B * a.kv_num_heads * std::max<int64_t>(p.present_compressed_capacity, 1) * D));
    std::vector<int32_t> sel(static_cast<size_t>(B * a.kv_num_heads * S * p.budget));
    AttentionData<float> d;
    d.query = q.data();
    if (!packed) {
      d.key = k.data();
      d.value = v.data();
    }
    if (P > 0) {
      d.past_key = pk.data();
      d.past_value = pv.data();
    }
    d.seqlens_k = seqlens.data();
    if (in.cos_cache.present) {
      d.cos_cache = cs.data();
      d.sin_cache = sn.data();
    }
    d.output = out.data();
    d.present_key = presk.data();
    d.present_value = presv.data();
    d.present_compressed_key = comp.data();
    d.selected_blocks = sel.data();
    err = cpu::RunAttention<float>(a, p, d, ThreadedFor);
    if (err.empty()) {
      ++ran;
      for (float x : out) ASSERT_TRUE(std::isfinite(x));
    } else {
      ++refused;  // e.g. local window in sparse mode
    }
  }
  std::printf("[random inputs] %d ran, %d refused with a message\n", ran, refused);
  EXPECT_GT(ran, 20);
  EXPECT_GT(refused, 20);
}

}  // namespace
}  // namespace infllmv2::testing
