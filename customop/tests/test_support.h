// Shared helpers of the native tests: random cases, running a backend (CPU kernel, emulated CUDA) and
// the reference, and comparing them through the backend seam (Backend, Backends()).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "common/check_inputs.h"
#include "cpu/attention_cpu.h"
#include "reference_attention.h"

namespace infllmv2::testing {

struct Case {
  int64_t batch = 1, seq_len = 1, past_capacity = 0, num_heads = 4, kv_num_heads = 2, head_size = 64;
  std::vector<int32_t> totals;        // per batch entry: past + new tokens
  int64_t total_sequence_length = 0;  // 0: max(totals), or S in a first prompt
  bool packed = false, rotary = false, interleaved = false;
  // Feed past_compressed_key (not in a first prompt): the level-1 means of the past keys as the op
  // would have stored them (kConsistent), or those plus noise (kPerturbed: shows it is read).
  enum class State { kNone, kConsistent, kPerturbed } compressed_state_in = State::kNone;
  int32_t mode = 0;
  AttentionAttributes attrs;
  uint32_t seed = 1;
  float (*round)(float) = [](float x) { return x; };  // the IO type's rounding (fp16 cases set it)
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
  if (c.compressed_state_in != Case::State::kNone && c.past_capacity > 0) {
    // Windows [j*s1, j*s1 + l1) of the past buffer, j < N1(P) (docs/op-spec.md sparse step 1), each
    // the mean of the keys rounded to the IO type (`round`, set by the caller's element type).
    const int64_t l1 = c.attrs.compress_kernel, s1 = c.attrs.compress_stride;
    const int64_t C = c.past_capacity < l1 ? 0 : (c.past_capacity - l1) / s1 + 1;
    std::uniform_real_distribution<float> noise(-1.0f, 1.0f);
    t.past_compressed_key.assign(static_cast<size_t>(c.batch * c.kv_num_heads * std::max<int64_t>(C, 1) * D), 0.0f);
    for (int64_t bh = 0; bh < c.batch * c.kv_num_heads; ++bh)
      for (int64_t j = 0; j < C; ++j)
        for (int64_t i = 0; i < D; ++i) {
          double sum = 0;
          for (int64_t tok = j * s1; tok < j * s1 + l1; ++tok)
            sum += c.round(t.past_key[(bh * c.past_capacity + tok) * D + i]);
          float v = static_cast<float>(sum / static_cast<double>(l1));
          if (c.compressed_state_in == Case::State::kPerturbed) v += noise(rng);
          t.past_compressed_key[(bh * std::max<int64_t>(C, 1) + j) * D + i] = v;
        }
  }
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
    in.past_compressed_key = {true,
                              {c.batch, c.kv_num_heads,
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

// One case's inputs converted to T (fp16/bf16: rounded first), kept alive while a backend runs on
// `data`, whose output pointers are the vectors of the KernelOutputs it was prepared with.
template <typename T>
struct PreparedCall {
  std::vector<T> q, k, v, pk, pv, cs, sn, pc;
  AttentionData<T> data;
};

// What every backend runner does first: checks the case (false, with r.error set, when refused),
// converts its inputs, sizes every output of r (filled with `fill`, selected_blocks with
// `fill_blocks`) and points call.data at all of them; with share_buffers past and present are one
// buffer (needs past capacity == present capacity).
template <typename T>
bool PrepareCall(Case& c, const Tensors& t, bool share_buffers, T fill, int32_t fill_blocks, KernelOutputs<T>& r,
                 PreparedCall<T>& call) {
  Complete(c);
  const AttentionInputs in = ShapesOf(c, t);
  r.error = CheckAttributes(c.attrs);
  if (r.error.empty()) r.error = CheckInputs(c.attrs, in, &r.params);
  if (!r.error.empty()) return false;
  auto conv = [](const std::vector<float>& v) {
    std::vector<T> o(v.size());
    for (size_t i = 0; i < v.size(); ++i) o[i] = FromFloat<T>(v[i]);
    return o;
  };
  call.q = conv(t.query), call.k = conv(t.key), call.v = conv(t.value), call.pk = conv(t.past_key);
  call.pv = conv(t.past_value), call.cs = conv(t.cos_cache), call.sn = conv(t.sin_cache);
  call.pc = conv(t.past_compressed_key);
  const auto& p = r.params;
  r.output.assign(p.batch * p.seq_len * p.num_heads * p.head_size, fill);
  r.present_key.assign(p.batch * p.kv_num_heads * p.present_capacity * p.head_size, fill);
  r.present_value.assign(r.present_key.size(), fill);
  r.present_compressed_key.assign(p.batch * p.kv_num_heads * p.present_compressed_capacity * p.head_size, fill);
  r.selected_blocks.assign(p.batch * p.kv_num_heads * p.seq_len * p.budget, fill_blocks);
  AttentionData<T>& d = call.data;
  auto ptr = [](const std::vector<T>& x) { return x.empty() ? nullptr : x.data(); };
  d.query = call.q.data();
  d.key = ptr(call.k);
  d.value = ptr(call.v);
  d.past_key = ptr(call.pk);
  d.past_value = ptr(call.pv);
  d.seqlens_k = t.seqlens_k.data();
  d.cos_cache = ptr(call.cs);
  d.sin_cache = ptr(call.sn);
  d.past_compressed_key = ptr(call.pc);
  d.output = r.output.data();
  d.present_key = r.present_key.data();
  d.present_value = r.present_value.data();
  d.present_compressed_key = r.present_compressed_key.empty() ? nullptr : r.present_compressed_key.data();
  d.selected_blocks = r.selected_blocks.data();
  if (share_buffers) {
    r.present_key = call.pk;
    r.present_value = call.pv;
    d.past_key = d.present_key = r.present_key.data();
    d.past_value = d.present_value = r.present_value.data();
  }
  return true;
}

// Runs the CPU kernel. fp16: inputs rounded to half first.
template <typename T>
KernelOutputs<T> RunKernel(Case c, const Tensors& t, bool threaded = true, bool share_buffers = false) {
  KernelOutputs<T> r;
  PreparedCall<T> call;
  if (!PrepareCall<T>(c, t, share_buffers, T{}, 0, r, call)) return r;
  r.error = cpu::RunAttention<T>(c.attrs, r.params, call.data,
                                 threaded ? cpu::ParallelFor(ThreadedFor) : cpu::ParallelFor(cpu::SerialFor));
  return r;
}

// Runs the reference on the same (fp32, or fp16-rounded) inputs. It sees only values, shapes and
// attribute values: no AttentionParams (the product's derived sizes).
template <typename T>
reference::Outputs RunReference(Case c, const Tensors& t, const reference::Options& options = {}) {
  Complete(c);
  auto conv = [](const std::vector<float>& v) {
    std::vector<double> o(v.size());
    for (size_t i = 0; i < v.size(); ++i) o[i] = ToFloat(FromFloat<T>(v[i]));
    return o;
  };
  reference::Inputs in;
  in.query = conv(t.query);
  in.key = conv(t.key);
  in.value = conv(t.value);
  in.past_key = conv(t.past_key);
  in.past_value = conv(t.past_value);
  in.cos_cache = conv(t.cos_cache);
  in.sin_cache = conv(t.sin_cache);
  in.past_compressed_key = conv(t.past_compressed_key);
  in.seqlens_k = t.seqlens_k;
  in.batch = c.batch;
  in.seq_len = c.seq_len;
  in.query_hidden = static_cast<int64_t>(t.query.size()) / (c.batch * c.seq_len);
  in.past_len = c.past_capacity;
  in.past_compressed_len = t.past_compressed_key.empty() ? 0
                                                         : static_cast<int64_t>(t.past_compressed_key.size()) /
                                                               (c.batch * c.kv_num_heads * c.head_size);
  in.rotary_half = c.rotary ? c.head_size / 2 : 0;
  in.total_sequence_length = c.total_sequence_length;
  in.attention_mode = c.mode;
  in.store = [](double x) { return double{ToFloat(FromFloat<T>(static_cast<float>(x)))}; };
  return reference::Run(c.attrs, in, options);
}

template <typename T>
double MaxAbsDiff(const std::vector<T>& a, const std::vector<double>& b) {
  double m = a.size() == b.size() ? 0.0 : 1e300;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(double{ToFloat(a[i])} - b[i]));
  return m;
}

// ---- Backend seam: the reference comparisons run on every backend in Backends(). ----
// A backend runs the op on a Case (fp32 and/or fp16 I/O) and states how close to the double
// reference it must come. The CPU kernel runs every case; the CUDA kernel on the host emulation
// (tests/cuda/cuda_emu_entry.cc) runs the fp16 cases its size filter accepts (the emulation runs
// every CUDA thread as a std::thread: small shapes only).
struct Tolerance {
  double output, present_key, present_value, present_compressed_key;
};
struct Backend {
  const char* name;
  KernelOutputs<float> (*run_fp32)(const Case&, const Tensors&);    // nullptr: no fp32 I/O
  KernelOutputs<Float16> (*run_fp16)(const Case&, const Tensors&);  // nullptr: no fp16 I/O
  Tolerance fp32, fp16;
  bool (*accepts)(const Case&) = nullptr;  // nullptr: every case; else the (completed) cases it runs
};

// tests/cuda/cuda_emu_entry.cc (linked into the native tests).
KernelOutputs<Float16> RunCudaEmuFp16(const Case& c, const Tensors& t);
bool CudaEmuAccepts(const Case& c);

inline const std::vector<Backend>& Backends() {
  static const std::vector<Backend> backends = {
      {"cpu", [](const Case& c, const Tensors& t) { return RunKernel<float>(c, t); },
       [](const Case& c, const Tensors& t) { return RunKernel<Float16>(c, t); },
       /*fp32*/ {1e-5, 1e-6, 0.0, 1e-6}, /*fp16*/ {1e-3, 1e-3, 0.0, 1e-3}},
      // docs/numerics.md (CUDA kernel): P rounded to 16 bits before P V.
      {"cuda-emu", nullptr, RunCudaEmuFp16, /*fp32*/ {}, /*fp16*/ {2e-3, 1e-3, 0.0, 1e-3}, CudaEmuAccepts},
  };
  return backends;
}

template <typename T>
KernelOutputs<T> RunBackend(const Backend& be, const Case& c, const Tensors& t) {
  if constexpr (std::is_same_v<T, float>)
    return be.run_fp32(c, t);
  else
    return be.run_fp16(c, t);
}

inline std::string Describe(const Case& c);

// Every output of every backend against the reference (T: the I/O element type). Returns the
// outputs of the first backend (the CPU kernel) for further checks.
template <typename T>
KernelOutputs<T> ExpectBackendsMatchReference(Case c, const Tensors& t) {
  Complete(c);
  const auto r = RunReference<T>(c, t);
  KernelOutputs<T> first;
  for (const Backend& be : Backends()) {
    if ((std::is_same_v<T, float> ? be.run_fp32 == nullptr : be.run_fp16 == nullptr) || (be.accepts && !be.accepts(c)))
      continue;  // a type or case this backend does not run (the CPU backend runs all)
    SCOPED_TRACE(std::string("backend ") + be.name + ", " + (std::is_same_v<T, float> ? "fp32" : "fp16") + ", " +
                 Describe(c));
    const Tolerance& tol = std::is_same_v<T, float> ? be.fp32 : be.fp16;
    auto k = RunBackend<T>(be, c, t);
    EXPECT_EQ(k.error, "");
    if (!k.error.empty()) continue;
    EXPECT_EQ(k.selected_blocks, r.selected_blocks);
    EXPECT_LE(MaxAbsDiff(k.output, r.output), tol.output);
    EXPECT_LE(MaxAbsDiff(k.present_key, r.present_key), tol.present_key);
    EXPECT_LE(MaxAbsDiff(k.present_value, r.present_value), tol.present_value);
    EXPECT_LE(MaxAbsDiff(k.present_compressed_key, r.present_compressed_key), tol.present_compressed_key);
    if (&be == &Backends().front()) first = std::move(k);
  }
  return first;
}

inline std::string Describe(const Case& c) {
  return "B=" + std::to_string(c.batch) + " S=" + std::to_string(c.seq_len) + " P=" + std::to_string(c.past_capacity) +
         " H=" + std::to_string(c.num_heads) + " Hkv=" + std::to_string(c.kv_num_heads) +
         " D=" + std::to_string(c.head_size) + " mode=" + std::to_string(c.mode) + (c.packed ? " packed" : "") +
         (c.rotary ? " rotary" : "") + " seed=" + std::to_string(c.seed);
}

}  // namespace infllmv2::testing
