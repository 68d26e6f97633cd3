// Shared helpers of the native tests: random cases, running the CPU kernel and the reference.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/check_inputs.h"
#include "cpu/attention_cpu.h"
#include "reference_attention.h"

namespace infllmv2::testing {

struct Case {
  int64_t batch = 1, seq_len = 1, past_capacity = 0, num_heads = 4, kv_num_heads = 2, head_size = 64;
  std::vector<int32_t> totals;      // per batch entry: past + new tokens
  int64_t total_sequence_length = 0;  // 0: max(totals), or S in a first prompt
  bool packed = false, rotary = false, interleaved = false, compressed_state_in = false;
  int32_t mode = 0;
  AttentionAttributes attrs;
  uint32_t seed = 1;
};

struct Tensors {
  std::vector<float> query, key, value, past_key, past_value, cos_cache, sin_cache, past_compressed_key;
  std::vector<int32_t> seqlens_k;
};

// Small budget so that selection is exercised at short lengths: K = 4 + 128/64 = 6 blocks.
inline AttentionAttributes SmallBudget() {
  AttentionAttributes a;
  a.window_size = 128;
  a.topk = 4;
  return a;
}

inline void ThreadedFor(size_t total, const std::function<void(size_t)>& fn) {
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next++) < total;) fn(i);
  };
  std::thread t(worker);
  worker();
  t.join();
}

inline std::vector<float> Random(std::mt19937& rng, size_t n, float scale = 1.0f) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

inline void Complete(Case& c) {
  c.attrs.num_heads = c.num_heads;
  c.attrs.kv_num_heads = c.kv_num_heads;
  c.attrs.do_rotary = c.rotary;
  c.attrs.rotary_interleaved = c.interleaved;
  if (c.totals.empty()) c.totals.assign(c.batch, static_cast<int32_t>(c.past_capacity + c.seq_len));
  if (c.total_sequence_length == 0) {
    int64_t mx = 0;
    for (auto t : c.totals) mx = std::max<int64_t>(mx, t);
    c.total_sequence_length = mx;
  }
}

inline Tensors MakeTensors(Case& c) {
  Complete(c);
  std::mt19937 rng(c.seed);
  Tensors t;
  const int64_t D = c.head_size, qw = (c.packed ? c.num_heads + 2 * c.kv_num_heads : c.num_heads) * D;
  t.query = Random(rng, c.batch * c.seq_len * qw);
  if (!c.packed) {
    t.key = Random(rng, c.batch * c.seq_len * c.kv_num_heads * D);
    t.value = Random(rng, c.batch * c.seq_len * c.kv_num_heads * D);
  }
  if (c.past_capacity > 0) {
    t.past_key = Random(rng, c.batch * c.kv_num_heads * c.past_capacity * D);
    t.past_value = Random(rng, c.batch * c.kv_num_heads * c.past_capacity * D);
  }
  if (c.rotary) {
    const int64_t half = D / 2, rows = c.total_sequence_length + c.past_capacity + 4;
    for (int64_t p = 0; p < rows; ++p)
      for (int64_t i = 0; i < half; ++i) {
        const double th = p / std::pow(10000.0, 2.0 * i / D);
        t.cos_cache.push_back(static_cast<float>(std::cos(th)));
        t.sin_cache.push_back(static_cast<float>(std::sin(th)));
      }
  }
  for (auto tot : c.totals) t.seqlens_k.push_back(tot - 1);
  return t;
}

inline AttentionInputs ShapesOf(const Case& c, const Tensors& t) {
  AttentionInputs in;
  const int64_t D = c.head_size, qw = (c.packed ? c.num_heads + 2 * c.kv_num_heads : c.num_heads) * D;
  in.query = {true, {c.batch, c.seq_len, qw}};
  if (!c.packed) {
    in.key = {true, {c.batch, c.seq_len, c.kv_num_heads * D}};
    in.value = in.key;
  }
  if (c.past_capacity > 0) {
    in.past_key = {true, {c.batch, c.kv_num_heads, c.past_capacity, D}};
    in.past_value = in.past_key;
  }
  in.seqlens_k = {true, {c.batch}};
  in.seqlens_k_data = t.seqlens_k.data();
  in.total_sequence_length = {true, {}};
  in.total_sequence_length_value = static_cast<int32_t>(c.total_sequence_length);
  if (c.rotary) {
    in.cos_cache = {true, {static_cast<int64_t>(t.cos_cache.size()) / (D / 2), D / 2}};
    in.sin_cache = in.cos_cache;
  }
  if (!t.past_compressed_key.empty()) {
    in.past_compressed_key = {true, {c.batch, c.kv_num_heads,
                                     static_cast<int64_t>(t.past_compressed_key.size()) / (c.batch * c.kv_num_heads * D), D}};
  }
  in.attention_mode = {true, {}};
  in.attention_mode_value = c.mode;
  return in;
}

template <typename T>
struct KernelOutputs {
  std::vector<T> output, present_key, present_value, present_compressed_key;
  std::vector<int32_t> selected_blocks;
  AttentionParams params;
  std::string error;
};

// Runs the CPU kernel. fp16: inputs rounded to half first.
template <typename T>
KernelOutputs<T> RunKernel(Case c, const Tensors& t, bool threaded = true, bool share_buffers = false) {
  Complete(c);
  KernelOutputs<T> r;
  const AttentionInputs in = ShapesOf(c, t);
  r.error = CheckAttributes(c.attrs);
  if (r.error.empty()) r.error = CheckInputs(c.attrs, in, &r.params);
  if (!r.error.empty()) return r;
  auto conv = [](const std::vector<float>& v) {
    std::vector<T> o(v.size());
    for (size_t i = 0; i < v.size(); ++i) o[i] = FromFloat<T>(v[i]);
    return o;
  };
  auto q = conv(t.query), k = conv(t.key), v = conv(t.value), pk = conv(t.past_key), pv = conv(t.past_value),
       cs = conv(t.cos_cache), sn = conv(t.sin_cache), pc = conv(t.past_compressed_key);
  const auto& p = r.params;
  r.output.resize(p.batch * p.seq_len * p.num_heads * p.head_size);
  r.present_key.resize(p.batch * p.kv_num_heads * p.present_capacity * p.head_size);
  r.present_value.resize(r.present_key.size());
  r.present_compressed_key.resize(p.batch * p.kv_num_heads * p.present_compressed_capacity * p.head_size);
  r.selected_blocks.resize(p.batch * p.kv_num_heads * p.seq_len * p.budget);
  AttentionData<T> d;
  auto ptr = [](const std::vector<T>& x) { return x.empty() ? nullptr : x.data(); };
  d.query = q.data();
  d.key = ptr(k);
  d.value = ptr(v);
  d.past_key = ptr(pk);
  d.past_value = ptr(pv);
  d.seqlens_k = t.seqlens_k.data();
  d.cos_cache = ptr(cs);
  d.sin_cache = ptr(sn);
  d.past_compressed_key = ptr(pc);
  d.output = r.output.data();
  d.present_key = r.present_key.data();
  d.present_value = r.present_value.data();
  d.present_compressed_key = r.present_compressed_key.empty() ? nullptr : r.present_compressed_key.data();
  d.selected_blocks = r.selected_blocks.data();
  if (share_buffers) {  // past and present are one buffer (needs past capacity == present capacity)
    r.present_key = pk;
    r.present_value = pv;
    d.past_key = d.present_key = r.present_key.data();
    d.past_value = d.present_value = r.present_value.data();
  }
  r.error = cpu::RunAttention<T>(c.attrs, p, d, threaded ? cpu::ParallelFor(ThreadedFor) : cpu::ParallelFor(cpu::SerialFor));
  return r;
}

// Runs the reference on the same (fp32, or fp16-rounded) inputs.
template <typename T>
reference::Outputs RunReference(const Case& c, const Tensors& t, const AttentionParams& params) {
  auto conv = [](const std::vector<float>& v) {
    std::vector<double> o(v.size());
    for (size_t i = 0; i < v.size(); ++i) o[i] = ToFloat(FromFloat<T>(v[i]));
    return o;
  };
  reference::Inputs in{conv(t.query), conv(t.key), conv(t.value), conv(t.past_key), conv(t.past_value),
                       conv(t.cos_cache), conv(t.sin_cache), conv(t.past_compressed_key), t.seqlens_k,
                       [](double x) { return double{ToFloat(FromFloat<T>(static_cast<float>(x)))}; }};
  return reference::Run(c.attrs, params, in);
}

template <typename T>
double MaxAbsDiff(const std::vector<T>& a, const std::vector<double>& b) {
  double m = a.size() == b.size() ? 0.0 : 1e300;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(double{ToFloat(a[i])} - b[i]));
  return m;
}

inline std::string Describe(const Case& c) {
  return "B=" + std::to_string(c.batch) + " S=" + std::to_string(c.seq_len) + " P=" + std::to_string(c.past_capacity) +
         " H=" + std::to_string(c.num_heads) + " Hkv=" + std::to_string(c.kv_num_heads) + " D=" +
         std::to_string(c.head_size) + " mode=" + std::to_string(c.mode) + (c.packed ? " packed" : "") +
         (c.rotary ? " rotary" : "") + " seed=" + std::to_string(c.seed);
}

}  // namespace infllmv2::testing
