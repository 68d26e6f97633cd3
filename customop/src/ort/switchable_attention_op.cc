#include "ort/switchable_attention_op.h"

#include <exception>
#include <functional>
#include <string>

#include "common/check_inputs.h"
#include "common/float16.h"
#include "cpu/attention_cpu.h"

namespace infllmv2::ort {
namespace {

void TrampolineFor(void* fn, size_t i) { (*static_cast<const std::function<void(size_t)>*>(fn))(i); }

}  // namespace

template <typename T>
OrtStatusPtr CpuKernel<T>::ComputeV2(OrtKernelContext* context) {
  return StatusOf([&]() -> std::string {
    Ort::KernelContext ctx(context);
    CallIo<T> io;
    std::string err = ReadCall<T>(context, attrs, &io);
    if (!err.empty()) return err;
    cpu::ParallelFor pf = [&ctx](size_t total, const std::function<void(size_t)>& fn) {
      if (total == 1) {
        fn(0);
        return;
      }
      ctx.ParallelFor(&TrampolineFor, total, 0, const_cast<std::function<void(size_t)>*>(&fn));
    };
    return cpu::RunAttention<T>(attrs, io.params, io.data, pf);
  });
}

template struct CpuOp<float>;
template struct CpuOp<Float16>;
template struct CpuKernel<float>;
template struct CpuKernel<Float16>;

}  // namespace infllmv2::ort
