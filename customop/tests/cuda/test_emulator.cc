// The host emulation of the CUDA execution model (src/cuda/emu, src/cuda/primitives.h) on its own:
// thread indices, barriers, shuffles, and the ldmatrix / mma.sync m16n8k16 fragment layouts
// against the PTX ISA tables, written here in the ISA's own form (per register element), not in
// the emulator's inverted form.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/primitives.h"

namespace infllmv2::cuda {
namespace {

// PTX ISA, mma.m16n8k16 with .f16/.bf16: A element i (0..7) of lane (g = lane / 4, t = lane % 4).
int ARow(int lane, int i) { return lane / 4 + ((i == 2 || i == 3 || i == 6 || i == 7) ? 8 : 0); }
int ACol(int lane, int i) { return 2 * (lane % 4) + (i & 1) + (i >= 4 ? 8 : 0); }
// B element i (0..3): row (k) and column (n).
int BRow(int lane, int i) { return 2 * (lane % 4) + (i & 1) + (i >= 2 ? 8 : 0); }
int BCol(int lane, int) { return lane / 4; }
// C/D element i (0..3).
int CRow(int lane, int i) { return lane / 4 + (i >= 2 ? 8 : 0); }
int CCol(int lane, int i) { return 2 * (lane % 4) + (i & 1); }

TEST(Emulator, ThreadAndBlockIndices) {
  std::vector<int> seen(2 * 3 * 64, 0);
  emu::Launch(dim3(2, 3), dim3(32, 2), [&] {
    const unsigned b = blockIdx.y * gridDim.x + blockIdx.x, t = threadIdx.y * blockDim.x + threadIdx.x;
    seen[b * 64 + t] += 1;  // blocks run one at a time: no two threads share an element
  });
  for (int v : seen) EXPECT_EQ(v, 1);
}

TEST(Emulator, SyncThreadsOrdersSharedMemory) {
  std::vector<int> out(4 * 64);
  emu::Launch(dim3(4), dim3(64), [&] {
    IL_SHARED int buf[64];
    const int t = static_cast<int>(threadIdx.x);
    buf[t] = t * 10 + static_cast<int>(blockIdx.x);
    SyncThreads();
    out[blockIdx.x * 64 + t] = buf[63 - t];
    SyncThreads();  // the next block's writes must wait for these reads (runs are sequential anyway)
  });
  for (int b = 0; b < 4; ++b)
    for (int t = 0; t < 64; ++t) EXPECT_EQ(out[b * 64 + t], (63 - t) * 10 + b);
}

TEST(Emulator, ReturnedThreadsDoNotBlockBarriers) {
  std::atomic<int> after{0};
  emu::Launch(dim3(2), dim3(64), [&] {
    if (threadIdx.x >= 40) return;
    SyncThreads();
    after++;
  });
  EXPECT_EQ(after.load(), 80);
}

TEST(Emulator, Shuffles) {
  std::vector<float> xor_out(64), bcast(64);
  std::vector<int> sum(64);
  emu::Launch(dim3(1), dim3(64), [&] {
    const int t = static_cast<int>(threadIdx.x);
    xor_out[t] = ShflXor(static_cast<float>(t), 5);
    bcast[t] = Shfl(static_cast<float>(t * 2), 7);
    int v = t;
    for (int m = 16; m >= 1; m /= 2) v += ShflXor(v, m);  // butterfly sum over the warp
    sum[t] = v;
  });
  for (int t = 0; t < 64; ++t) {
    EXPECT_EQ(xor_out[t], static_cast<float>(t ^ 5));
    EXPECT_EQ(bcast[t], static_cast<float>(((t / 32) * 32 + 7) * 2));
    const int base = (t / 32) * 32;
    EXPECT_EQ(sum[t], 32 * base + 31 * 32 / 2);
  }
}

// ldmatrix x4 (and .trans) of four 8x8 matrices of distinct values: every lane's registers against
// the ISA's rule.
TEST(Emulator, LdMatrixLayout) {
  for (bool trans : {false, true}) {
    std::vector<uint32_t> regs(32 * 4);
    emu::Launch(dim3(1), dim3(32), [&] {
      IL_SHARED uint16_t m[4][8][8 + 8];  // padded rows, as kernels use them
      const int l = static_cast<int>(threadIdx.x);
      for (int e = l; e < 4 * 8 * 8; e += 32) m[e / 64][e / 8 % 8][e % 8] = static_cast<uint16_t>(e);
      SyncThreads();
      uint32_t r[4];
      if (trans)
        LdMatrixX4Trans(r, &m[l / 8][l % 8][0]);
      else
        LdMatrixX4(r, &m[l / 8][l % 8][0]);
      std::memcpy(&regs[l * 4], r, 16);
    });
    for (int l = 0; l < 32; ++l)
      for (int j = 0; j < 4; ++j)
        for (int half = 0; half < 2; ++half) {
          const int row = trans ? 2 * (l % 4) + half : l / 4, col = trans ? l / 4 : 2 * (l % 4) + half;
          const uint16_t got = static_cast<uint16_t>(half ? regs[l * 4 + j] >> 16 : regs[l * 4 + j]);
          EXPECT_EQ(got, j * 64 + row * 8 + col) << "trans=" << trans << " lane " << l << " reg " << j;
        }
  }
}

// D = A B + C with registers filled per the ISA tables from random 16x16 / 16x8 matrices, against
// a plain product; fp16 and bf16.
template <class T>
void CheckMma() {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  float A[16][16], B[16][8], C[16][8];
  for (auto& r : A)
    for (auto& x : r) x = ToFloat(FromFloat<T>(u(rng)));
  for (auto& r : B)
    for (auto& x : r) x = ToFloat(FromFloat<T>(u(rng)));
  for (auto& r : C)
    for (auto& x : r) x = u(rng);
  std::vector<float> D(32 * 4);
  emu::Launch(dim3(1), dim3(32), [&] {
    const int l = static_cast<int>(threadIdx.x);
    uint32_t a[4], b[2];
    float c[4], d[4];
    for (int i = 0; i < 8; i += 2) a[i / 2] = Pack2<T>(A[ARow(l, i)][ACol(l, i)], A[ARow(l, i + 1)][ACol(l, i + 1)]);
    for (int i = 0; i < 4; i += 2) b[i / 2] = Pack2<T>(B[BRow(l, i)][BCol(l, i)], B[BRow(l, i + 1)][BCol(l, i + 1)]);
    for (int i = 0; i < 4; ++i) c[i] = C[CRow(l, i)][CCol(l, i)];
    Mma16816<T>(d, a, b, c);
    std::memcpy(&D[l * 4], d, 16);
  });
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      const int r = CRow(l, i), n = CCol(l, i);
      double want = C[r][n];
      for (int k = 0; k < 16; ++k) want += double{A[r][k]} * B[k][n];
      EXPECT_NEAR(D[l * 4 + i], want, 1e-4) << "lane " << l << " element " << i;
    }
}
TEST(Emulator, MmaLayoutFp16) { CheckMma<Float16>(); }
TEST(Emulator, MmaLayoutBf16) { CheckMma<BFloat16>(); }

// ldmatrix feeding mma as the kernels do: Q (16x16, row-major) via x4 as A, K (8 keys x 16,
// row-major) via x4 as B of S = Q K^T (two 8-key tiles), V (16 keys x 8) via x4.trans as B of P V.
TEST(Emulator, LdMatrixFeedsMma) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  float Q[16][16], K[16][16], V[16][16];
  for (auto& r : Q)
    for (auto& x : r) x = ToFloat(FromFloat<Float16>(u(rng)));
  for (auto& r : K)
    for (auto& x : r) x = ToFloat(FromFloat<Float16>(u(rng)));
  for (auto& r : V)
    for (auto& x : r) x = ToFloat(FromFloat<Float16>(u(rng)));
  std::vector<float> S(32 * 8), O(32 * 8);
  emu::Launch(dim3(1), dim3(32), [&] {
    IL_SHARED Float16 q[16][24], k[16][24], v[16][24];
    const int l = static_cast<int>(threadIdx.x);
    for (int e = l; e < 256; e += 32) {
      q[e / 16][e % 16] = FromFloat<Float16>(Q[e / 16][e % 16]);
      k[e / 16][e % 16] = FromFloat<Float16>(K[e / 16][e % 16]);
      v[e / 16][e % 16] = FromFloat<Float16>(V[e / 16][e % 16]);
    }
    SyncThreads();
    uint32_t a[4], b[4], vb[4];
    LdMatrixX4(a, &q[l % 16][8 * (l / 16)]);
    LdMatrixX4(b, &k[(l % 8) + 8 * (l / 16)][8 * ((l / 8) % 2)]);        // keys 0-7: b[0..1], keys 8-15: b[2..3]
    LdMatrixX4Trans(vb, &v[(l % 8) + 8 * ((l / 8) % 2)][8 * (l / 16)]);  // d 0-7: vb[0..1], d 8-15: vb[2..3]
    float zero[4] = {0, 0, 0, 0}, s0[4], s1[4], o0[4], o1[4];
    Mma16816<Float16>(s0, a, b, zero);
    Mma16816<Float16>(s1, a, b + 2, zero);
    Mma16816<Float16>(o0, a, vb, zero);  // Q (as P) x V: d 0-7
    Mma16816<Float16>(o1, a, vb + 2, zero);
    std::memcpy(&S[l * 8], s0, 16);
    std::memcpy(&S[l * 8 + 4], s1, 16);
    std::memcpy(&O[l * 8], o0, 16);
    std::memcpy(&O[l * 8 + 4], o1, 16);
  });
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 8; ++i) {
      const int r = CRow(l, i % 4), n = CCol(l, i % 4) + 8 * (i / 4);
      double s = 0, o = 0;
      for (int x = 0; x < 16; ++x) {
        s += double{Q[r][x]} * K[n][x];
        o += double{Q[r][x]} * V[x][n];
      }
      EXPECT_NEAR(S[l * 8 + i], s, 1e-4) << "S lane " << l;
      EXPECT_NEAR(O[l * 8 + i], o, 1e-4) << "O lane " << l;
    }
}

TEST(Emulator, CpAsyncZeroFillsTail) {
  std::vector<uint8_t> src(16);
  for (int i = 0; i < 16; ++i) src[i] = static_cast<uint8_t>(i + 1);
  std::vector<uint8_t> out(32 * 16);
  emu::Launch(dim3(1), dim3(32), [&] {
    IL_SHARED uint8_t buf[32][16];
    const int l = static_cast<int>(threadIdx.x);
    CpAsync16(buf[l], src.data(), l % 17);
    CpAsyncCommit();
    CpAsyncWait<0>();
    SyncThreads();
    std::memcpy(&out[l * 16], buf[l], 16);
  });
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 16; ++i) EXPECT_EQ(out[l * 16 + i], i < l % 17 ? i + 1 : 0);
}

TEST(Emulator, Bf16RoundsToNearestEven) {
  EXPECT_EQ(FromFloat<BFloat16>(1.0f).bits, 0x3f80);
  EXPECT_EQ(FromFloat<BFloat16>(BitsToFloat(0x3f808000u)).bits, 0x3f80);  // tie -> even
  EXPECT_EQ(FromFloat<BFloat16>(BitsToFloat(0x3f818000u)).bits, 0x3f82);  // tie -> even (up)
  EXPECT_EQ(FromFloat<BFloat16>(BitsToFloat(0x3f808001u)).bits, 0x3f81);
  EXPECT_EQ(ToFloat(BFloat16{0xc000}), -2.0f);
}

// The per-launch work counts (emu::LaunchCounts): a kernel of 3 CTAs x 2 warps, each warp one mma
// per CTA and each thread one cp.async of 16 bytes (lanes >= 16 zero-filling: 0 bytes), one 8-byte
// LoadGlobal and one 4-byte StoreGlobal; a second, named launch logged apart; nothing is logged
// after RecordCounts(nullptr).
TEST(Emulator, WorkCountsPerLaunch) {
  alignas(16) static uint16_t global[64 * 8];
  static uint64_t words[64];
  static float out[3 * 64];
  std::vector<emu::LaunchCounts> log;
  emu::RecordCounts(&log);
  emu::Launch(dim3(3), dim3(64), [&] {
    alignas(16) IL_SHARED uint16_t shared[64 * 8];
    const int t = static_cast<int>(threadIdx.x);
    CpAsync16(&shared[8 * t], &global[8 * t], t % 32 < 16 ? 16 : 0);
    const uint32_t a[4] = {}, b[2] = {};
    const float c[4] = {};
    float d[4];
    Mma16816<Float16>(d, a, b, c);
    const uint64_t w = LoadGlobal(&words[t]);
    StoreGlobal(&out[blockIdx.x * 64 + t], d[0] + static_cast<float>(w));
  });
  emu::NameNextLaunch("Second");
  emu::Launch(dim3(1), dim3(32), [&] { StoreGlobal(&out[threadIdx.x], 1.0f); });
  emu::RecordCounts(nullptr);
  emu::Launch(dim3(1), dim3(32), [&] {});
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].kernel, "");
  EXPECT_EQ(log[0].ctas, 3u);
  EXPECT_EQ(log[0].mma, 3u * 2);
  EXPECT_EQ(log[0].cp_async, 3u * 64);
  EXPECT_EQ(log[0].cp_async_bytes, 3u * 32 * 16);
  EXPECT_EQ(log[0].load_bytes, 3u * 64 * 8);
  EXPECT_EQ(log[0].store_bytes, 3u * 64 * 4);
  EXPECT_EQ(log[1].kernel, "Second");
  EXPECT_EQ(log[1].ctas, 1u);
  EXPECT_EQ(log[1].mma, 0u);
  EXPECT_EQ(log[1].store_bytes, 32u * 4);
}

// cp.async and ldmatrix fault on the hardware when an address is not 16-byte aligned: the
// emulation aborts, naming the instruction.
TEST(EmulatorDeathTest, MisalignedCpAsyncAndLdMatrixAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  alignas(16) static uint16_t global[64];
  auto copy_from = [](const void* src) {
    emu::Launch(dim3(1), dim3(32), [&] {
      alignas(16) IL_SHARED uint16_t shared[32 * 8];
      CpAsync16(&shared[8 * threadIdx.x], src, 16);
    });
  };
  copy_from(global);  // aligned: fine
  EXPECT_DEATH(copy_from(reinterpret_cast<const char*>(global) + 2), "cp.async global source .* not 16-byte aligned");
  auto load_rows = [](int offset) {
    emu::Launch(dim3(1), dim3(32), [&] {
      alignas(16) IL_SHARED uint16_t shared[32 * 8 + 8];
      uint32_t r[4];
      LdMatrixX4(r, &shared[8 * threadIdx.x + offset]);
    });
  };
  load_rows(0);
  EXPECT_DEATH(load_rows(1), "ldmatrix row .* not 16-byte aligned");
}

}  // namespace
}  // namespace infllmv2::cuda
