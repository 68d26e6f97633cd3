// Synthetic retrieval at 16k/32k/64k (default geometry: 64-token blocks, l1 = 32, s1 = 16, 2048
// local tokens, 1 init block): keys with realistic structure (clusters of distractors) and planted
// needles that the query aligns with. Every trial is built so that dense attention puts most of its
// mass on the needle (asserted: every trial qualifies), and the blocks holding the needle must be
// selected by the sparse kernel. The budget is small (1 or 2 dynamic slots), and four kinds of
// trial each hinge on one selection rule of docs/op-spec.md:
//   plain     one needle block: it must win the dynamic slot;
//   duplicate the needle and its surroundings copied later in the context: the two blocks tie
//             exactly and the one slot goes to the earlier copy (ties -> lower block index);
//   straddle  a 32-token needle across a block boundary (tokens 64n-16 .. 64n+15) and a weaker
//             decoy: both needle blocks must be selected, which holds only if block n is scored
//             through window 4n-1 (pooling over 4b-1 .. 4b+3);
//   init      a single strong token in block 0 (diluted 32x in its compressed window) and two
//             decoys: block 0 must be selected because init blocks are forced.
#include <gtest/gtest.h>

#include <cstdio>

#include "test_support.h"

namespace infllmv2::testing {
namespace {

enum class Kind { kPlain, kDuplicate, kStraddle, kInit };
const char* const kKindNames[] = {"plain", "duplicate", "straddle", "init"};

struct RetrievalResult {
  int trials = 0, dense_hits = 0, sparse_hits = 0;
  std::string violations, unsolved;
};

void RunTrial(int64_t context, Kind kind, uint32_t seed, RetrievalResult& res) {
  const int64_t H = 16, Hkv = 1, D = 64, Bk = 64;
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  Case c;
  c.seq_len = 1;
  c.past_capacity = context - 1;
  c.num_heads = H;
  c.kv_num_heads = Hkv;
  c.head_size = D;
  c.mode = 2;
  c.seed = seed;
  // K = topk + 32 local; forced = 1 init + 33 local: topk 3 leaves 1 dynamic slot, topk 4 two.
  c.attrs.topk = kind == Kind::kStraddle ? 4 : 3;
  Tensors t = MakeTensors(c);
  // Distractor clusters: 32 centroids, every key = centroid + noise (topic-like structure).
  std::vector<std::vector<float>> centroids(32, std::vector<float>(D));
  for (auto& cen : centroids)
    for (auto& x : cen) x = n01(rng);
  std::uniform_int_distribution<int> pick(0, 31);
  for (int64_t tok = 0; tok < context - 1; ++tok) {
    const auto& cen = centroids[pick(rng)];
    for (int64_t i = 0; i < D; ++i) t.past_key[tok * D + i] = 0.6f * cen[i] + 0.8f * n01(rng);
  }
  std::vector<float> dir(D);
  for (auto& x : dir) x = n01(rng);
  auto plant = [&](int64_t from, int64_t to, float strength) {
    for (int64_t tok = from; tok < to; ++tok)
      for (int64_t i = 0; i < D; ++i) t.past_key[tok * D + i] = 0.6f * t.past_key[tok * D + i] + strength * dir[i];
  };
  // Needle blocks far from the local window (the last 33 blocks).
  const int64_t n_blocks = (context - 1) / Bk;
  std::uniform_int_distribution<int64_t> where(2, n_blocks - 50);
  const int64_t n = where(rng);
  int64_t needle_lo = 0, needle_hi = 0, copy_lo = -1;  // needle tokens [lo, hi) (and the copy's)
  std::vector<int64_t> must;                           // blocks that must be selected
  switch (kind) {
    case Kind::kPlain:
      needle_lo = n * Bk, needle_hi = needle_lo + Bk;
      plant(needle_lo, needle_hi, 1.5f);
      must = {n};
      break;
    case Kind::kDuplicate: {
      needle_lo = n * Bk, needle_hi = needle_lo + Bk;
      plant(needle_lo, needle_hi, 1.5f);
      // Copy tokens [64n - 16, 64n + 80): every window that meets block n (4n-1 .. 4n+3) is
      // repeated for block m, so both blocks score exactly the same.
      const int64_t m = n + 3 + static_cast<int64_t>(rng() % 8);
      for (int64_t tok = -16; tok < Bk + 16; ++tok)
        for (int64_t i = 0; i < D; ++i) t.past_key[(m * Bk + tok) * D + i] = t.past_key[(n * Bk + tok) * D + i];
      copy_lo = m * Bk;
      must = {n};
      break;
    }
    case Kind::kStraddle: {
      needle_lo = n * Bk - 16, needle_hi = n * Bk + 16;
      plant(needle_lo, needle_hi, 1.5f);
      const int64_t d = n + 3 + static_cast<int64_t>(rng() % 8);  // decoy, 3/4 as strong, inside block d
      plant(d * Bk + 16, d * Bk + 48, 1.125f);
      must = {n - 1, n};
      break;
    }
    case Kind::kInit:
      needle_lo = 5, needle_hi = 6;
      plant(needle_lo, needle_hi, 3.0f);
      plant(n * Bk, n * Bk + Bk, 0.8f);  // two decoys that outscore block 0 in stage 1
      plant((n + 4) * Bk, (n + 4) * Bk + Bk, 0.8f);
      must = {0};
      break;
  }
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < D; ++i) t.query[h * D + i] = dir[i] + 0.5f * n01(rng);

  auto r = RunKernel<float>(c, t);
  if (!r.error.empty()) {
    ADD_FAILURE() << r.error;
    return;
  }
  bool selected = true;
  for (int64_t blk : must) {
    bool found = false;
    for (int64_t k = 0; k < r.params.budget; ++k) found |= r.selected_blocks[k] == blk;
    selected &= found;
  }
  // Dense attention mass on the needle tokens (and its copy), averaged over heads.
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  auto in_needle = [&](int64_t tok) {
    return (tok >= needle_lo && tok < needle_hi) || (copy_lo >= 0 && tok >= copy_lo && tok < copy_lo + Bk);
  };
  double mass = 0;
  for (int64_t h = 0; h < H; ++h) {
    std::vector<double> s(context);
    double mx = -1e300;
    for (int64_t tok = 0; tok < context; ++tok) {
      const float* k = tok < context - 1 ? &t.past_key[tok * D] : &t.key[0];
      double d = 0;
      for (int64_t i = 0; i < D; ++i) d += double(t.query[h * D + i]) * k[i];
      s[tok] = d * scale;
      mx = std::max(mx, s[tok]);
    }
    double sum = 0, on = 0;
    for (int64_t tok = 0; tok < context; ++tok) {
      const double e = std::exp(s[tok] - mx);
      sum += e;
      if (in_needle(tok)) on += e;
    }
    mass += on / sum / H;
  }
  const bool dense_finds = mass > 0.5;
  ++res.trials;
  res.dense_hits += dense_finds;
  res.sparse_hits += dense_finds && selected;
  if (!dense_finds) {
    res.unsolved += std::string(" ") + kKindNames[static_cast<int>(kind)] + "(seed " + std::to_string(seed) +
                    ", mass " + std::to_string(mass) + ")";
  }
  if (dense_finds && !selected) {
    res.violations += std::string(" ") + kKindNames[static_cast<int>(kind)] + "(seed " + std::to_string(seed) + ")";
  }
}

TEST(Retrieval, NeedleSelectedWheneverDenseAttentionFindsIt) {
  for (int64_t context : {16384, 32768, 65536}) {
    RetrievalResult r;
    const int per_kind = context > 32768 ? 1 : 2;
    for (int i = 0; i < per_kind; ++i)
      for (Kind kind : {Kind::kPlain, Kind::kDuplicate, Kind::kStraddle, Kind::kInit})
        RunTrial(context, kind, 1000 + static_cast<uint32_t>(context) + 10 * i + static_cast<uint32_t>(kind), r);
    std::printf(
        "[retrieval] context %6lld: dense puts >50%% mass on the needle in %d/%d trials; sparse selects it in %d of "
        "those (recall %.0f%%)\n",
        static_cast<long long>(context), r.dense_hits, r.trials, r.sparse_hits,
        r.dense_hits ? 100.0 * r.sparse_hits / r.dense_hits : 100.0);
    EXPECT_EQ(r.trials, 4 * per_kind);
    EXPECT_EQ(r.dense_hits, r.trials) << "every trial must be solvable by dense attention; not:" << r.unsolved;
    EXPECT_EQ(r.violations, "") << "context " << context << ": needle not selected in";
  }
}

}  // namespace
}  // namespace infllmv2::testing
