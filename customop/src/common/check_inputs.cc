#include "check_inputs.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "common/call_rules.h"

namespace infllmv2 {
namespace {

std::string DimsToString(const std::vector<int64_t>& dims) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < dims.size(); ++i) s << (i ? "," : "") << dims[i];
  s << "]";
  return s.str();
}

template <typename... Parts>
std::string Msg(const Parts&... parts) {
  std::ostringstream s;
  (s << ... << parts);
  return s.str();
}

// Checks rank and every fixed dimension (-1 = any). Returns "" when it matches.
std::string ExpectShape(const char* name, const InputShape& in, const std::vector<int64_t>& want,
                        const char* want_text) {
  bool ok = in.dims.size() == want.size();
  for (size_t i = 0; ok && i < want.size(); ++i) ok = want[i] < 0 || in.dims[i] == want[i];
  if (ok) return "";
  return Msg("Input '", name, "': expected shape ", want_text, " = ", DimsToString(want), " (-1 = any), got ",
             DimsToString(in.dims));
}

bool IsScalarLike(const InputShape& s) { return s.dims.empty() || (s.dims.size() == 1 && s.dims[0] == 1); }

}  // namespace

bool SeqlensShapeOk(const InputShape& s, int64_t batch) {
  return (s.dims.size() == 1 && s.dims[0] == batch) || (s.dims.size() == 2 && s.dims[0] == batch && s.dims[1] == 1);
}

std::string CheckAttributes(const AttentionAttributes& a) {
  if (a.num_heads <= 0 || a.num_heads > kMaxHeads)
    return Msg("Attribute 'num_heads' must be in [1, ", kMaxHeads, "], got ", a.num_heads);
  if (a.kv_num_heads <= 0 || a.kv_num_heads > kMaxHeads)
    return Msg("Attribute 'kv_num_heads' must be in [1, ", kMaxHeads, "], got ", a.kv_num_heads);
  if (a.num_heads % a.kv_num_heads != 0)
    return Msg("Attribute 'num_heads' (", a.num_heads, ") must be a multiple of 'kv_num_heads' (", a.kv_num_heads, ")");
  if (!(a.scale >= 0.0f) || std::isinf(a.scale))
    return Msg("Attribute 'scale' must be finite and >= 0 (0 = 1/sqrt(head_size)), got ", a.scale);
  if (!(a.softcap >= 0.0f) || std::isinf(a.softcap))
    return Msg("Attribute 'softcap' must be finite and >= 0, got ", a.softcap);
  if (a.do_rotary != 0 && a.do_rotary != 1) return Msg("Attribute 'do_rotary' must be 0 or 1, got ", a.do_rotary);
  if (a.rotary_interleaved != 0 && a.rotary_interleaved != 1)
    return Msg("Attribute 'rotary_interleaved' must be 0 or 1, got ", a.rotary_interleaved);
  if (a.local_window_size != -1 && a.local_window_size <= 0)
    return Msg("Attribute 'local_window_size' must be -1 or > 0, got ", a.local_window_size);
  if (a.local_window_size > kMaxTokens)
    return Msg("Attribute 'local_window_size' must be <= ", kMaxTokens, " (int32 positions), got ",
               a.local_window_size);
  if (a.compress_stride <= 0 || a.compress_stride > kMaxBlockTokens)
    return Msg("Attribute 'compress_stride' must be in [1, ", kMaxBlockTokens, "], got ", a.compress_stride);
  if (a.compress_kernel < a.compress_stride || a.compress_kernel % a.compress_stride != 0 ||
      a.compress_kernel > kMaxBlockTokens)
    return Msg("Attribute 'compress_kernel' must be a multiple of 'compress_stride' (", a.compress_stride,
               ") and <= ", kMaxBlockTokens, ", got ", a.compress_kernel);
  if (a.block_size <= 0 || a.block_size % a.compress_stride != 0 || a.block_size > kMaxBlockTokens)
    return Msg("Attribute 'block_size' must be a positive multiple of 'compress_stride' (", a.compress_stride,
               ") and <= ", kMaxBlockTokens, ", got ", a.block_size);
  if (a.init_blocks < 0) return Msg("Attribute 'init_blocks' must be >= 0, got ", a.init_blocks);
  if (a.window_size < 0 || a.window_size % a.block_size != 0 || a.window_size > kMaxTokens)
    return Msg("Attribute 'window_size' must be a non-negative multiple of 'block_size' (", a.block_size,
               ") and <= ", kMaxTokens, ", got ", a.window_size);
  if (a.topk < a.init_blocks + 1)
    return Msg("Attribute 'topk' must be >= init_blocks + 1 (", a.init_blocks + 1,
               ") so that the init and local blocks fit the budget, got ", a.topk);
  if (a.topk > kMaxBudget || a.Budget() > kMaxBudget)
    return Msg(
        "Attribute 'topk' plus 'window_size' / 'block_size' (the budget K, blocks per selected_blocks row) "
        "must be <= ",
        kMaxBudget, ", got topk ", a.topk, " + ", a.LocalBlocks());
  if ((a.dense_len != -1 && a.dense_len < 0) || a.dense_len > kMaxTokens)
    return Msg("Attribute 'dense_len' must be -1 or in [0, ", kMaxTokens, "], got ", a.dense_len);
  if (a.lse_approx != 0 && a.lse_approx != 1) return Msg("Attribute 'lse_approx' must be 0 or 1, got ", a.lse_approx);
  if (a.score_precision != 0 && a.score_precision != 1)
    return Msg("Attribute 'score_precision' must be 0 (fp32 stage-1 scores) or 1 (bf16, as the official kernel), got ",
               a.score_precision);
  return "";
}

std::string CheckInputs(const AttentionAttributes& a, const AttentionInputs& in, AttentionParams* p) {
  *p = AttentionParams{};
  p->num_heads = a.num_heads;
  p->kv_num_heads = a.kv_num_heads;
  p->group = a.num_heads / a.kv_num_heads;
  p->budget = a.Budget();

  // query: [B, S, H*D] or packed [B, S, (H + 2 Hkv) * D]
  if (!in.query.present) return "Input 'query' is required";
  if (in.query.dims.size() != 3)
    return Msg("Input 'query': expected rank 3 [batch, sequence, hidden], got ", DimsToString(in.query.dims));
  p->batch = in.query.dims[0];
  p->seq_len = in.query.dims[1];
  if (p->batch <= 0 || p->seq_len <= 0)
    return Msg("Input 'query': batch and sequence must be > 0, got ", DimsToString(in.query.dims));
  if (in.key.present != in.value.present) return "Inputs 'key' and 'value' must be given together or both omitted";
  p->packed_qkv = !in.key.present;
  const int64_t hidden = in.query.dims[2];
  const int64_t heads_in_query = p->packed_qkv ? a.num_heads + 2 * a.kv_num_heads : a.num_heads;
  if (hidden % heads_in_query != 0)
    return Msg("Input 'query': dim 2 (", hidden, ") must be a multiple of ", heads_in_query,
               p->packed_qkv ? " (num_heads + 2 * kv_num_heads, packed QKV)" : " (num_heads)");
  p->head_size = hidden / heads_in_query;
  const int64_t D = p->head_size;
  if (D % 8 != 0 || D > 256)
    return Msg("Head size must be a multiple of 8 and <= 256, got ", D, " (from input 'query' dim 2 = ", hidden, ")");

  const int64_t B = p->batch, S = p->seq_len, Hkv = a.kv_num_heads;
  if (!p->packed_qkv) {
    std::string e = ExpectShape("key", in.key, {B, S, Hkv * D}, "[batch, sequence, kv_num_heads * head_size]");
    if (!e.empty()) return e;
    e = ExpectShape("value", in.value, {B, S, Hkv * D}, "[batch, sequence, kv_num_heads * head_size]");
    if (!e.empty()) return e;
  }

  // total_sequence_length: int32 scalar on the host
  if (!in.total_sequence_length.present) return "Input 'total_sequence_length' is required";
  if (!IsScalarLike(in.total_sequence_length))
    return Msg("Input 'total_sequence_length': expected a scalar or shape [1], got ",
               DimsToString(in.total_sequence_length.dims));
  p->total_sequence_length = in.total_sequence_length_value;
  if (p->total_sequence_length < S)
    return Msg("Input 'total_sequence_length' (", p->total_sequence_length, ") must be >= the query sequence length (",
               S, ")");
  p->is_first_prompt = p->total_sequence_length == S;

  // past_key / past_value: [B, Hkv, P, D]
  if (in.past_key.present != in.past_value.present)
    return "Inputs 'past_key' and 'past_value' must be given together or both omitted";
  p->has_past = in.past_key.present;
  if (p->has_past) {
    std::string e = ExpectShape("past_key", in.past_key, {B, Hkv, -1, D}, "[batch, kv_num_heads, past, head_size]");
    if (!e.empty()) return e;
    p->past_capacity = in.past_key.dims[2];
    e = ExpectShape("past_value", in.past_value, {B, Hkv, p->past_capacity, D},
                    "[batch, kv_num_heads, past, head_size]");
    if (!e.empty()) return e;
  }
  p->present_capacity = std::max(p->total_sequence_length, p->past_capacity);

  // seqlens_k: int32 [B], total - 1 per batch entry
  if (!in.seqlens_k.present) return "Input 'seqlens_k' is required";
  if (!SeqlensShapeOk(in.seqlens_k, B))  // [B], or [B, 1] as ReduceSum(mask, keepdims=1) gives (GQA accepts it)
    return Msg("Input 'seqlens_k': expected shape [batch] = [", B, "] (or [", B, ",1]), got ",
               DimsToString(in.seqlens_k.dims));
  // cos_cache / sin_cache: [max_position, rotary_dim / 2]
  if (a.do_rotary) {
    if (!in.cos_cache.present || !in.sin_cache.present)
      return "Attribute do_rotary=1 requires inputs 'cos_cache' and 'sin_cache'";
    if (in.cos_cache.dims.size() != 2)
      return Msg("Input 'cos_cache': expected rank 2 [max_position, rotary_dim / 2], got ",
                 DimsToString(in.cos_cache.dims));
    std::string e = ExpectShape("sin_cache", in.sin_cache, in.cos_cache.dims, "equal to cos_cache's");
    if (!e.empty()) return e;
    p->max_position = in.cos_cache.dims[0];
    p->rotary_dim = 2 * in.cos_cache.dims[1];
    if (p->rotary_dim <= 0 || p->rotary_dim > D)
      return Msg("Input 'cos_cache': dim 1 (", in.cos_cache.dims[1], ") must be in [1, head_size / 2 = ", D / 2, "]");
    if (p->max_position < p->total_sequence_length)
      return Msg("Input 'cos_cache': dim 0 (", p->max_position, ") must be >= total_sequence_length (",
                 p->total_sequence_length, ")");
  }

  // past_compressed_key: [B, Hkv, C, D]
  p->has_past_compressed = in.past_compressed_key.present;
  if (p->has_past_compressed) {
    std::string e = ExpectShape("past_compressed_key", in.past_compressed_key, {B, Hkv, -1, D},
                                "[batch, kv_num_heads, compressed, head_size]");
    if (!e.empty()) return e;
    p->past_compressed_capacity = in.past_compressed_key.dims[2];
  }
  p->present_compressed_capacity =
      std::max(p->past_compressed_capacity, NumWindows(p->total_sequence_length, a.compress_kernel, a.compress_stride));

  // attention_mode: int32 scalar on the host
  if (in.attention_mode.present) {
    if (!IsScalarLike(in.attention_mode))
      return Msg("Input 'attention_mode': expected a scalar or shape [1], got ", DimsToString(in.attention_mode.dims));
    if (in.attention_mode_value < 0 || in.attention_mode_value > 2)
      return Msg("Input 'attention_mode' must be 0 (auto), 1 (dense) or 2 (sparse), got ", in.attention_mode_value);
    p->mode = static_cast<AttentionMode>(in.attention_mode_value);
  }

  p->scale = a.scale == 0.0f ? 1.0f / std::sqrt(static_cast<float>(D)) : a.scale;

  // seqlens_k values, when on the host: the length rule the device kernels apply (LengthFaultOf).
  if (in.seqlens_k_data != nullptr) {
    const CallRules r = MakeCallRules(a, *p, BufferFacts{});
    for (int64_t b = 0; b < B; ++b) {
      const int64_t total = TotalLength(in.seqlens_k_data, b), past = total - S;
      switch (LengthFaultOf(r, total)) {
        case LengthFault::kNone:
          break;
        case LengthFault::kOutOfRange:
          return Msg("Input 'seqlens_k'[", b, "] = ", in.seqlens_k_data[b], ": total length ", total,
                     " must be in [1, total_sequence_length = ", p->total_sequence_length, "]");
        case LengthFault::kShorterThanNew:
          return Msg("Input 'seqlens_k'[", b, "] = ", in.seqlens_k_data[b], ": total length ", total,
                     " is shorter than the ", S, " new tokens");
        case LengthFault::kPastTooLong:
          if (!p->has_past)
            return Msg("Input 'seqlens_k'[", b, "] implies ", past, " past tokens but 'past_key' is absent");
          return Msg("Input 'seqlens_k'[", b, "] implies ", past, " past tokens but 'past_key' holds only ",
                     p->past_capacity);
        case LengthFault::kPastWindowsTooMany:
          return Msg("Input 'past_compressed_key': batch ", b, " has ", past,
                     " past tokens = ", NumWindows(past, a.compress_kernel, a.compress_stride),
                     " complete windows, but dim 2 is ", p->past_compressed_capacity);
      }
    }
  }
  return "";
}

}  // namespace infllmv2
