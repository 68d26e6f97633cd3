// The op library as an application loads it: inside ONNX Runtime (its session, its thread pool),
// built with the sanitizers of this build (./test.sh: AddressSanitizer + UBSan; a ThreadSanitizer
// build runs the concurrency test). Every bad input must come back as an ORT error naming the
// problem, never as a crash of the host process.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "onnxruntime_cxx_api.h"
#include "ort/onnx_model_bytes.h"

#if defined(__SANITIZE_ADDRESS__)
// ONNX Runtime itself (not instrumented) keeps one 14-byte malloc until exit; our library's
// allocations are still checked.
extern "C" const char* __lsan_default_suppressions() { return "leak:libonnxruntime.so\n"; }
#endif

namespace infllmv2::ort_tests {
namespace {

Ort::Env& Env() {
  static Ort::Env env(ORT_LOGGING_LEVEL_FATAL, "infllmv2_ort_tests");
  return env;
}

Ort::SessionOptions Options(int threads = 2) {
  Ort::SessionOptions o;
  o.SetIntraOpNumThreads(threads);
  o.RegisterCustomOpsLibrary(INFLLMV2_OPS_LIBRARY);
  return o;
}

// One call's inputs (fp32, separate q/k/v, no past): B x S tokens, H query and Hkv kv heads.
struct Call {
  int64_t B = 1, S = 8, H = 4, Hkv = 2, D = 16;
  std::vector<float> q, k, v;
  std::vector<int32_t> seqlens;
  int32_t total = 0;
  int32_t mode = 0;
  std::vector<int64_t> q_shape, kv_shape, seqlens_shape;
  void Fill() {
    q.assign(static_cast<size_t>(B * S * H * D), 0.0f);
    k.assign(static_cast<size_t>(B * S * Hkv * D), 0.0f);
    for (size_t i = 0; i < q.size(); ++i) q[i] = std::sin(0.37f * static_cast<float>(i));
    for (size_t i = 0; i < k.size(); ++i) k[i] = std::cos(0.11f * static_cast<float>(i));
    v = k;
    seqlens.assign(static_cast<size_t>(B), static_cast<int32_t>(S - 1));
    total = static_cast<int32_t>(S);
    q_shape = {B, S, H * D};
    kv_shape = {B, S, Hkv * D};
    seqlens_shape = {B};
  }
};

const std::vector<GraphValue> kInputs = {{"query", kFloat, 3},
                                         {"key", kFloat, 3},
                                         {"value", kFloat, 3},
                                         {"", kFloat, 4},
                                         {"", kFloat, 4},
                                         {"seqlens_k", kInt32, 1},
                                         {"total_sequence_length", kInt32, 0},
                                         {"", kFloat, 2},
                                         {"", kFloat, 2},
                                         {"", kFloat, 4},
                                         {"attention_mode", kInt32, 0}};
const std::vector<GraphValue> kOutputs = {{"output", kFloat, 3},
                                          {"present_key", kFloat, 4},
                                          {"present_value", kFloat, 4},
                                          {"", kFloat, 4},
                                          {"selected_blocks", kInt32, 4}};

std::vector<std::pair<std::string, int64_t>> Attrs(int64_t H, int64_t Hkv) {
  return {{"num_heads", H}, {"kv_num_heads", Hkv}, {"window_size", 64}, {"topk", 2}, {"dense_len", 1 << 20}};
}

Ort::Session Session(const std::vector<std::pair<std::string, int64_t>>& attrs, int threads = 2) {
  const std::string bytes = SwitchableAttentionModel(kInputs, kOutputs, attrs);
  return Ort::Session(Env(), bytes.data(), bytes.size(), Options(threads));
}

// Runs the call; returns "" or ORT's error message.
std::string RunCall(Ort::Session& session, Call& c, std::vector<Ort::Value>* outputs = nullptr) {
  try {
    auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    std::vector<int64_t> scalar;
    std::vector<Ort::Value> in;
    in.push_back(Ort::Value::CreateTensor<float>(mem, c.q.data(), c.q.size(), c.q_shape.data(), c.q_shape.size()));
    in.push_back(Ort::Value::CreateTensor<float>(mem, c.k.data(), c.k.size(), c.kv_shape.data(), c.kv_shape.size()));
    in.push_back(Ort::Value::CreateTensor<float>(mem, c.v.data(), c.v.size(), c.kv_shape.data(), c.kv_shape.size()));
    in.push_back(Ort::Value::CreateTensor<int32_t>(mem, c.seqlens.data(), c.seqlens.size(), c.seqlens_shape.data(),
                                                   c.seqlens_shape.size()));
    in.push_back(Ort::Value::CreateTensor<int32_t>(mem, &c.total, 1, scalar.data(), 0));
    in.push_back(Ort::Value::CreateTensor<int32_t>(mem, &c.mode, 1, scalar.data(), 0));
    const char* in_names[] = {"query", "key", "value", "seqlens_k", "total_sequence_length", "attention_mode"};
    const char* out_names[] = {"output", "present_key", "present_value", "selected_blocks"};
    auto out = session.Run(Ort::RunOptions{nullptr}, in_names, in.data(), in.size(), out_names, 4);
    if (outputs != nullptr) *outputs = std::move(out);
    return "";
  } catch (const Ort::Exception& e) {
    return e.what();
  }
}

TEST(OpInOrt, ValidCallsRunInBothModes) {
  auto session = Session(Attrs(4, 2));
  for (int32_t mode : {1, 2}) {
    Call c;
    c.S = 300;  // 5 blocks of 64 > budget 2 + 1: sparse selects
    c.Fill();
    c.mode = mode;
    std::vector<Ort::Value> out;
    ASSERT_EQ(RunCall(session, c, &out), "") << "mode " << mode;
    const float* o = out[0].GetTensorData<float>();
    for (size_t i = 0; i < c.q.size(); ++i) ASSERT_TRUE(std::isfinite(o[i]));
    const int32_t* sel = out[3].GetTensorData<int32_t>();
    const int64_t K = out[3].GetTensorTypeAndShapeInfo().GetShape()[3];
    const int32_t* last = sel + (c.S - 1) * K;  // kv head 0, last token
    EXPECT_EQ(last[0], mode == 1 ? -1 : 0) << "dense rows are all -1; sparse rows start with the init block";
  }
}

// Bad inputs and attributes: each refused with a message naming what is wrong.
TEST(OpInOrt, BadInputsAreErrorsNamingTheInput) {
  struct Bad {
    const char* what;
    void (*mutate)(Call&);
    const char* expect;
  };
  const Bad cases[] = {
      {"key batch",
       [](Call& c) {
         c.kv_shape = {c.B + 1, c.S, c.Hkv * c.D};
         c.k.resize(c.k.size() * 2);
         c.v = c.k;
       },
       "'key'"},
      {"key width",
       [](Call& c) {
         c.kv_shape = {c.B, c.S, c.Hkv * c.D - 8};
         c.k.resize(c.k.size() - c.B * c.S * 8);
         c.v = c.k;
       },
       "'key'"},
      {"head size 12",
       [](Call& c) {
         c.q_shape = {c.B, c.S, c.H * 12};
         c.kv_shape = {c.B, c.S, c.Hkv * 12};
       },
       "Head size"},
      {"seqlens beyond total", [](Call& c) { c.seqlens[0] = c.total + 5; }, "seqlens_k"},
      {"negative seqlens", [](Call& c) { c.seqlens[0] = -3; }, "seqlens_k"},
      {"seqlens batch",
       [](Call& c) {
         c.seqlens.push_back(1);
         c.seqlens_shape = {c.B + 1};
       },
       "seqlens_k"},
      {"mode 3", [](Call& c) { c.mode = 3; }, "attention_mode"},
      {"total below S", [](Call& c) { c.total = static_cast<int32_t>(c.S - 2); }, "total_sequence_length"},
  };
  auto session = Session(Attrs(4, 2));
  int refused = 0;
  for (const auto& bad : cases) {
    Call c;
    c.Fill();
    bad.mutate(c);
    const std::string err = RunCall(session, c);
    EXPECT_NE(err.find("SwitchableAttention"), std::string::npos) << bad.what << ": " << err;
    EXPECT_NE(err.find(bad.expect), std::string::npos) << bad.what << ": " << err;
    refused += !err.empty();
  }
  // The session stays usable after every refusal.
  Call ok;
  ok.Fill();
  EXPECT_EQ(RunCall(session, ok), "");
  std::printf("[ OpInOrt ] %d of %zu bad calls refused with a message\n", refused, std::size(cases));
}

TEST(OpInOrt, BadAttributesFailSessionCreationNamingTheAttribute) {
  const std::pair<const char*, int64_t> cases[] = {{"num_heads", 0},
                                                   {"topk", int64_t{1} << 31},
                                                   {"block_size", int64_t{1} << 20},
                                                   {"dense_len", int64_t{1} << 40},
                                                   {"window_size", 100},
                                                   {"lse_approx", 2}};
  for (const auto& [name, value] : cases) {
    auto attrs = Attrs(4, 2);
    bool replaced = false;
    for (auto& a : attrs)
      if (a.first == name) a.second = value, replaced = true;
    if (!replaced) attrs.emplace_back(name, value);
    std::string err;
    try {
      Session(attrs);
    } catch (const Ort::Exception& e) {
      err = e.what();
    }
    EXPECT_NE(err.find(std::string("'") + name + "'"), std::string::npos) << name << "=" << value << ": " << err;
  }
}

// Sixteen threads share one session (ORT allows concurrent Run): identical results, and under
// ThreadSanitizer no data race in the op.
TEST(OpInOrt, ConcurrentRunsOnOneSessionAgree) {
  auto session = Session(Attrs(4, 2));
  Call c;
  c.S = 200;
  c.Fill();
  c.mode = 2;
  std::vector<Ort::Value> reference;
  ASSERT_EQ(RunCall(session, c, &reference), "");
  const float* want = reference[0].GetTensorData<float>();
  std::vector<int> mismatches(16, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t)
    threads.emplace_back([&, t] {
      Call mine = c;
      std::vector<Ort::Value> out;
      if (!RunCall(session, mine, &out).empty()) {
        mismatches[t] = -1;
        return;
      }
      const float* got = out[0].GetTensorData<float>();
      for (size_t i = 0; i < c.q.size(); ++i) mismatches[t] += got[i] != want[i];
    });
  for (auto& t : threads) t.join();
  for (int t = 0; t < 16; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

}  // namespace
}  // namespace infllmv2::ort_tests
