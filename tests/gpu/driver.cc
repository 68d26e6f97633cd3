// The GPU check's C++ driver (tests/gpu/run.sh check): the op's kernels on small cases without
// Python, so that compute-sanitizer (memcheck, racecheck, synccheck) sees only our code, and what
// needs the CUDA API itself: a decode step captured into a CUDA graph (a host synchronization or a
// device-to-host copy inside the call fails the capture), run-to-run determinism, and the
// ldmatrix/mma fragment layouts on the hardware against the tables the emulator implements
// (primitives.h), so that the emulation is itself verified on the first GPU.
// Compiled by nvcc for the GPU, and by the host compiler against the emulation for --dry-run (the
// graph capture is then skipped). Prints one line per check; argv[1]: a JSON summary to write.
// Exit 0 when every check passed.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "capi_plan.h"
#include "cuda/attention_cuda.h"
#include "cuda/kernel_args.h"

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#endif

namespace infllmv2::gpu_check {
namespace {

#if !defined(__CUDACC__)
using emu::dim3;
#endif

#if defined(__CUDACC__)
constexpr bool kEmulated = false;
void* DevAlloc(size_t n) {
  void* p = nullptr;
  return cudaMalloc(&p, n) == cudaSuccess ? p : nullptr;
}
void DevFree(void* p) { cudaFree(p); }
void ToDevice(void* d, const void* h, size_t n) { cudaMemcpy(d, h, n, cudaMemcpyHostToDevice); }
void ToHost(void* h, const void* d, size_t n) { cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost); }
std::string SyncError() {
  const cudaError_t e = cudaDeviceSynchronize();
  return e == cudaSuccess ? "" : cudaGetErrorString(e);
}
#else
constexpr bool kEmulated = true;
void* DevAlloc(size_t n) { return ::operator new(n, std::align_val_t(256)); }
void DevFree(void* p) { ::operator delete(p, std::align_val_t(256)); }
void ToDevice(void* d, const void* h, size_t n) { std::memcpy(d, h, n); }
void ToHost(void* h, const void* d, size_t n) { std::memcpy(h, d, n); }
std::string SyncError() { return ""; }
#endif

struct Check {
  std::string name, detail;
  bool ok;
};
std::vector<Check> g_checks;

void Report(const std::string& name, bool ok, const std::string& detail) {
  std::printf("  %s %-34s %s\n", ok ? "ok  " : "FAIL", name.c_str(), detail.c_str());
  g_checks.push_back({name, detail, ok});
}

// Device buffers of one case, filled with a fixed pseudo-random 16-bit pattern.
template <class T>
struct Buffers {
  std::vector<void*> owned;
  AttentionData<T> d;
  size_t out_bytes = 0, sel_bytes = 0;
  void* Make(size_t bytes, uint32_t seed, bool fill) {
    void* p = DevAlloc(bytes);
    owned.push_back(p);
    std::vector<uint16_t> h(bytes / 2);
    uint32_t x = seed * 2654435761u + 1;
    for (auto& v : h) {
      x = x * 1664525u + 1013904223u;
      v = fill ? FromFloat<T>(static_cast<float>(static_cast<int>(x >> 20) - 2048) / 2048.0f).bits : 0;
    }
    ToDevice(p, h.data(), bytes);
    return p;
  }
  ~Buffers() {
    for (void* p : owned) DevFree(p);
  }
};

// attr/dim as capi_plan.h (past capacity P = 0: a first prompt); share: present = past buffers.
struct Case {
  const char* name;
  int dtype;  // 0 fp16, 1 bf16
  int64_t attr[8];
  int64_t dim[10];
  bool share;
  Extras extras;  // softcap, score_precision, rotary
};

constexpr int64_t kTiny[8] = {16, 8, 4, 1, 32, 4, -1, 1};  // budget 6 blocks of 16: stage 1 early
constexpr int64_t kDefault[8] = {64, 32, 16, 1, 2048, 64, 8192, 1};

template <class T>
std::string Prepare(const Case& c, Buffers<T>& b, AttentionAttributes* a, AttentionParams* p) {
  const std::string e = Plan(c.attr, c.dim, c.extras, a, p);
  if (!e.empty()) return e;
  const int64_t B = p->batch, S = p->seq_len, H = p->num_heads, Hkv = p->kv_num_heads, D = p->head_size;
  const int64_t P = c.dim[5];
  AttentionData<T>& d = b.d;
  d.query = static_cast<T*>(b.Make(2 * B * S * H * D, 1, true));
  d.key = static_cast<T*>(b.Make(2 * B * S * Hkv * D, 2, true));
  d.value = static_cast<T*>(b.Make(2 * B * S * Hkv * D, 3, true));
  if (P > 0) {
    d.past_key = static_cast<T*>(b.Make(2 * B * Hkv * P * D, 4, true));
    d.past_value = static_cast<T*>(b.Make(2 * B * Hkv * P * D, 5, true));
  }
  if (a->do_rotary != 0) {
    d.cos_cache = static_cast<T*>(b.Make(2 * p->max_position * p->rotary_dim / 2, 6, true));
    d.sin_cache = static_cast<T*>(b.Make(2 * p->max_position * p->rotary_dim / 2, 7, true));
  }
  // Ragged entries: entry b has 5 b fewer keys (a first prompt: 3 b padding tokens).
  std::vector<int32_t> seqlens(static_cast<size_t>(B));
  for (int64_t i = 0; i < B; ++i) seqlens[i] = static_cast<int32_t>((P > 0 ? c.dim[6] - 5 * i : S - 3 * i) - 1);
  auto* sl = static_cast<int32_t*>(b.Make(4 * B, 0, false));
  ToDevice(sl, seqlens.data(), 4 * B);
  d.seqlens_k = sl;
  b.out_bytes = 2 * B * S * H * D;
  d.output = static_cast<T*>(b.Make(b.out_bytes, 0, false));
  if (c.share && P > 0) {
    d.present_key = const_cast<T*>(d.past_key);
    d.present_value = const_cast<T*>(d.past_value);
  } else {
    d.present_key = static_cast<T*>(b.Make(2 * B * Hkv * p->present_capacity * D, 0, false));
    d.present_value = static_cast<T*>(b.Make(2 * B * Hkv * p->present_capacity * D, 0, false));
  }
  d.present_compressed_key = static_cast<T*>(b.Make(2 * B * Hkv * p->present_compressed_capacity * D, 0, false));
  b.sel_bytes = 4 * B * Hkv * S * p->budget;
  d.selected_blocks = static_cast<int32_t*>(b.Make(b.sel_bytes, 0, false));
  return "";
}

template <class T>
std::string Run(const Case& c, const AttentionAttributes& a, const AttentionParams& p, Buffers<T>& b, void* stream) {
  std::vector<void*> scratch;
  cuda::RunOptions o;
  o.kv_splits = static_cast<int>(c.dim[8]);
  std::string e = cuda::RunAttention<T>(
      a, p, b.d,
      [&](size_t bytes) -> void* {
#if defined(__CUDACC__)
        void* q = nullptr;
        if (cudaMallocAsync(&q, bytes, static_cast<cudaStream_t>(stream)) != cudaSuccess) return nullptr;
#else
        void* q = DevAlloc(bytes);
#endif
        scratch.push_back(q);
        return q;
      },
      stream, o);
  for (void* q : scratch) {
#if defined(__CUDACC__)
    cudaFreeAsync(q, static_cast<cudaStream_t>(stream));
#else
    DevFree(q);
#endif
  }
  return e;
}

// Runs the case twice (outputs and selections must be bit-identical) and, on a GPU, once more as a
// CUDA graph captured from the stream (must equal the eager run).
template <class T>
void RunCase(const Case& c, bool graph) {
  Buffers<T> b;
  AttentionAttributes a;
  AttentionParams p;
  std::string e = Prepare(c, b, &a, &p);
  if (!e.empty()) return Report(c.name, false, "refused: " + e);
  std::vector<char> out1(b.out_bytes), out2(b.out_bytes), sel1(b.sel_bytes), sel2(b.sel_bytes);
  e = Run(c, a, p, b, nullptr);
  if (e.empty()) e = SyncError();
  if (!e.empty()) return Report(c.name, false, e);
  ToHost(out1.data(), b.d.output, b.out_bytes);
  ToHost(sel1.data(), b.d.selected_blocks, b.sel_bytes);
  // Shared caches hold this call's rows now; rerunning writes the same values.
  e = Run(c, a, p, b, nullptr);
  if (e.empty()) e = SyncError();
  if (!e.empty()) return Report(c.name, false, e);
  ToHost(out2.data(), b.d.output, b.out_bytes);
  ToHost(sel2.data(), b.d.selected_blocks, b.sel_bytes);
  const bool same = out1 == out2 && sel1 == sel2;
  Report(c.name, same, same ? "ran twice, bit-identical" : "two runs differ");
  if (!graph) return;
#if defined(__CUDACC__)
  cudaStream_t s;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  cudaGraph_t g = nullptr;
  cudaGraphExec_t x = nullptr;
  cudaMemsetAsync(b.d.output, 0, b.out_bytes, s);
  cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
  e = Run(c, a, p, b, s);
  const cudaError_t end = cudaStreamEndCapture(s, &g);
  if (e.empty() && end != cudaSuccess) e = std::string("capture: ") + cudaGetErrorString(end);
  if (e.empty() && cudaGraphInstantiate(&x, g, nullptr, nullptr, 0) != cudaSuccess) e = "graph instantiate failed";
  if (e.empty() && cudaGraphLaunch(x, s) != cudaSuccess) e = "graph launch failed";
  if (e.empty() && cudaStreamSynchronize(s) != cudaSuccess) e = "graph run failed";
  std::vector<char> out3(b.out_bytes);
  if (e.empty()) ToHost(out3.data(), b.d.output, b.out_bytes);
  if (x != nullptr) cudaGraphExecDestroy(x);
  if (g != nullptr) cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  cudaGetLastError();
  const bool ok = e.empty() && out3 == out1;
  Report(std::string(c.name) + " graph", ok, !e.empty() ? e : ok ? "captured, replayed, equal" : "graph run differs");
#endif
}

// ldmatrix x4 (and .trans) of four 8x8 matrices of distinct 16-bit values, and mma.m16n8k16 on
// fragments built by the documented layout (primitives.h); every lane's registers are written out.
template <class T>
IL_GLOBAL void FragmentKernel(uint32_t* ld, uint32_t* ldt, float* mma) {
  alignas(16) IL_SHARED uint16_t m[4 * 64];
  const int l = static_cast<int>(threadIdx.x), g = l / 4, t = l % 4;
  for (int i = l; i < 4 * 64; i += 32) m[i] = static_cast<uint16_t>(i);
  cuda::SyncThreads();
  uint32_t r[4];
  cuda::LdMatrixX4(r, &m[8 * l]);  // lane l addresses row l % 8 of matrix l / 8
  for (int j = 0; j < 4; ++j) ld[4 * l + j] = r[j];
  cuda::LdMatrixX4Trans(r, &m[8 * l]);
  for (int j = 0; j < 4; ++j) ldt[4 * l + j] = r[j];
  auto A = [](int row, int col) { return static_cast<float>((row * 3 + col) % 7 - 3); };
  auto B = [](int k, int n) { return static_cast<float>((k + 2 * n) % 5 - 2); };
  const uint32_t a[4] = {
      cuda::Pack2<T>(A(g, 2 * t), A(g, 2 * t + 1)), cuda::Pack2<T>(A(g + 8, 2 * t), A(g + 8, 2 * t + 1)),
      cuda::Pack2<T>(A(g, 2 * t + 8), A(g, 2 * t + 9)), cuda::Pack2<T>(A(g + 8, 2 * t + 8), A(g + 8, 2 * t + 9))};
  const uint32_t bb[2] = {cuda::Pack2<T>(B(2 * t, g), B(2 * t + 1, g)),
                          cuda::Pack2<T>(B(2 * t + 8, g), B(2 * t + 9, g))};
  const float c0[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  float d[4];
  cuda::Mma16816<T>(d, a, bb, c0);
  for (int i = 0; i < 4; ++i) mma[4 * l + i] = d[i];
}

template <class T>
void FragmentCheck(const char* name) {
  auto* ld = static_cast<uint32_t*>(DevAlloc(4 * 128));
  auto* ldt = static_cast<uint32_t*>(DevAlloc(4 * 128));
  auto* mma = static_cast<float*>(DevAlloc(4 * 128));
  auto* k = &FragmentKernel<T>;
  IL_LAUNCH_ONLY(k, dim3(1), dim3(32), nullptr, ld, ldt, mma);
  std::string e = SyncError();
  std::vector<uint32_t> hl(128), ht(128);
  std::vector<float> hm(128);
  ToHost(hl.data(), ld, 4 * 128);
  ToHost(ht.data(), ldt, 4 * 128);
  ToHost(hm.data(), mma, 4 * 128);
  DevFree(ld);
  DevFree(ldt);
  DevFree(mma);
  int bad = 0;
  auto m = [](int j, int row, int col) { return static_cast<uint32_t>(64 * j + 8 * row + col); };
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int j = 0; j < 4; ++j) {
      // ldmatrix: row l / 4, columns 2 (l % 4) and + 1 of matrix j; .trans: rows 2 (l % 4) and + 1
      // of column l / 4.
      bad += hl[4 * l + j] != (m(j, g, 2 * t) | (m(j, g, 2 * t + 1) << 16));
      bad += ht[4 * l + j] != (m(j, 2 * t, g) | (m(j, 2 * t + 1, g) << 16));
    }
    for (int i = 0; i < 4; ++i) {  // D: (g, 2t..2t+1), (g+8, 2t..2t+1)
      const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
      float want = 0.0f;
      for (int kk = 0; kk < 16; ++kk)
        want += static_cast<float>((row * 3 + kk) % 7 - 3) * static_cast<float>((kk + 2 * col) % 5 - 2);
      bad += hm[4 * l + i] != want;
    }
  }
  Report(name, e.empty() && bad == 0,
         !e.empty() ? e
         : bad == 0 ? "ldmatrix x4/.trans and mma layouts as tabled"
                    : std::to_string(bad) + " elements off");
}

void WriteJson(const char* path) {
  FILE* f = std::fopen(path, "w");
  if (f == nullptr) return;
  bool all = true;
  std::fprintf(f, "{\"emulated\": %s, \"checks\": [", kEmulated ? "true" : "false");
  for (size_t i = 0; i < g_checks.size(); ++i) {
    all = all && g_checks[i].ok;
    std::string detail;
    for (char ch : g_checks[i].detail) detail += ch == '"' || ch == '\\' ? ' ' : ch;
    std::fprintf(f, "%s{\"name\": \"%s\", \"ok\": %s, \"detail\": \"%s\"}", i ? ", " : "", g_checks[i].name.c_str(),
                 g_checks[i].ok ? "true" : "false", detail.c_str());
  }
  std::fprintf(f, "], \"passed\": %s}\n", all ? "true" : "false");
  std::fclose(f);
}

}  // namespace
}  // namespace infllmv2::gpu_check

int main(int argc, char** argv) {
  using namespace infllmv2;
  using namespace infllmv2::gpu_check;
  std::printf("== driver (%s)\n", kEmulated ? "host emulation" : "GPU");
  FragmentCheck<Float16>("fragments fp16");
  FragmentCheck<BFloat16>("fragments bf16");
  // attr; dim: B, S, H, Hkv, D, P, T, mode, kv_splits, past compressed capacity.
  Extras softcap, bf16_scores, rotary;
  softcap.softcap = 30.0f;
  bf16_scores.score_precision = 1;
  rotary.rotary_dim = 64;
  rotary.interleaved = true;
  const Case cases[] = {
      {"dense prefill fp16 G2 D64 softcap", 0, {}, {2, 40, 4, 2, 64, 0, 40, 1, 0, 0}, false, softcap},
      {"sparse prefill bf16 G4 D128 bf16 scores", 1, {}, {1, 112, 4, 1, 128, 0, 112, 2, 0, 0}, false, bf16_scores},
      {"sparse decode split3 fp16 G16 rot", 0, {}, {2, 1, 16, 1, 128, 201, 201, 2, 3, 0}, true, rotary},
      {"dense chunk bf16 G1 D64", 1, {}, {2, 16, 2, 2, 64, 100, 116, 1, -1, 0}, false, {}},
      {"dense prefill bf16 G2 D96", 1, {}, {1, 100, 4, 2, 96, 0, 100, 1, 0, 0}, false, {}},
      {"dense decode split4 fp16 G4 D256", 0, {}, {2, 1, 8, 2, 256, 300, 300, 1, 4, 0}, true, {}},
  };
  const bool tiny[] = {false, true, true, false, false, false};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
    Case c = cases[i];
    std::memcpy(c.attr, tiny[i] ? kTiny : kDefault, sizeof(c.attr));
    const bool graph = c.dim[1] == 1;  // the decode step
    if (c.dtype == 0)
      RunCase<Float16>(c, graph);
    else
      RunCase<BFloat16>(c, graph);
  }
  if (kEmulated) std::printf("  skip CUDA-graph capture (needs a GPU)\n");
  if (argc > 1) WriteJson(argv[1]);
  for (const Check& ch : g_checks)
    if (!ch.ok) return 1;
  return 0;
}
