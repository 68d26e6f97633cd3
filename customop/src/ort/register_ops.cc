// The library's only export: registers domain com.infllmv2 with SwitchableAttention on a session.
#include <exception>
#include <mutex>
#include <vector>

#include "common/float16.h"
#include "ort/switchable_attention_op.h"
#if defined(INFLLMV2_WITH_CUDA)
#include "ort/cuda_attention_op.h"
#endif

namespace {

// ONNX Runtime 1.29: the oldest runtime the library loads into.
constexpr uint32_t kOldestOrtApiVersion = 29;
static_assert(ORT_API_VERSION >= kOldestOrtApiVersion, "ONNX Runtime headers older than 1.29");

std::mutex g_mutex;
std::vector<Ort::CustomOpDomain>& Domains() {  // kept alive until unload: sessions reference them
  static std::vector<Ort::CustomOpDomain> domains;
  return domains;
}

}  // namespace

// The export: the version script keeps only this symbol of the ELF library; on Windows the one
// __declspec(dllexport) makes it the DLL's only export.
#if defined(_WIN32)
#define INFLLMV2_EXPORT __declspec(dllexport)
#else
#define INFLLMV2_EXPORT __attribute__((visibility("default")))
#endif

extern "C" INFLLMV2_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                     const OrtApiBase* api_base) {
  try {
    // The API table of the oldest runtime we support, not of the headers we compile against (1.31):
    // a runtime returns null for a version newer than itself, and the op calls nothing newer.
    const OrtApi* api = api_base->GetApi(kOldestOrtApiVersion);
    if (api == nullptr) return nullptr;  // older than 1.29: no API table to register with or report through
    Ort::InitApi(api);
    static infllmv2::ort::CpuOp<float> cpu_fp32;
    static infllmv2::ort::CpuOp<infllmv2::Float16> cpu_fp16;
    Ort::CustomOpDomain domain{infllmv2::ort::kDomain};
    domain.Add(&cpu_fp32);
    domain.Add(&cpu_fp16);
#if defined(INFLLMV2_WITH_CUDA)  // chosen only by a session with the CUDA EP; harmless on CPU-only ORT
    static infllmv2::ort::CudaOp<infllmv2::Float16> cuda_fp16;
    static infllmv2::ort::CudaOp<infllmv2::BFloat16> cuda_bf16;
    domain.Add(&cuda_fp16);
    domain.Add(&cuda_bf16);
#endif
    Ort::UnownedSessionOptions session_options(options);
    session_options.Add(domain);
    std::lock_guard<std::mutex> lock(g_mutex);
    Domains().push_back(std::move(domain));
    return nullptr;
  } catch (const Ort::Exception& e) {
    Ort::Status status{e};
    return status.release();
  } catch (const std::exception& e) {
    Ort::Status status{e};
    return status.release();
  }
}
