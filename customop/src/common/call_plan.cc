#include "common/call_plan.h"

namespace infllmv2 {

std::string BuildCallPlan(const AttentionAttributes& a, const AttentionParams& p, const int32_t* seqlens_k,
                          const BufferFacts& f, CallPlan* plan) {
  const std::string err = CheckBuffers(p, f);
  if (!err.empty()) return err;
  CallPlan& c = *plan;
  c = CallPlan{};
  c.rules = MakeCallRules(a, p, f);
  c.single_token = p.seq_len == 1;
  c.write_selection = f.has_selected_blocks;
  c.entries.resize(static_cast<size_t>(p.batch));
  for (int64_t b = 0; b < p.batch; ++b) {
    const EntryPlan& e = c.entries[static_cast<size_t>(b)] = PlanEntry(c.rules, seqlens_k, b);
    if (e.sparse && a.local_window_size > 0) return LocalWindowError(b);
    c.any_sparse |= e.sparse;
    c.any_stage1 |= e.needs_stage1;
  }
  c.compute_compressed = f.has_present_compressed || c.any_sparse;
  c.compressed_to_scratch = c.compute_compressed && !f.has_present_compressed;
  return "";
}

}  // namespace infllmv2
