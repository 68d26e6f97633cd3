#include "cpu/cache_write.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace infllmv2::cpu {

template <typename T>
void WriteKeyValueCache(const Call<T>& c, const ParallelFor& pf) {
  const auto& p = c.p;
  const int64_t D = p.head_size, cap = p.present_capacity;
  pf(static_cast<size_t>(p.batch * p.kv_num_heads), [&](size_t bh) {
    const int64_t b = static_cast<int64_t>(bh) / p.kv_num_heads, h = static_cast<int64_t>(bh) % p.kv_num_heads;
    T* pk = c.d.present_key + c.CacheOffset(b, h, cap);
    T* pv = c.d.present_value + c.CacheOffset(b, h, cap);
    const int64_t past = c.Past(b);
    if (!c.rules.kv_in_place) {
      std::memset(static_cast<void*>(pk), 0, sizeof(T) * static_cast<size_t>(cap * D));
      std::memset(static_cast<void*>(pv), 0, sizeof(T) * static_cast<size_t>(cap * D));
      if (past > 0) {
        std::memcpy(pk, c.d.past_key + c.CacheOffset(b, h, p.past_capacity), sizeof(T) * static_cast<size_t>(past * D));
        std::memcpy(pv, c.d.past_value + c.CacheOffset(b, h, p.past_capacity),
                    sizeof(T) * static_cast<size_t>(past * D));
      }
    }
    std::vector<float> row(static_cast<size_t>(D)), cs(static_cast<size_t>(p.rotary_dim));
    for (int64_t s = 0; s < p.seq_len; ++s) {
      const int64_t at = past + s;
      std::memcpy(pv + at * D, c.ValueInput(b, s, h), sizeof(T) * static_cast<size_t>(D));
      const T* k = c.KeyInput(b, s, h);
      if (!c.a.do_rotary) {
        std::memcpy(pk + at * D, k, sizeof(T) * static_cast<size_t>(D));
        continue;
      }
      const int64_t half = p.rotary_dim / 2, pos = c.RotaryPosition(b, s);
      ToFloatRow(c.d.cos_cache + pos * half, cs.data(), half);
      ToFloatRow(c.d.sin_cache + pos * half, cs.data() + half, half);
      ToFloatRow(k, row.data(), D);
      ApplyRotary(row.data(), p.rotary_dim, c.a.rotary_interleaved != 0, cs.data(), cs.data() + half);
      for (int64_t i = 0; i < D; ++i) pk[at * D + i] = FromFloat<T>(row[i]);
    }
  });
}

template <typename T>
void WriteCompressedKeys(const Call<T>& c, T* out, const ParallelFor& pf) {
  const auto& p = c.p;
  const auto& a = c.a;
  const int64_t D = p.head_size, capacity = c.rules.compressed_capacity;
  pf(static_cast<size_t>(p.batch * p.kv_num_heads), [&](size_t bh) {
    const int64_t b = static_cast<int64_t>(bh) / p.kv_num_heads, h = static_cast<int64_t>(bh) % p.kv_num_heads;
    const EntryPlan& e = c.Entry(b);
    T* dst = out + c.CacheOffset(b, h, capacity);
    const T* keys = c.d.present_key + c.CacheOffset(b, h, p.present_capacity);
    if (!c.rules.compressed_in_place) {
      std::memset(static_cast<void*>(dst), 0, sizeof(T) * static_cast<size_t>(capacity * D));
      if (e.past_windows > 0)
        std::memcpy(dst, c.d.past_compressed_key + c.CacheOffset(b, h, p.past_compressed_capacity),
                    sizeof(T) * static_cast<size_t>(e.past_windows * D));
    }
    std::vector<float> sum(static_cast<size_t>(D));
    const float inv = 1.0f / static_cast<float>(a.compress_kernel);
    for (int64_t j = e.past_windows; j < e.windows; ++j) {
      std::fill(sum.begin(), sum.end(), 0.0f);
      for (int64_t t = j * a.compress_stride; t < j * a.compress_stride + a.compress_kernel; ++t)
        for (int64_t i = 0; i < D; ++i) sum[i] += ToFloat(keys[t * D + i]);
      for (int64_t i = 0; i < D; ++i) dst[j * D + i] = FromFloat<T>(sum[i] * inv);
    }
  });
}

template void WriteKeyValueCache<float>(const Call<float>&, const ParallelFor&);
template void WriteKeyValueCache<Float16>(const Call<Float16>&, const ParallelFor&);
template void WriteCompressedKeys<float>(const Call<float>&, float*, const ParallelFor&);
template void WriteCompressedKeys<Float16>(const Call<Float16>&, Float16*, const ParallelFor&);

}  // namespace infllmv2::cpu
