// The CUDA kernel's scratch (ort/call_scratch.h) against a recording ORT API table: every buffer
// must come from the stream-aware KernelContext_GetScratchBuffer (never from a plain allocator
// Alloc, which an arena may hand to another stream while our kernels still run), and go back with
// the allocator released when the call ends. No GPU: the table's functions are fakes.
#include <gtest/gtest.h>

#include <cstdlib>
#include <vector>

#include "ort/call_scratch.h"

namespace infllmv2::ort_tests {
namespace {

struct Record {
  std::vector<const OrtKernelContext*> scratch_contexts;
  std::vector<void*> live;
  int plain_allocs = 0, frees = 0, released = 0;
};
Record g_record;

void* ORT_API_CALL PlainAlloc(OrtAllocator*, size_t bytes) noexcept {
  ++g_record.plain_allocs;
  void* p = std::malloc(bytes);
  g_record.live.push_back(p);
  return p;
}
void ORT_API_CALL Free(OrtAllocator*, void* p) noexcept {
  ++g_record.frees;
  for (auto it = g_record.live.begin(); it != g_record.live.end(); ++it)
    if (*it == p) {
      g_record.live.erase(it);
      std::free(p);
      return;
    }
  ADD_FAILURE() << "freed a buffer not handed out";
}
OrtAllocator g_allocator = [] {
  OrtAllocator a{};
  a.version = ORT_API_VERSION;
  a.Alloc = PlainAlloc;
  a.Free = Free;
  return a;
}();

OrtStatus* ORT_API_CALL GetAllocator(const OrtKernelContext*, const OrtMemoryInfo*, OrtAllocator** out) noexcept {
  *out = &g_allocator;
  return nullptr;
}
OrtStatus* ORT_API_CALL GetScratchBuffer(const OrtKernelContext* context, const OrtMemoryInfo*, size_t bytes,
                                         void** out) noexcept {
  g_record.scratch_contexts.push_back(context);
  *out = std::malloc(bytes);
  g_record.live.push_back(*out);
  return nullptr;
}
void ORT_API_CALL ReleaseAllocator(OrtAllocator* a) noexcept {
  EXPECT_EQ(a, &g_allocator);
  ++g_record.released;
}

TEST(CallScratch, BuffersComeFromTheStreamAwareScratchAndGoBack) {
  OrtApi api = *OrtGetApiBase()->GetApi(ORT_API_VERSION);
  api.KernelContext_GetAllocator = GetAllocator;
  api.KernelContext_GetScratchBuffer = GetScratchBuffer;
  api.ReleaseAllocator = ReleaseAllocator;
  g_record = {};
  auto* context = reinterpret_cast<OrtKernelContext*>(&g_record);  // only compared, never used
  {
    ort::CallScratch scratch(api, context, nullptr);
    for (size_t bytes : {100u, 4096u, 16u}) EXPECT_NE(scratch.Get(bytes), nullptr);
    EXPECT_EQ(g_record.plain_allocs, 0);
    EXPECT_EQ(g_record.scratch_contexts, std::vector<const OrtKernelContext*>(3, context));
    EXPECT_EQ(g_record.frees, 0);  // held until the call returns
  }
  EXPECT_EQ(g_record.frees, 3);
  EXPECT_TRUE(g_record.live.empty());
  EXPECT_EQ(g_record.released, 1);
  // A call that needs no scratch takes no allocator.
  g_record = {};
  { ort::CallScratch none(api, context, nullptr); }
  EXPECT_EQ(g_record.released, 0);
}

}  // namespace
}  // namespace infllmv2::ort_tests
