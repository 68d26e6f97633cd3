// The CUDA kernel run on the host emulation as a test backend: the same Case/Tensors as the CPU
// kernel's RunKernel (test_support.h), 16-bit I/O (Float16, BFloat16), plain host buffers as
// "device" memory.
#pragma once

#include <memory>
#include <vector>

#include "cuda/attention_cuda.h"
#include "test_support.h"

namespace infllmv2::testing {

template <typename T>
KernelOutputs<T> RunCudaEmu(Case c, const Tensors& t, bool share_buffers = false, bool want_selection = true,
                            bool want_compressed = true) {
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
  // Outputs start as garbage (0x7e7e: a NaN-ish pattern in both types) so unwritten elements show.
  const T junk{0x7e7e};
  r.output.assign(p.batch * p.seq_len * p.num_heads * p.head_size, junk);
  r.present_key.assign(p.batch * p.kv_num_heads * p.present_capacity * p.head_size, junk);
  r.present_value.assign(r.present_key.size(), junk);
  r.present_compressed_key.assign(p.batch * p.kv_num_heads * p.present_compressed_capacity * p.head_size, junk);
  r.selected_blocks.assign(p.batch * p.kv_num_heads * p.seq_len * p.budget, -7);
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
  d.present_compressed_key = want_compressed && !r.present_compressed_key.empty() ? r.present_compressed_key.data() : nullptr;
  d.selected_blocks = want_selection ? r.selected_blocks.data() : nullptr;
  if (share_buffers) {
    r.present_key = pk;
    r.present_value = pv;
    d.past_key = d.present_key = r.present_key.data();
    d.past_value = d.present_value = r.present_value.data();
  }
  std::vector<std::unique_ptr<char[]>> scratch;
  auto alloc = [&](size_t bytes) -> void* {
    scratch.emplace_back(new char[bytes]);
    std::memset(scratch.back().get(), 0x7e, bytes);
    return scratch.back().get();
  };
  r.error = cuda::RunAttention<T>(c.attrs, p, d, alloc, nullptr);
  return r;
}

}  // namespace infllmv2::testing
