// A small C ABI over the op's CUDA kernels for the GPU script (run.py, ctypes + torch tensors):
// separate Q/K/V, no rotary, every output requested; past/present caches shared when the caller
// passes the same pointers (decode timings), past_compressed_key optional. The inputs are checked
// by the op's own CheckInputs (shapes only: seqlens_k stays on the device); sizes, entry plans and
// split counts for the script come from capi_plan.cc.
#include <cuda_runtime.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "capi_plan.h"
#include "cuda/attention_cuda.h"

namespace {

using infllmv2::gpu_check::Plan;

// Per-stage times: a CUDA event recorded on the stream at each RunOptions::mark; stage_ms[i] is
// the time from kStageNames[i]'s mark to the next mark (0 for a stage that did not run).
struct StageEvents {
  cudaStream_t stream;
  std::vector<std::pair<std::string, cudaEvent_t>> marks;
  static void Mark(void* ctx, const char* stage) {
    auto* self = static_cast<StageEvents*>(ctx);
    cudaEvent_t e;
    cudaEventCreate(&e);
    cudaEventRecord(e, self->stream);
    self->marks.emplace_back(stage, e);
  }
  void Times(double* stage_ms) {
    constexpr int n = sizeof(infllmv2::cuda::kStageNames) / sizeof(infllmv2::cuda::kStageNames[0]);
    for (int i = 0; i < n; ++i) stage_ms[i] = 0.0;
    if (!marks.empty()) cudaEventSynchronize(marks.back().second);
    for (size_t m = 0; m + 1 < marks.size(); ++m)
      for (int i = 0; i < n; ++i)
        if (marks[m].first == infllmv2::cuda::kStageNames[i]) {
          float ms = 0.0f;
          cudaEventElapsedTime(&ms, marks[m].second, marks[m + 1].second);
          stage_ms[i] += ms;
        }
    for (auto& m : marks) cudaEventDestroy(m.second);
  }
};

template <class T>
int Run(const int64_t* attr, const int64_t* dim, void* const* ptr, void* stream, char* err, int err_len,
        double* stage_ms = nullptr) {
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
    d.cos_cache = static_cast<const T*>(ptr[12]);
    d.sin_cache = static_cast<const T*>(ptr[13]);
    cuda::RunOptions options;
    options.kv_splits = static_cast<int>(dim[8]);
    StageEvents events{static_cast<cudaStream_t>(stream), {}};
    if (stage_ms != nullptr) {
      options.mark = &StageEvents::Mark;
      options.mark_ctx = &events;
    }
    std::vector<void*> scratch;
    const auto s = static_cast<cudaStream_t>(stream);
    e = cuda::RunAttention<T>(
        a, p, d,
        [&](size_t bytes) -> void* {
          void* q = nullptr;
          if (cudaMallocAsync(&q, bytes, s) != cudaSuccess) return nullptr;
          scratch.push_back(q);
          return q;
        },
        stream, options);
    for (void* q : scratch) cudaFreeAsync(q, s);
    if (stage_ms != nullptr) events.Times(stage_ms);
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

// attr, dim: as capi_plan.h's Plan. ptr: query, key, value, past_key, past_value, seqlens_k (int32, device), output,
// present_key, present_value, present_compressed_key, selected_blocks, past_compressed_key (or null),
// cos_cache, sin_cache (or null).
// Same pointers for past_* and present_*: shared buffers. dtype 0: fp16, 1: bf16. Returns 0 or 1
// with the reason in err.
extern "C" __attribute__((visibility("default"))) int il_attention(int dtype, const int64_t* attr, const int64_t* dim,
                                                                   void* const* ptr, void* stream, char* err,
                                                                   int err_len) {
  if (dtype == 0) return Run<infllmv2::Float16>(attr, dim, ptr, stream, err, err_len);
  return Run<infllmv2::BFloat16>(attr, dim, ptr, stream, err, err_len);
}

// il_attention, and the stages' times in stage_ms[5] (cuda::kStageNames order, milliseconds;
// synchronizes the stream).
extern "C" __attribute__((visibility("default"))) int il_attention_staged(int dtype, const int64_t* attr,
                                                                          const int64_t* dim, void* const* ptr,
                                                                          void* stream, double* stage_ms, char* err,
                                                                          int err_len) {
  if (dtype == 0) return Run<infllmv2::Float16>(attr, dim, ptr, stream, err, err_len, stage_ms);
  return Run<infllmv2::BFloat16>(attr, dim, ptr, stream, err, err_len, stage_ms);
}
