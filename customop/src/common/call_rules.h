// Every per-call rule of SwitchableAttention, written once for the host and the device
// (docs/op-spec.md): the call's sizes and buffer facts as plain data (CallRules, built on the
// host), the decisions derived from them per batch entry and per token (mode, window counts,
// budget, dense first key, selection bounds, rank key), and the addressing of the buffers. The CPU
// kernel applies them to host seqlens_k (call_plan.cc); the CUDA kernels apply the same functions
// on the device, where seqlens_k lives.
#pragma once

#include <cstdint>

#include "common/host_device.h"
#include "infllmv2/attention_data.h"
#include "infllmv2/attention_params.h"

namespace infllmv2 {

// What the rules need to know about one call's buffers: which optional outputs exist and which
// outputs alias inputs (pointer equality: the caller bound one buffer as both). Nothing is read.
struct BufferFacts {
  bool has_required_outputs = false;    // output, present_key and present_value given
  bool has_seqlens = false;             // seqlens_k given
  bool key_in_place = false;            // present_key == past_key
  bool value_in_place = false;          // present_value == past_value
  bool has_present_compressed = false;  // output 3 requested
  bool compressed_in_place = false;     // present_compressed_key == past_compressed_key
  bool has_selected_blocks = false;     // output 4 requested
};

template <typename T>
BufferFacts FactsOf(const AttentionData<T>& d, const AttentionParams& p) {
  BufferFacts f;
  f.has_required_outputs = d.output != nullptr && d.present_key != nullptr && d.present_value != nullptr;
  f.has_seqlens = d.seqlens_k != nullptr;
  f.key_in_place = p.has_past && d.present_key == d.past_key;
  f.value_in_place = p.has_past && d.present_value == d.past_value;
  f.has_present_compressed = d.present_compressed_key != nullptr;
  f.compressed_in_place =
      p.has_past_compressed && f.has_present_compressed && d.present_compressed_key == d.past_compressed_key;
  f.has_selected_blocks = d.selected_blocks != nullptr;
  return f;
}

// The call-wide facts every rule reads: attributes, checked params and buffer facts, no lengths.
// Plain data, passed by value to every CUDA kernel.
struct CallRules {
  int batch, seq_len, num_heads, kv_num_heads, group, head_size;
  int past_capacity, present_capacity, past_compressed_capacity, total_sequence_length;
  int compressed_capacity;  // rows per (b, h) of the buffer that holds the level-1 compressed keys
  int rotary_dim;
  bool packed_qkv, is_first_prompt, do_rotary, rotary_interleaved;
  float scale, softcap;
  AttentionMode mode;
  int64_t dense_len;
  int local_window;  // local_window_size (-1 off)
  int block_size, compress_kernel, compress_stride, init_blocks, local_blocks, budget, lse_approx;
  int score_precision;  // 1: group sums rounded to bf16 before pooling
  bool kv_in_place, compressed_in_place;
  bool past_compressed_given;  // past_compressed_key given and not a first prompt
};

// Number of complete windows of length `kernel` at `stride` in `length` tokens.
IL_HD int64_t NumWindows(int64_t length, int64_t kernel, int64_t stride) {
  return length < kernel ? 0 : (length - kernel) / stride + 1;
}

// Level-1 compressed keys go to present_compressed_key when it is requested, else to a buffer the
// backend owns, with a row per window of total_sequence_length (at least one).
inline int64_t CompressedCapacity(const AttentionAttributes& a, const AttentionParams& p, bool has_present_compressed) {
  if (has_present_compressed) return p.present_compressed_capacity;
  const int64_t rows = NumWindows(p.total_sequence_length, a.compress_kernel, a.compress_stride);
  return rows > 1 ? rows : 1;
}

inline CallRules MakeCallRules(const AttentionAttributes& a, const AttentionParams& p, const BufferFacts& f) {
  CallRules r{};
  r.batch = static_cast<int>(p.batch);
  r.seq_len = static_cast<int>(p.seq_len);
  r.num_heads = static_cast<int>(p.num_heads);
  r.kv_num_heads = static_cast<int>(p.kv_num_heads);
  r.group = static_cast<int>(p.group);
  r.head_size = static_cast<int>(p.head_size);
  r.past_capacity = static_cast<int>(p.past_capacity);
  r.present_capacity = static_cast<int>(p.present_capacity);
  r.past_compressed_capacity = static_cast<int>(p.past_compressed_capacity);
  r.total_sequence_length = static_cast<int>(p.total_sequence_length);
  r.compressed_capacity = static_cast<int>(CompressedCapacity(a, p, f.has_present_compressed));
  r.rotary_dim = static_cast<int>(p.rotary_dim);
  r.packed_qkv = p.packed_qkv;
  r.is_first_prompt = p.is_first_prompt;
  r.do_rotary = a.do_rotary != 0;
  r.rotary_interleaved = a.rotary_interleaved != 0;
  r.scale = p.scale;
  r.softcap = a.softcap;
  r.mode = p.mode;
  r.dense_len = a.dense_len;
  r.local_window = static_cast<int>(a.local_window_size);
  r.block_size = static_cast<int>(a.block_size);
  r.compress_kernel = static_cast<int>(a.compress_kernel);
  r.compress_stride = static_cast<int>(a.compress_stride);
  r.init_blocks = static_cast<int>(a.init_blocks);
  r.local_blocks = static_cast<int>(a.LocalBlocks());
  r.budget = static_cast<int>(p.budget);
  r.lse_approx = static_cast<int>(a.lse_approx);
  r.score_precision = static_cast<int>(a.score_precision);
  r.kv_in_place = f.key_in_place;
  r.compressed_in_place = f.compressed_in_place;
  r.past_compressed_given = p.has_past_compressed && !p.is_first_prompt;
  return r;
}

// Valid keys of entry b after this call (GQA's rule): seqlens_k[b] + 1.
IL_HD int64_t TotalLength(const int32_t* seqlens_k, int64_t b) { return int64_t{seqlens_k[b]} + 1; }

// The mode of an entry with `total` valid keys: forced modes win; in auto mode sparse iff
// dense_len == -1 or total >= dense_len (monotone in total).
IL_HD bool UseSparse(const CallRules& r, int64_t total) {
  if (r.mode == AttentionMode::kForceDense) return false;
  if (r.mode == AttentionMode::kForceSparse) return true;
  return r.dense_len == -1 || total >= r.dense_len;
}

// A sparse token at position `pos` whose blocks 0..pos/Bk exceed the budget (else it takes them
// all and needs no stage 1).
IL_HD bool OutgrowsBudget(const CallRules& r, int64_t pos) { return pos / r.block_size + 1 > r.budget; }

// First key a dense token at `pos` attends to (local_window_size; 0 when off).
IL_HD int64_t DenseFirstKey(const CallRules& r, int64_t pos) {
  return r.local_window > 0 && pos - r.local_window + 1 > 0 ? pos - r.local_window + 1 : 0;
}

// What is wrong with an entry's total length (seqlens_k + 1) for the call's buffers, if anything:
// CheckInputs refuses these on the host; where seqlens_k is read on the device the entry is
// planned as invalid instead (PlanEntry), so that no kernel reads or writes outside a buffer.
enum class LengthFault : int {
  kNone = 0,
  kOutOfRange,         // total not in [1, total_sequence_length]
  kShorterThanNew,     // fewer than the S new tokens (not a first prompt)
  kPastTooLong,        // total - S past tokens exceed past_key's capacity
  kPastWindowsTooMany  // the past's complete windows exceed past_compressed_key's capacity
};

IL_HD LengthFault LengthFaultOf(const CallRules& r, int64_t total) {
  if (total < 1 || total > r.total_sequence_length) return LengthFault::kOutOfRange;
  if (r.is_first_prompt) return LengthFault::kNone;
  if (total < r.seq_len) return LengthFault::kShorterThanNew;
  const int64_t past = total - r.seq_len;
  if (past > r.past_capacity) return LengthFault::kPastTooLong;
  if (r.past_compressed_given && NumWindows(past, r.compress_kernel, r.compress_stride) > r.past_compressed_capacity)
    return LengthFault::kPastWindowsTooMany;
  return LengthFault::kNone;
}

// One batch entry.
struct EntryPlan {
  int64_t total = 0;           // valid keys after this call (seqlens_k + 1)
  int64_t past = 0;            // valid keys before it (0 in a first prompt)
  bool sparse = false;         // the mode this entry runs (UseSparse)
  int64_t windows = 0;         // level-1 compressed keys after this call
  int64_t past_windows = 0;    // of them, copied from past_compressed_key (0 when not given)
  int64_t level2_windows = 0;  // level-2 windows (stage-1 normalizer)
  bool needs_stage1 = false;   // a valid token of this call outgrows the budget (sparse only)
  bool valid = true;           // LengthFaultOf(total) is kNone; else every count above is 0
};

IL_HD EntryPlan PlanEntry(const CallRules& r, const int32_t* seqlens_k, int64_t b) {
  EntryPlan e;
  e.total = TotalLength(seqlens_k, b);
  if (LengthFaultOf(r, e.total) != LengthFault::kNone) {  // device only: the host refused the call
    e.total = 0;
    e.valid = false;
    return e;
  }
  e.past = r.is_first_prompt ? 0 : e.total - r.seq_len;  // right-padded first prompt: no past
  e.sparse = UseSparse(r, e.total);
  e.windows = NumWindows(e.total, r.compress_kernel, r.compress_stride);
  e.level2_windows = NumWindows(e.total, 4 * r.compress_kernel, 4 * r.compress_stride);
  e.past_windows = r.past_compressed_given ? NumWindows(e.past, r.compress_kernel, r.compress_stride) : 0;
  // The last valid token has the largest position: it outgrows the budget first.
  const int64_t last = (e.total < e.past + r.seq_len ? e.total : e.past + r.seq_len) - 1;
  e.needs_stage1 = e.sparse && last >= e.past && OutgrowsBudget(r, last);
  return e;
}

// Position whose rotary angles a token at `pos` of an entry uses (GQA: padding tokens use 1; an
// invalid entry's tokens 0, a row every cos_cache has).
IL_HD int64_t RotaryPosition(const EntryPlan& e, int64_t pos) { return pos < e.total ? pos : e.valid ? 1 : 0; }

// How a token at `pos` of an entry attends: nothing (padding: len 0), every key from dense_lo up
// to its own (dense: len -1), blocks 0..len-1 (sparse within the budget), or the list stage 1
// selects (needs_stage1).
struct TokenPlan {
  int64_t len = 0;
  int64_t dense_lo = 0;
  bool needs_stage1 = false;
};

IL_HD TokenPlan PlanToken(const CallRules& r, const EntryPlan& e, int64_t pos) {
  TokenPlan t;
  if (pos >= e.total) return t;
  if (!e.sparse) {
    t.len = -1;
    t.dense_lo = DenseFirstKey(r, pos);
  } else if (!OutgrowsBudget(r, pos)) {
    t.len = pos / r.block_size + 1;
  } else {
    t.needs_stage1 = true;
  }
  return t;
}

// Which level normalizes stage 1 for a token at `pos`: level 2 (lse_approx) unless no level-2
// window is visible; the visible level-1 and level-2 windows.
struct Stage1Levels {
  bool use_k2;
  int64_t nvis1, nvis2;
};

IL_HD Stage1Levels LevelsOf(const CallRules& r, const EntryPlan& e, int64_t pos) {
  const int64_t n1 = NumWindows(pos + 1, r.compress_kernel, r.compress_stride);
  const int64_t n2 = NumWindows(pos + 1, 4 * r.compress_kernel, 4 * r.compress_stride);
  Stage1Levels lv;
  lv.nvis1 = e.windows < n1 ? e.windows : n1;
  lv.nvis2 = e.level2_windows < n2 ? e.level2_windows : n2;
  lv.use_k2 = r.lse_approx != 0 && lv.nvis2 > 0;
  return lv;
}

// The blocks of a stage-1 token at `pos`: init blocks [0, init_hi), candidates [init_hi, local_lo)
// ranked by score, local blocks [local_lo, qb]; `take` candidates fit the budget's rest.
struct SelectionSpan {
  int64_t qb, local_lo, init_hi, n_forced, take;
};

IL_HD SelectionSpan SpanOf(const CallRules& r, int64_t pos) {
  SelectionSpan s;
  s.qb = pos / r.block_size;
  s.local_lo = s.qb - r.local_blocks > 0 ? s.qb - r.local_blocks : 0;
  s.init_hi = r.init_blocks < s.local_lo ? r.init_blocks : s.local_lo;  // init blocks not already local
  s.n_forced = s.init_hi + (s.qb - s.local_lo + 1);
  const int64_t room = r.budget - s.n_forced, candidates = s.local_lo - s.init_hi;
  s.take = room < 0 ? 0 : room < candidates ? room : candidates;
  return s;
}

// Level-1 windows j of block blk run from the first reaching it, ceil((blk Bk - kernel + 1) /
// stride), to the last starting in it, floor((blk Bk + Bk - 1) / stride); Bk is a multiple of the
// stride, so both are blk * per_block plus a constant: [blk per_block - back, blk per_block + ahead].
struct BlockWindows {
  int64_t per_block, back, ahead;
};

IL_HD BlockWindows BlockWindowsOf(const CallRules& r) {
  return {r.block_size / r.compress_stride, (r.compress_kernel - 1) / r.compress_stride,
          (r.block_size - 1) / r.compress_stride};
}

// A block's rank as one integer: the score's bits in unsigned order (NaN ranks as -inf, -0 as +0)
// above the complemented block index, so a larger key is a higher score or, on a tie, a lower
// index; top-k is then a selection on plain integers.
IL_HD uint64_t RankKey(float score, int64_t block) {
  uint32_t bits = FloatBits(score);
  if ((bits & 0x7fffffffu) > 0x7f800000u) bits = 0xff800000u;  // NaN: -inf
  if ((bits & 0x7fffffffu) == 0) bits = 0;                     // -0: +0
  bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<uint64_t>(bits) << 32) | static_cast<uint64_t>(~static_cast<uint32_t>(block));
}
IL_HD int32_t BlockOfKey(uint64_t key) { return static_cast<int32_t>(~static_cast<uint32_t>(key)); }

// The call's buffers (layouts in docs/op-spec.md) and their addressing.
template <typename T>
struct CallBuffers {
  CallRules rules;
  AttentionData<T> d;

  // Head n of token (b, s) in the query input; n counts q heads, then k, then v heads when packed.
  IL_HD const T* QueryInput(int64_t b, int64_t s, int64_t n) const {
    const int64_t heads = rules.packed_qkv ? rules.num_heads + 2 * rules.kv_num_heads : rules.num_heads;
    return d.query + ((b * rules.seq_len + s) * heads + n) * rules.head_size;
  }
  IL_HD const T* KeyInput(int64_t b, int64_t s, int64_t h) const {
    if (rules.packed_qkv) return QueryInput(b, s, rules.num_heads + h);
    return d.key + ((b * rules.seq_len + s) * rules.kv_num_heads + h) * rules.head_size;
  }
  IL_HD const T* ValueInput(int64_t b, int64_t s, int64_t h) const {
    if (rules.packed_qkv) return QueryInput(b, s, rules.num_heads + rules.kv_num_heads + h);
    return d.value + ((b * rules.seq_len + s) * rules.kv_num_heads + h) * rules.head_size;
  }
  // First element of (b, h) in a cache-layout buffer [B, Hkv, capacity, D].
  IL_HD int64_t CacheOffset(int64_t b, int64_t h, int64_t capacity) const {
    return (b * rules.kv_num_heads + h) * capacity * rules.head_size;
  }
};

}  // namespace infllmv2
