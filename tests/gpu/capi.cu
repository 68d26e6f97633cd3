// A small C ABI over the op's CUDA kernels for the GPU script (run.py, ctypes + torch tensors):
// separate Q/K/V, no rotary, every output requested; past/present caches shared when the caller
// passes the same pointers (decode timings), past_compressed_key optional. The inputs are checked
// by the op's own CheckInputs (shapes only: seqlens_k stays on the device).
#include <cuda_runtime.h>

#include <cstring>
#include <string>
#include <vector>

#include "common/check_inputs.h"
#include "cuda/attention_cuda.h"

namespace {

infllmv2::InputShape Shape(std::vector<int64_t> dims) { return {true, std::move(dims)}; }

// The op's attributes and input shapes from the C ABI's attr/dim arrays (layout below), checked by
// the op's own CheckAttributes/CheckInputs; "" or the reason.
std::string Plan(const int64_t* attr, const int64_t* dim, infllmv2::AttentionAttributes* a, infllmv2::AttentionParams* p) {
  using namespace infllmv2;
  a->num_heads = dim[2];
  a->kv_num_heads = dim[3];
  a->block_size = attr[0];
  a->compress_kernel = attr[1];
  a->compress_stride = attr[2];
  a->init_blocks = attr[3];
  a->window_size = attr[4];
  a->topk = attr[5];
  a->dense_len = attr[6];
  a->lse_approx = attr[7];
  const int64_t B = dim[0], S = dim[1], H = dim[2], Hkv = dim[3], D = dim[4], P = dim[5];
  AttentionInputs in;
  in.query = Shape({B, S, H * D});
  in.key = Shape({B, S, Hkv * D});
  in.value = Shape({B, S, Hkv * D});
  if (P > 0) {
    in.past_key = Shape({B, Hkv, P, D});
    in.past_value = Shape({B, Hkv, P, D});
  }
  in.seqlens_k = Shape({B});
  in.total_sequence_length = Shape({1});
  in.total_sequence_length_value = static_cast<int32_t>(dim[6]);
  in.attention_mode = Shape({1});
  in.attention_mode_value = static_cast<int32_t>(dim[7]);
  if (dim[9] > 0) in.past_compressed_key = Shape({B, Hkv, dim[9], D});
  std::string e = CheckAttributes(*a);
  return e.empty() ? CheckInputs(*a, in, p) : e;
}

template <class T>
int Run(const int64_t* attr, const int64_t* dim, void* const* ptr, void* stream, char* err, int err_len) {
  using namespace infllmv2;
  AttentionAttributes a;
  AttentionParams p;
  std::string e = Plan(attr, dim, &a, &p);
  if (e.empty()) {
    AttentionData<T> d;
    d.query = static_cast<const T*>(ptr[0]);
    d.key = static_cast<const T*>(ptr[1]);
    d.value = static_cast<const T*>(ptr[2]);
    d.past_key = static_cast<const T*>(ptr[3]);
    d.past_value = static_cast<const T*>(ptr[4]);
    d.seqlens_k = static_cast<const int32_t*>(ptr[5]);
    d.output = static_cast<T*>(ptr[6]);
    d.present_key = static_cast<T*>(ptr[7]);
    d.present_value = static_cast<T*>(ptr[8]);
    d.present_compressed_key = static_cast<T*>(ptr[9]);
    d.selected_blocks = static_cast<int32_t*>(ptr[10]);
    d.past_compressed_key = static_cast<const T*>(ptr[11]);
    cuda::RunOptions options;
    options.kv_splits = static_cast<int>(dim[8]);
    std::vector<void*> scratch;
    const auto s = static_cast<cudaStream_t>(stream);
    e = cuda::RunAttention<T>(a, p, d, [&](size_t bytes) -> void* {
      void* q = nullptr;
      if (cudaMallocAsync(&q, bytes, s) != cudaSuccess) return nullptr;
      scratch.push_back(q);
      return q;
    }, stream, options);
    for (void* q : scratch) cudaFreeAsync(q, s);
    const cudaError_t ce = cudaGetLastError();
    if (e.empty() && ce != cudaSuccess) e = std::string("launch: ") + cudaGetErrorString(ce);
  }
  if (err_len > 0) {
    std::strncpy(err, e.c_str(), static_cast<size_t>(err_len) - 1);
    err[err_len - 1] = '\0';
  }
  return e.empty() ? 0 : 1;
}

}  // namespace

// attr: block_size, compress_kernel, compress_stride, init_blocks, window_size, topk, dense_len,
// lse_approx. dim: B, S, H, Hkv, D, past capacity (0: none), total_sequence_length, attention_mode,
// kv_splits (cuda::RunOptions: 0 automatic, -1 no split, n splits), past_compressed_key capacity
// (0: none). ptr: query, key, value, past_key, past_value, seqlens_k (int32, device), output,
// present_key, present_value, present_compressed_key, selected_blocks, past_compressed_key (or null).
// Same pointers for past_* and present_*: shared buffers. dtype 0: fp16, 1: bf16. Returns 0 or 1
// with the reason in err.
extern "C" __attribute__((visibility("default"))) int il_attention(int dtype, const int64_t* attr, const int64_t* dim,
                                                                   void* const* ptr, void* stream, char* err,
                                                                   int err_len) {
  if (dtype == 0) return Run<infllmv2::Float16>(attr, dim, ptr, stream, err, err_len);
  return Run<infllmv2::BFloat16>(attr, dim, ptr, stream, err, err_len);
}

// Dimensions the outputs need (present capacity, compressed capacity, budget) for the same attr
// and dim as il_attention; 0, or 1 when the op refuses them.
extern "C" __attribute__((visibility("default"))) int il_output_dims(const int64_t* attr, const int64_t* dim,
                                                                     int64_t* out3) {
  infllmv2::AttentionAttributes a;
  infllmv2::AttentionParams p;
  if (!Plan(attr, dim, &a, &p).empty()) return 1;
  out3[0] = p.present_capacity;
  out3[1] = p.present_compressed_capacity;
  out3[2] = p.budget;
  return 0;
}
