// The op library inside ONNX Runtime's own native library of another platform (win-x64 under wine,
// linux-arm64 under qemu; tests/platforms/run.sh). One process, many Run() calls:
//   platform_host ORT_LIBRARY OPS_LIBRARY
// loads ORT at run time (LoadLibraryW / dlopen, OrtGetApiBase), registers the op library with
// RegisterCustomOpsLibrary_V2 and runs SwitchableAttention on in-memory one-node models: dense mode
// against com.microsoft::GroupQueryAttention of the same ORT, sparse mode against the
// double-precision reference (customop/tests/reference_attention.cc), fp32 and fp16, and errors
// that must come back as ORT error statuses (a C++ exception crossing into ORT would abort).
// Prints PASS/FAIL per case; exits 1 on any failure, 2 when ORT or the library cannot be loaded.
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"

#if defined(_WIN32)
#ifndef NOMINMAX
#define NOMINMAX
#endif
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#else
#include <dlfcn.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "common/float16.h"
#include "ort/onnx_model_bytes.h"
#include "reference_attention.h"

namespace {

using infllmv2::Float16;
using infllmv2::FromFloat;
using infllmv2::ToFloat;
using infllmv2::ort_tests::GraphValue;
using infllmv2::ort_tests::kFloat;
using infllmv2::ort_tests::kFloat16;
using infllmv2::ort_tests::kInt32;
using infllmv2::ort_tests::OneNodeModel;

using GetApiBaseFn = const OrtApiBase*(ORT_API_CALL*)();

// OrtGetApiBase of the ORT library at `path` (null, with a message, when it cannot be loaded).
GetApiBaseFn LoadOrt(const std::string& path) {
  void* sym = nullptr;
#if defined(_WIN32)
  std::wstring wide(static_cast<size_t>(MultiByteToWideChar(CP_UTF8, 0, path.c_str(), -1, nullptr, 0)), L'\0');
  MultiByteToWideChar(CP_UTF8, 0, path.c_str(), -1, wide.data(), static_cast<int>(wide.size()));
  HMODULE lib = LoadLibraryW(wide.c_str());
  if (lib == nullptr) {
    std::printf("cannot load %s (error %lu)\n", path.c_str(), GetLastError());
    return nullptr;
  }
  FARPROC proc = GetProcAddress(lib, "OrtGetApiBase");
  static_assert(sizeof proc == sizeof sym, "function and data pointers differ");
  std::memcpy(&sym, &proc, sizeof sym);
#else
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    std::printf("cannot load %s: %s\n", path.c_str(), dlerror());
    return nullptr;
  }
  sym = dlsym(lib, "OrtGetApiBase");
#endif
  if (sym == nullptr) {
    std::printf("%s has no OrtGetApiBase\n", path.c_str());
    return nullptr;
  }
  GetApiBaseFn fn;
  std::memcpy(&fn, &sym, sizeof fn);
  return fn;
}

std::basic_string<ORTCHAR_T> OrtPath(const std::string& path) {
#if defined(_WIN32)
  std::wstring wide(static_cast<size_t>(MultiByteToWideChar(CP_UTF8, 0, path.c_str(), -1, nullptr, 0)), L'\0');
  MultiByteToWideChar(CP_UTF8, 0, path.c_str(), -1, wide.data(), static_cast<int>(wide.size()));
  wide.resize(wide.size() - 1);  // the terminating zero
  return wide;
#else
  return path;
#endif
}

// Deterministic values in [-1, 1) on every platform (no <random> distribution differences).
struct Lcg {
  uint64_t s;
  float Next() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<float>(static_cast<int64_t>(s >> 40) - (int64_t{1} << 23)) / 8388608.0f;
  }
  std::vector<float> Values(int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = Next();
    return v;
  }
};

// One call of the attention (both ops share GroupQueryAttention's first seven inputs).
struct Case {
  const char* name;
  int64_t B, S, P, H, Hkv, D;  // P: past length (the past buffers' capacity); 0 = first prompt
  bool fp16 = false;
  int32_t mode = 1;  // attention_mode: 1 dense (against GQA), 2 sparse (against the reference)
  int64_t window_size = 128, topk = 4;
  uint64_t seed = 1;
};

struct Inputs {
  std::vector<float> q, k, v, pk, pv;  // fp32, or already rounded to fp16 values
  std::vector<int32_t> seqlens;
  int32_t total = 0;
};

Inputs MakeInputs(const Case& c) {
  Lcg rng{c.seed};
  Inputs in;
  in.q = rng.Values(c.B * c.S * c.H * c.D);
  in.k = rng.Values(c.B * c.S * c.Hkv * c.D);
  in.v = rng.Values(c.B * c.S * c.Hkv * c.D);
  if (c.P > 0) {
    in.pk = rng.Values(c.B * c.Hkv * c.P * c.D);
    in.pv = rng.Values(c.B * c.Hkv * c.P * c.D);
  }
  if (c.fp16)
    for (auto* v : {&in.q, &in.k, &in.v, &in.pk, &in.pv})
      for (auto& x : *v) x = ToFloat(FromFloat<Float16>(x));
  in.total = static_cast<int32_t>(c.P + c.S);
  in.seqlens.assign(static_cast<size_t>(c.B), in.total - 1);
  return in;
}

// An input tensor's bytes and shape (fp32 values stored as T of the case).
struct Feed {
  std::string name;
  ONNXTensorElementDataType type;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

Feed FloatFeed(const char* name, const std::vector<float>& v, std::vector<int64_t> shape, bool fp16) {
  Feed f{
      name, fp16 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, std::move(shape), {}};
  if (fp16) {
    f.bytes.resize(v.size() * 2);
    for (size_t i = 0; i < v.size(); ++i) {
      const uint16_t h = FromFloat<Float16>(v[i]).bits;
      std::memcpy(f.bytes.data() + 2 * i, &h, 2);
    }
  } else {
    f.bytes.resize(v.size() * 4);
    if (!v.empty()) std::memcpy(f.bytes.data(), v.data(), f.bytes.size());
  }
  return f;
}

Feed IntFeed(const char* name, const std::vector<int32_t>& v, std::vector<int64_t> shape) {
  Feed f{name, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, std::move(shape), std::vector<uint8_t>(v.size() * 4)};
  std::memcpy(f.bytes.data(), v.data(), f.bytes.size());
  return f;
}

std::vector<double> ToDoubles(const Ort::Value& v) {
  const auto info = v.GetTensorTypeAndShapeInfo();
  const size_t n = info.GetElementCount();
  std::vector<double> out(n);
  if (info.GetElementType() == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
    const auto* p = static_cast<const uint16_t*>(v.GetTensorRawData());
    for (size_t i = 0; i < n; ++i) out[i] = ToFloat(Float16{p[i]});
  } else if (info.GetElementType() == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32) {
    const auto* p = v.GetTensorData<int32_t>();
    for (size_t i = 0; i < n; ++i) out[i] = p[i];
  } else {
    const auto* p = v.GetTensorData<float>();
    for (size_t i = 0; i < n; ++i) out[i] = p[i];
  }
  return out;
}

std::vector<Ort::Value> Run(Ort::Session& session, std::vector<Feed>& feeds, const std::vector<const char*>& outs) {
  auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  std::vector<Ort::Value> values;
  std::vector<const char*> names;
  for (auto& f : feeds) {
    values.push_back(
        Ort::Value::CreateTensor(mem, f.bytes.data(), f.bytes.size(), f.shape.data(), f.shape.size(), f.type));
    names.push_back(f.name.c_str());
  }
  return session.Run(Ort::RunOptions{nullptr}, names.data(), values.data(), values.size(), outs.data(), outs.size());
}

std::string Sci(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1e", x);
  return buf;
}

double MaxAbsDiff(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

class Host {
 public:
  Host(Ort::Env& env, std::string ops) : env_(env), ops_(std::move(ops)) {}

  Ort::Session Session(const std::string& bytes) {
    Ort::SessionOptions o;
    o.SetIntraOpNumThreads(2);
    o.SetGraphOptimizationLevel(ORT_DISABLE_ALL);
    const auto path = OrtPath(ops_);
    o.RegisterCustomOpsLibrary(path.c_str());  // RegisterCustomOpsLibrary_V2
    return Ort::Session(env_, bytes.data(), bytes.size(), o);
  }

  // GroupQueryAttention's inputs 0-6 (our op's first seven): no past for a first prompt.
  static std::vector<GraphValue> GqaInputs(const Case& c) {
    const int t = c.fp16 ? kFloat16 : kFloat;
    const bool past = c.P > 0;
    return {{"query", t, 3},
            {"key", t, 3},
            {"value", t, 3},
            {past ? "past_key" : "", t, 4},
            {past ? "past_value" : "", t, 4},
            {"seqlens_k", kInt32, 1},
            {"total_sequence_length", kInt32, 0}};
  }

  // Our op's graph: GQA's inputs 0-6 plus attention_mode (input 10); selected_blocks out.
  std::string OpModel(const Case& c, std::vector<std::pair<std::string, int64_t>> extra = {}) {
    const int t = c.fp16 ? kFloat16 : kFloat;
    std::vector<GraphValue> in = GqaInputs(c);
    in.insert(in.end(), {{"", t, 2}, {"", t, 2}, {"", t, 4}, {"attention_mode", kInt32, 0}});
    std::vector<GraphValue> out = {
        {"output", t, 3}, {"present_key", t, 4}, {"present_value", t, 4}, {"", t, 4}, {"selected_blocks", kInt32, 4}};
    std::vector<std::pair<std::string, int64_t>> attrs = {
        {"num_heads", c.H}, {"kv_num_heads", c.Hkv}, {"window_size", c.window_size}, {"topk", c.topk}};
    for (auto& a : extra) {
      bool replaced = false;
      for (auto& b : attrs)
        if (b.first == a.first) b.second = a.second, replaced = true;
      if (!replaced) attrs.push_back(a);
    }
    return OneNodeModel("SwitchableAttention", "com.infllmv2", in, out, attrs);
  }

  std::string GqaModel(const Case& c) {
    const int t = c.fp16 ? kFloat16 : kFloat;
    std::vector<GraphValue> out = {{"output", t, 3}, {"present_key", t, 4}, {"present_value", t, 4}};
    return OneNodeModel("GroupQueryAttention", "com.microsoft", GqaInputs(c), out,
                        {{"num_heads", c.H}, {"kv_num_heads", c.Hkv}});
  }

  static std::vector<Feed> Feeds(const Case& c, const Inputs& in, bool with_mode) {
    std::vector<Feed> f;
    f.push_back(FloatFeed("query", in.q, {c.B, c.S, c.H * c.D}, c.fp16));
    f.push_back(FloatFeed("key", in.k, {c.B, c.S, c.Hkv * c.D}, c.fp16));
    f.push_back(FloatFeed("value", in.v, {c.B, c.S, c.Hkv * c.D}, c.fp16));
    if (c.P > 0) {
      f.push_back(FloatFeed("past_key", in.pk, {c.B, c.Hkv, c.P, c.D}, c.fp16));
      f.push_back(FloatFeed("past_value", in.pv, {c.B, c.Hkv, c.P, c.D}, c.fp16));
    }
    f.push_back(IntFeed("seqlens_k", in.seqlens, {c.B}));
    f.push_back(IntFeed("total_sequence_length", {in.total}, {}));
    if (with_mode) f.push_back(IntFeed("attention_mode", {c.mode}, {}));
    return f;
  }

  // Dense mode against GroupQueryAttention: output and both present buffers.
  std::string DenseVsGqa(const Case& c) {
    const Inputs in = MakeInputs(c);
    auto ours = Session(OpModel(c));
    auto gqa = Session(GqaModel(c));
    auto f1 = Feeds(c, in, true), f2 = Feeds(c, in, false);
    auto a = Run(ours, f1, {"output", "present_key", "present_value"});
    auto b = Run(gqa, f2, {"output", "present_key", "present_value"});
    const double tol = c.fp16 ? 2e-3 : 2e-5;
    const char* names[] = {"output", "present_key", "present_value"};
    std::string detail;
    for (int i = 0; i < 3; ++i) {
      const double d = MaxAbsDiff(ToDoubles(a[i]), ToDoubles(b[i]));
      if (!(d <= tol)) return std::string(names[i]) + " differs from GQA by " + Sci(d);
      if (i == 0) detail = "max |ours - GQA| " + Sci(d);
    }
    return "ok: " + detail;
  }

  // Sparse mode against the double reference: selected blocks exactly, output within tolerance.
  std::string SparseVsReference(const Case& c) {
    const Inputs in = MakeInputs(c);
    auto ours = Session(OpModel(c));
    auto f = Feeds(c, in, true);
    auto a = Run(ours, f, {"output", "present_key", "present_value", "selected_blocks"});
    infllmv2::AttentionAttributes attrs;
    attrs.num_heads = c.H;
    attrs.kv_num_heads = c.Hkv;
    attrs.window_size = c.window_size;
    attrs.topk = c.topk;
    infllmv2::reference::Inputs r;
    auto dbl = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
    r.query = dbl(in.q), r.key = dbl(in.k), r.value = dbl(in.v), r.past_key = dbl(in.pk), r.past_value = dbl(in.pv);
    r.seqlens_k = in.seqlens;
    r.batch = c.B, r.seq_len = c.S, r.query_hidden = c.H * c.D, r.past_len = c.P;
    r.total_sequence_length = in.total;
    r.attention_mode = c.mode;
    if (c.fp16) r.store = [](double x) { return double{ToFloat(FromFloat<Float16>(static_cast<float>(x)))}; };
    const auto want = infllmv2::reference::Run(attrs, r);
    const auto sel = ToDoubles(a[3]);
    if (sel.size() != want.selected_blocks.size()) return "selected_blocks has the wrong size";
    int64_t mismatched = 0, dynamic = 0;
    for (size_t i = 0; i < sel.size(); ++i) mismatched += sel[i] != want.selected_blocks[i];
    for (int32_t b : want.selected_blocks) dynamic += b >= 0;
    if (mismatched != 0) return std::to_string(mismatched) + " selected block entries differ from the reference";
    const double d = MaxAbsDiff(ToDoubles(a[0]), want.output);
    const double tol = c.fp16 ? 2e-3 : 1e-4;
    if (!(d <= tol)) return "output differs from the reference by " + Sci(d);
    const double dk = MaxAbsDiff(ToDoubles(a[1]), want.present_key);
    if (!(dk <= tol)) return "present_key differs from the reference by " + Sci(dk);
    return "ok: " + std::to_string(dynamic) + " selected entries equal, max |ours - ref| " + Sci(d);
  }

  // A call with inconsistent shapes: an ORT error naming the op, then the session still works.
  std::string BadShapesAreAnError() {
    Case c{"", 1, 8, 0, 4, 2, 16};
    auto session = Session(OpModel(c));
    Inputs in = MakeInputs(c);
    auto f = Feeds(c, in, true);
    f[1].shape = {c.B + 1, c.S, c.Hkv * c.D};  // key batch 2, query batch 1
    f[1].bytes.resize(f[1].bytes.size() * 2);
    std::string err;
    try {
      Run(session, f, {"output"});
    } catch (const Ort::Exception& e) {
      err = e.what();
    }
    if (err.empty()) return "inconsistent shapes ran without an error";
    if (err.find("SwitchableAttention") == std::string::npos || err.find("'key'") == std::string::npos)
      return "error does not name the op and the input: " + err;
    auto ok = Feeds(c, in, true);
    Run(session, ok, {"output"});
    return "ok: " + err.substr(0, std::min<size_t>(err.size(), 100));
  }

  // A bad attribute: session creation (the op's CreateKernelV2) fails with a status naming it.
  std::string BadAttributeIsAnError() {
    Case c{"", 1, 8, 0, 4, 2, 16};
    std::string err;
    try {
      Session(OpModel(c, {{"window_size", 100}}));
    } catch (const Ort::Exception& e) {
      err = e.what();
    }
    if (err.find("'window_size'") == std::string::npos) return "no error naming 'window_size': " + err;
    return "ok: session creation refused";
  }

 private:
  Ort::Env& env_;
  std::string ops_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::printf("usage: %s ORT_LIBRARY OPS_LIBRARY\n", argv[0]);
    return 2;
  }
  const auto start = std::chrono::steady_clock::now();
  GetApiBaseFn get_api_base = LoadOrt(argv[1]);
  if (get_api_base == nullptr) return 2;
  const OrtApi* api = get_api_base()->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    std::printf("%s is older than these headers (API %d)\n", argv[1], ORT_API_VERSION);
    return 2;
  }
  Ort::InitApi(api);
  const char* isa = std::getenv("INFLLMV2_ISA");
  std::printf("ONNX Runtime %s, op library %s, INFLLMV2_ISA=%s\n", get_api_base()->GetVersionString(), argv[2],
              isa != nullptr ? isa : "(unset: the best level)");
  int failures = 0, runs = 0;
  try {
    Ort::Env env(ORT_LOGGING_LEVEL_FATAL, "platform_host");  // errors come back as statuses
    Host host(env, argv[2]);
    auto check = [&](const std::string& name, auto&& fn) {
      std::string result;
      try {
        result = fn();
      } catch (const Ort::Exception& e) {
        result = std::string("ORT error: ") + e.what();
      } catch (const std::exception& e) {
        result = std::string("exception: ") + e.what();
      }
      ++runs;
      const bool pass = result.rfind("ok", 0) == 0;
      failures += !pass;
      std::printf("%s %s: %s\n", pass ? "PASS" : "FAIL", name.c_str(), pass ? result.c_str() + 4 : result.c_str());
      std::fflush(stdout);
    };
    // Dense mode = GroupQueryAttention: prefill (first prompt), GQA groups 1/2/4, head sizes 16-128,
    // decode and a chunk over a past, a batch of 2.
    const Case dense[] = {
        {"dense prefill fp32 S=37 H=4 Hkv=2 D=16", 1, 37, 0, 4, 2, 16},
        {"dense prefill fp32 S=70 H=8 Hkv=2 D=64", 1, 70, 0, 8, 2, 64},
        {"dense prefill fp32 S=20 H=3 Hkv=3 D=32", 1, 20, 0, 3, 3, 32},
        {"dense decode fp32 B=2 P=90 H=8 Hkv=2 D=128", 2, 1, 90, 8, 2, 128},
        {"dense decode fp32 P=200 H=4 Hkv=1 D=64", 1, 1, 200, 4, 1, 64},
        {"dense prefill fp16 S=50 H=4 Hkv=2 D=64", 1, 50, 0, 4, 2, 64, true},
        {"dense decode fp16 P=130 H=8 Hkv=4 D=32", 1, 1, 130, 8, 4, 32, true},
    };
    for (const Case& c : dense)
      check(std::string(c.name) + " vs GroupQueryAttention", [&] { return host.DenseVsGqa(c); });
    // Sparse mode = the reference: budget K = topk + window/64 = 6 blocks; prefill of 10 blocks and
    // decodes over 16-32 blocks, where top-k picks among many candidates.
    Case sparse[] = {
        {"sparse prefill fp32 S=600 H=4 Hkv=2 D=64", 1, 600, 0, 4, 2, 64, false, 2},
        {"sparse decode fp32 P=1000 H=16 Hkv=1 D=64", 1, 1, 1000, 16, 1, 64, false, 2},
        {"sparse decode fp32 B=2 P=2047 H=8 Hkv=2 D=128", 2, 1, 2047, 8, 2, 128, false, 2},
        {"sparse chunk fp32 S=16 P=1007 H=4 Hkv=2 D=32", 1, 16, 1007, 4, 2, 32, false, 2},
        {"sparse decode fp16 P=1500 H=8 Hkv=1 D=64", 1, 1, 1500, 8, 1, 64, true, 2},
    };
    uint64_t seed = 100;
    for (Case& c : sparse) {
      c.seed = seed++;
      check(std::string(c.name) + " vs reference", [&] { return host.SparseVsReference(c); });
    }
    check("inconsistent shapes -> ORT error status", [&] { return host.BadShapesAreAnError(); });
    check("bad attribute -> ORT error status", [&] { return host.BadAttributeIsAnError(); });
  } catch (const std::exception& e) {
    std::printf("FAIL setup: %s\n", e.what());
    return 1;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: %d of %d cases passed (%.1f s)\n", failures ? "FAILED" : "PASSED", runs - failures, runs, s);
  return failures ? 1 : 0;
}
