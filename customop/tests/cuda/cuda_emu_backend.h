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
                            bool want_compressed = true, int kv_splits = 0, const int32_t* device_seqlens = nullptr,
                            size_t* scratch_requests = nullptr) {
  KernelOutputs<T> r;
  PreparedCall<T> call;
  // Outputs start as garbage (0x7e7e: a NaN-ish pattern in both types) so unwritten elements show.
  if (!PrepareCall<T>(c, t, share_buffers, T{0x7e7e}, -7, r, call)) return r;
  AttentionData<T>& d = call.data;
  if (!want_compressed) d.present_compressed_key = nullptr;
  if (!want_selection) d.selected_blocks = nullptr;
  // seqlens_k as the device sees them, unchecked (the input check above saw t.seqlens_k).
  if (device_seqlens != nullptr) d.seqlens_k = device_seqlens;
  std::vector<std::unique_ptr<char[]>> scratch;
  auto alloc = [&](size_t bytes) -> void* {
    if (scratch_requests != nullptr) ++*scratch_requests;
    scratch.emplace_back(new char[bytes]);
    std::memset(scratch.back().get(), 0x7e, bytes);
    return scratch.back().get();
  };
  cuda::RunOptions options;
  options.kv_splits = kv_splits;  // 0: the kernel's own choice; n: the split-KV path with n splits
  r.error = cuda::RunAttention<T>(c.attrs, r.params, d, alloc, nullptr, options);
  return r;
}

}  // namespace infllmv2::testing
