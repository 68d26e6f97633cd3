// The host half of the GPU check's C ABI: what run.py needs to know about a case (output sizes,
// each entry's mode and lengths, the key-split count) from the op's own code, no GPU needed. Built
// into libinfllmv2_gpu.so with capi.cu, and alone by the dry run (run.sh --dry-run).
#include "capi_plan.h"

#include <vector>

#include "common/call_rules.h"
#include "common/check_inputs.h"
#include "cuda/launch_shape.h"

namespace infllmv2::gpu_check {
namespace {

InputShape Shape(std::vector<int64_t> dims) { return {true, std::move(dims)}; }

}  // namespace

std::string Plan(const int64_t* attr, const int64_t* dim, AttentionAttributes* a, AttentionParams* p) {
  Extras x;
  x.score_precision = attr[8];
  x.softcap = static_cast<float>(attr[9]) / 1024.0f;
  x.rotary_dim = attr[10];
  x.interleaved = attr[11] != 0;
  return Plan(attr, dim, x, a, p);
}

std::string Plan(const int64_t* attr, const int64_t* dim, const Extras& x, AttentionAttributes* a, AttentionParams* p) {
  a->softcap = x.softcap;
  a->score_precision = x.score_precision;
  a->do_rotary = x.rotary_dim > 0 ? 1 : 0;
  a->rotary_interleaved = x.interleaved ? 1 : 0;
  a->num_heads = dim[2];
  a->kv_num_heads = dim[3];
  a->block_size = attr[0];
  a->compress_kernel = attr[1];
  a->compress_stride = attr[2];
  a->init_blocks = attr[3];
  a->window_size = attr[4];
  a->topk = attr[5];
  a->dense_len = attr[6];
  a->lse_approx = attr[7];
  const int64_t B = dim[0], S = dim[1], H = dim[2], Hkv = dim[3], D = dim[4], P = dim[5];
  AttentionInputs in;
  in.query = Shape({B, S, H * D});
  in.key = Shape({B, S, Hkv * D});
  in.value = Shape({B, S, Hkv * D});
  if (P > 0) {
    in.past_key = Shape({B, Hkv, P, D});
    in.past_value = Shape({B, Hkv, P, D});
  }
  in.seqlens_k = Shape({B});
  in.total_sequence_length = Shape({1});
  in.total_sequence_length_value = static_cast<int32_t>(dim[6]);
  in.attention_mode = Shape({1});
  in.attention_mode_value = static_cast<int32_t>(dim[7]);
  if (dim[9] > 0) in.past_compressed_key = Shape({B, Hkv, dim[9], D});
  if (x.rotary_dim > 0) {
    in.cos_cache = Shape({dim[6] + 8, x.rotary_dim / 2});
    in.sin_cache = Shape({dim[6] + 8, x.rotary_dim / 2});
  }
  std::string e = CheckAttributes(*a);
  return e.empty() ? CheckInputs(*a, in, p) : e;
}

}  // namespace infllmv2::gpu_check

using infllmv2::gpu_check::Plan;

// Dimensions the outputs need (present capacity, compressed capacity, budget) for the same attr
// and dim as il_attention; 0, or 1 when the op refuses them.
extern "C" __attribute__((visibility("default"))) int il_output_dims(const int64_t* attr, const int64_t* dim,
                                                                     int64_t* out3) {
  infllmv2::AttentionAttributes a;
  infllmv2::AttentionParams p;
  if (!Plan(attr, dim, &a, &p).empty()) return 1;
  out3[0] = p.present_capacity;
  out3[1] = p.present_compressed_capacity;
  out3[2] = p.budget;
  return 0;
}

// Each entry's plan as the kernels derive it on the device (common/call_rules.h: PlanEntry), from
// host copies of seqlens_k ([B]): per entry total, past, sparse, windows, needs_stage1 (5 values).
// 0, or 1 when the op refuses the case.
extern "C" __attribute__((visibility("default"))) int il_entry_plans(const int64_t* attr, const int64_t* dim,
                                                                     const int32_t* seqlens_k, int64_t* out) {
  infllmv2::AttentionAttributes a;
  infllmv2::AttentionParams p;
  if (!Plan(attr, dim, &a, &p).empty()) return 1;
  infllmv2::BufferFacts f;
  f.has_required_outputs = f.has_seqlens = f.has_present_compressed = f.has_selected_blocks = true;
  const infllmv2::CallRules r = infllmv2::MakeCallRules(a, p, f);
  for (int64_t b = 0; b < p.batch; ++b) {
    const infllmv2::EntryPlan e = infllmv2::PlanEntry(r, seqlens_k, b);
    const int64_t row[5] = {e.total, e.past, e.sparse ? 1 : 0, e.windows, e.needs_stage1 ? 1 : 0};
    for (int i = 0; i < 5; ++i) out[5 * b + i] = row[i];
  }
  return 0;
}

// The key-split count il_attention runs the case with (dim[8] forced, else the op's choice).
extern "C" __attribute__((visibility("default"))) int il_kv_splits(const int64_t* attr, const int64_t* dim,
                                                                   int64_t* out) {
  infllmv2::AttentionAttributes a;
  infllmv2::AttentionParams p;
  if (!Plan(attr, dim, &a, &p).empty()) return 1;
  *out = infllmv2::cuda::KvSplitsFor(static_cast<int>(dim[8]), a, p);
  return 0;
}
