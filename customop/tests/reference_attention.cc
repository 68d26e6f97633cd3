#include "reference_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace infllmv2::reference {
namespace {

double Dot(const double* a, const double* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// docs/op-spec.md, sparse step 1: complete windows of `kernel` tokens at `stride` in `length`.
int64_t Windows(int64_t length, int64_t kernel, int64_t stride) {
  return length < kernel ? 0 : (length - kernel) / stride + 1;
}

// docs/op-spec.md, "Mode": 1 dense, 2 sparse, 0 auto = sparse iff dense_len == -1 or total >= dense_len.
bool SparseMode(int32_t mode, int64_t dense_len, int64_t total) {
  if (mode == 1) return false;
  if (mode == 2) return true;
  return dense_len == -1 || total >= dense_len;
}

void Rotate(std::vector<double>& x, const Inputs& in, bool interleaved, int64_t pos) {
  const int64_t half = in.rotary_half;
  for (int64_t i = 0; i < half; ++i) {
    const int64_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
    const double c = in.cos_cache[pos * half + i], s = in.sin_cache[pos * half + i];
    const double x0 = x[a], x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x1 * c + x0 * s;
  }
}

}  // namespace

double RoundToBf16(double x) {
  if (!std::isfinite(x) || x == 0.0) return x;
  // bfloat16: 8 significant bits, exponents down to -126, subnormals spaced 2^-133.
  int e;
  std::frexp(x, &e);                                         // |x| in [2^(e-1), 2^e)
  const int quantum = std::max(e - 8, -133);                 // exponent of the last kept bit
  const double r = std::nearbyint(std::ldexp(x, -quantum));  // ties to even (default rounding mode)
  const double y = std::ldexp(r, quantum);
  return std::abs(y) >= 0x1p128 ? std::copysign(std::numeric_limits<double>::infinity(), x) : y;
}

Outputs Run(const AttentionAttributes& a, const Inputs& in, const Options& opt) {
  // Sizes, from the shapes and the attributes (docs/op-spec.md "Inputs", "Outputs", "Attributes").
  const int64_t B = in.batch, S = in.seq_len, H = a.num_heads, Hkv = a.kv_num_heads, G = H / Hkv;
  const bool packed = in.key.empty();
  const int64_t qheads = packed ? H + 2 * Hkv : H;
  const int64_t D = in.query_hidden / qheads;
  const int64_t l1 = a.compress_kernel, s1 = a.compress_stride, Bk = a.block_size;
  const int64_t P = in.past_key.empty() ? 0 : in.past_len;
  const int64_t C = in.past_compressed_key.empty() ? 0 : in.past_compressed_len;
  const int64_t cap = std::max(in.total_sequence_length, P);
  const int64_t ccap = std::max(C, Windows(in.total_sequence_length, l1, s1));
  const int64_t local_blocks = a.window_size / Bk;  // L
  const int64_t K = opt.old_scheme ? opt.old_topk + opt.old_window_blocks : a.topk + local_blocks;
  const bool first_prompt = S == in.total_sequence_length;
  const double scale = a.scale == 0.0f ? 1.0 / std::sqrt(static_cast<double>(D)) : double{a.scale};
  Outputs out;
  out.output.assign(B * S * H * D, 0.0);
  out.present_key.assign(B * Hkv * cap * D, 0.0);
  out.present_value.assign(B * Hkv * cap * D, 0.0);
  out.present_compressed_key.assign(B * Hkv * ccap * D, 0.0);
  out.selected_blocks.assign(B * Hkv * S * K, -1);
  out.sparse.assign(B, 0);

  for (int64_t b = 0; b < B; ++b) {
    const int64_t total = int64_t{in.seqlens_k[b]} + 1;
    const int64_t past = first_prompt ? 0 : total - S;
    auto qin = [&](int64_t s, int64_t n) { return in.query.data() + (((b * S + s) * qheads + n) * D); };
    auto rot_pos = [&](int64_t s) { return past + s < total ? past + s : int64_t{1}; };
    // Present K/V.
    for (int64_t h = 0; h < Hkv; ++h) {
      double* pk = out.present_key.data() + ((b * Hkv + h) * cap * D);
      double* pv = out.present_value.data() + ((b * Hkv + h) * cap * D);
      for (int64_t t = 0; t < past; ++t)
        for (int64_t i = 0; i < D; ++i) {
          pk[t * D + i] = in.past_key[((b * Hkv + h) * P + t) * D + i];
          pv[t * D + i] = in.past_value[((b * Hkv + h) * P + t) * D + i];
        }
      for (int64_t s = 0; s < S; ++s) {
        const double* k = packed ? qin(s, H + h) : in.key.data() + (((b * S + s) * Hkv + h) * D);
        const double* v = packed ? qin(s, H + Hkv + h) : in.value.data() + (((b * S + s) * Hkv + h) * D);
        std::vector<double> kr(k, k + D);
        if (a.do_rotary) {
          Rotate(kr, in, a.rotary_interleaved != 0, rot_pos(s));
          for (auto& x : kr) x = in.store(x);
        }
        std::copy(kr.begin(), kr.end(), pk + (past + s) * D);
        std::copy(v, v + D, pv + (past + s) * D);
      }
      // Level-1 compressed keys: copied from the past state when given, else recomputed.
      double* pc = out.present_compressed_key.data() + ((b * Hkv + h) * ccap * D);
      const int64_t n_total = Windows(total, l1, s1);
      const int64_t n_past = (!in.past_compressed_key.empty() && !first_prompt) ? Windows(past, l1, s1) : 0;
      for (int64_t j = 0; j < n_total; ++j)
        for (int64_t i = 0; i < D; ++i) {
          if (j < n_past) {
            pc[j * D + i] = in.past_compressed_key[((b * Hkv + h) * C + j) * D + i];
          } else {
            double sum = 0;
            for (int64_t t = j * s1; t < j * s1 + l1; ++t) sum += pk[t * D + i];
            pc[j * D + i] = in.store(sum / static_cast<double>(l1));
          }
        }
    }
    const bool sparse = SparseMode(in.attention_mode, a.dense_len, total);
    out.sparse[b] = sparse;
    for (int64_t s = 0; s < S; ++s) {
      const int64_t pos = past + s;
      if (pos >= total) continue;
      for (int64_t h = 0; h < Hkv; ++h) {
        const double* pk = out.present_key.data() + ((b * Hkv + h) * cap * D);
        const double* pv = out.present_value.data() + ((b * Hkv + h) * cap * D);
        const double* pc = out.present_compressed_key.data() + ((b * Hkv + h) * ccap * D);
        std::vector<std::vector<double>> q(G);
        for (int64_t g = 0; g < G; ++g) {
          q[g].assign(qin(s, h * G + g), qin(s, h * G + g) + D);
          if (a.do_rotary) {
            Rotate(q[g], in, a.rotary_interleaved != 0, rot_pos(s));
            for (auto& x : q[g]) x = in.store(x);
          }
        }
        // Which keys this token sees.
        std::vector<char> visible(total, 0);
        const int64_t qb = pos / Bk;
        if (!sparse) {
          const int64_t lo = a.local_window_size > 0 ? std::max<int64_t>(0, pos - a.local_window_size + 1)
                                                     : 0;  // ORT 1.29 GQA: the last local_window_size keys
          for (int64_t i = lo; i <= pos; ++i) visible[i] = 1;
        } else {
          std::vector<int64_t> chosen;
          // Stage 1 (docs/op-spec.md sparse step 4): per head exp(score - lse) over the visible
          // level-1 keys, summed over the group; lse over the visible level-2 keys (lse_approx),
          // else (or when none is visible) over the visible level-1 keys.
          auto group_scores = [&](bool exact) {
            const int64_t n1 = Windows(total, l1, s1);
            const int64_t n2 = Windows(total, 4 * l1, 4 * s1);
            // Options: CPM.cu's decode leaves out windows ending at pos; the official mask's quirk
            // hides the most recent level-2 key of every row of a first prompt of length = s2 - 1 mod s2.
            const bool skip_current = opt.cpmcu_decode_skips_current_window && S == 1 && !first_prompt;
            auto vis = [&](int64_t j, int64_t kernel, int64_t stride) {
              const int64_t end = j * stride + kernel - 1;
              return skip_current ? end < pos : end <= pos;
            };
            int64_t vis2 = 0;
            while (vis2 < n2 && vis(vis2, 4 * l1, 4 * s1)) ++vis2;
            if (opt.level2_mask_quirk && first_prompt && total % (4 * s1) == 4 * s1 - 1 && vis2 > 0) --vis2;
            std::vector<double> k2(n2 * D, 0.0);
            for (int64_t j = 0; j < n2; ++j)
              for (int64_t m = 0; m < 4; ++m)
                for (int64_t i = 0; i < D; ++i) k2[j * D + i] += pc[(4 * j + m * (l1 / s1)) * D + i] / 4.0;
            int64_t vis1 = 0;
            while (vis1 < n1 && vis(vis1, l1, s1)) ++vis1;
            std::vector<double> shared(vis1, 0.0);  // one score per visible level-1 window
            for (int64_t g = 0; g < G; ++g) {
              std::vector<double> sc;
              for (int64_t j = 0; j < vis1; ++j) sc.push_back(Dot(q[g].data(), pc + j * D, D) * scale);
              std::vector<double> norm;
              if (!exact)
                for (int64_t j = 0; j < vis2; ++j) norm.push_back(Dot(q[g].data(), k2.data() + j * D, D) * scale);
              if (norm.empty()) norm = sc;
              if (norm.empty()) continue;
              const double mx = *std::max_element(norm.begin(), norm.end());
              double sum = 0;
              for (double x : norm) sum += std::exp(x - mx);
              const double lse = mx + std::log(sum);
              for (size_t j = 0; j < sc.size(); ++j) shared[j] += std::exp(sc[j] - lse);
            }
            // score_precision 1: the group sums rounded to bf16 (nearest even) before pooling.
            if (a.score_precision == 1)
              for (double& x : shared) x = RoundToBf16(x);
            return shared;
          };
          // Block score: max over the visible windows intersecting the block (sparse step 5).
          auto pooled = [&](const std::vector<double>& shared, int64_t blk) {
            double best = -std::numeric_limits<double>::infinity();
            for (int64_t j = 0; j < static_cast<int64_t>(shared.size()); ++j)
              if (j * s1 <= blk * Bk + Bk - 1 && j * s1 + l1 - 1 >= blk * Bk) best = std::max(best, shared[j]);
            return best;
          };
          auto by_score = [](auto x, auto y) {
            return x.first > y.first || (x.first == y.first && x.second < y.second);
          };
          if (opt.old_scheme) {
            // MiniCPM4 (June 2025) / CPM.cu: no shortcut; every block of the sequence is ranked.
            const double inf = std::numeric_limits<double>::infinity();
            const int64_t W = opt.old_window_blocks;
            const std::vector<double> shared = group_scores(/*exact=*/true);
            std::vector<std::pair<double, int64_t>> ranked;
            for (int64_t blk = 0; blk < (total + Bk - 1) / Bk; ++blk) {
              double score;
              if (blk < a.init_blocks)
                score = inf;
              else if (blk > qb - W)
                score = -inf;  // the block window and the future
              else
                score = pooled(shared, blk);
              ranked.push_back({score, blk});
            }
            std::sort(ranked.begin(), ranked.end(), by_score);
            std::vector<char> in_row(qb + 1, 0);
            for (int64_t i = 0; i < opt.old_topk && i < static_cast<int64_t>(ranked.size()); ++i)
              if (ranked[i].second <= qb) in_row[ranked[i].second] = 1;  // later blocks dropped
            for (int64_t blk = std::max<int64_t>(0, qb - W + 1); blk <= qb; ++blk) in_row[blk] = 1;
            for (int64_t blk = 0; blk <= qb; ++blk)
              if (in_row[blk]) chosen.push_back(blk);
          } else if (qb + 1 <= K) {
            for (int64_t blk = 0; blk <= qb; ++blk) chosen.push_back(blk);
          } else {
            const std::vector<double> shared = group_scores(/*exact=*/a.lse_approx == 0);
            // Init and local blocks forced, the rest by block score (ties: lower index).
            std::vector<std::pair<double, int64_t>> cand;
            for (int64_t blk = 0; blk <= qb; ++blk) {
              const bool forced = blk < a.init_blocks || blk >= qb - local_blocks;
              if (forced) {
                chosen.push_back(blk);
                continue;
              }
              cand.push_back({pooled(shared, blk), blk});
            }
            std::sort(cand.begin(), cand.end(), by_score);
            const int64_t take = K - static_cast<int64_t>(chosen.size());
            for (int64_t i = 0; i < take && i < static_cast<int64_t>(cand.size()); ++i)
              chosen.push_back(cand[i].second);
            std::sort(chosen.begin(), chosen.end());
          }
          int32_t* sel = out.selected_blocks.data() + (((b * Hkv + h) * S + s) * K);
          for (size_t i = 0; i < chosen.size(); ++i) sel[i] = static_cast<int32_t>(chosen[i]);
          for (int64_t blk : chosen)
            for (int64_t i = blk * Bk; i < std::min((blk + 1) * Bk, pos + 1); ++i) visible[i] = 1;
        }
        if (opt.selection_only) continue;
        // Softmax attention over the visible keys.
        for (int64_t g = 0; g < G; ++g) {
          std::vector<double> sc(total, -std::numeric_limits<double>::infinity());
          double mx = -std::numeric_limits<double>::infinity();
          for (int64_t i = 0; i < total; ++i) {
            if (!visible[i]) continue;
            double x = Dot(q[g].data(), pk + i * D, D) * scale;
            if (a.softcap > 0) x = a.softcap * std::tanh(x / a.softcap);
            sc[i] = x;
            mx = std::max(mx, x);
          }
          double sum = 0;
          std::vector<double> o(D, 0.0);
          for (int64_t i = 0; i < total; ++i) {
            if (!visible[i]) continue;
            const double e = std::exp(sc[i] - mx);
            sum += e;
            for (int64_t k = 0; k < D; ++k) o[k] += e * pv[i * D + k];
          }
          double* dst = out.output.data() + (((b * S + s) * H + h * G + g) * D);
          for (int64_t k = 0; k < D; ++k) dst[k] = o[k] / sum;
        }
      }
    }
  }
  return out;
}

}  // namespace infllmv2::reference
