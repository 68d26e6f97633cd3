// Prints the attention tile traits (kernel_traits.h) the SASS check compares the kernels with: one
// line per (head size, variant): D, "true"/"false" (decode), threads, CTAs per SM, dynamic shared
// bytes.
#include <cstdio>

#include "cuda/kernel_traits.h"

namespace {

template <int D, bool kDecode>
void Print() {
  using Tr = infllmv2::cuda::AttnTraits<2, D, kDecode>;
  std::printf("%d %s %d %d %d\n", D, kDecode ? "true" : "false", Tr::kThreads, Tr::kMinCtasPerSm, Tr::kSmemBytes);
}

template <int D>
void Both() {
  Print<D, false>();
  Print<D, true>();
}

}  // namespace

int main() {
  Both<64>();
  Both<96>();
  Both<128>();
  Both<256>();
  return 0;
}
