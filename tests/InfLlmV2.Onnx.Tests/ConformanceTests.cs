using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Rewriting;

namespace InfLlmV2.Onnx.Tests;

/// <summary>Every real exported model in ../shared/fixtures/real-models is inspected; the rewritable ones reproduce their references.</summary>
public class ConformanceTests
{
    public static TheoryData<string> AllModels()
    {
        var data = new TheoryData<string>();
        foreach (var f in Directory.EnumerateFiles(ModelRunner.FixturesRoot, "*.onnx", SearchOption.AllDirectories).Order())
            data.Add(Path.GetRelativePath(ModelRunner.FixturesRoot, f));
        return data;
    }

    /// <summary>Expected inspect result of a fixture: sites, how many are rewritable, their form, dense-only note.</summary>
    private sealed record Verdict(int Sites, int Rewritable, AttentionForm Form, bool DenseOnly = false);

    /// <summary>
    /// The real-model fixtures and what the rewriter must say about each (read from each model: its
    /// attention nodes, their inputs and attributes; see the fixtures' README and PROVENANCE).
    /// </summary>
    private static readonly Dictionary<string, Verdict> Models = new()
    {
        // ONNX Attention-24 over a TensorScatter static cache, 2 layers, causal sliding-window mask
        // proven from the write positions: both rewritten, dense-only (local_window_size).
        ["genai_static_scatter_mistral_attn_op24/model.onnx"] = new(2, 2, AttentionForm.OnnxAttention, DenseOnly: true),
        // genai GroupQueryAttention, separate q/k/v, 2 layers, fp16: both rewritten.
        ["genai_tiny_qwen35_gqa_contrib_fp16/decoder.onnx"] = new(2, 2, AttentionForm.GroupQueryAttention),
        // RotaryEmbedding -> MultiHeadAttention with the builder's causal + attention_mask padding mask, 2 layers: both rewritten.
        ["genai_tiny_random_llama_fp16_mha_modelbuilder/model.onnx"] = new(2, 2, AttentionForm.MultiHeadAttention),
        // genai builder GQA, packed QKV + do_rotary, 2 layers, external data: both rewritten.
        ["genai_tiny_random_llama_fp32_gqa_modelbuilder/model.onnx"] = new(2, 2, AttentionForm.GroupQueryAttention),
        // GroupQueryAttention with 7 inputs, 1 layer, fp16: rewritten.
        ["genai_webgpu_tiny_gqa_contrib_fp16/model.onnx"] = new(1, 1, AttentionForm.GroupQueryAttention),
        // Single GQA nodes: local_window_size set (decode, prefill) -> dense-only; the others plain.
        ["migraphx_gqa_contrib_node_tests/group_query_attention_decode_local_test.onnx"] = new(1, 1, AttentionForm.GroupQueryAttention, DenseOnly: true),
        ["migraphx_gqa_contrib_node_tests/group_query_attention_decode_test.onnx"] = new(1, 1, AttentionForm.GroupQueryAttention),
        ["migraphx_gqa_contrib_node_tests/group_query_attention_grouped_test.onnx"] = new(1, 1, AttentionForm.GroupQueryAttention),
        ["migraphx_gqa_contrib_node_tests/group_query_attention_prefill_local_test.onnx"] = new(1, 1, AttentionForm.GroupQueryAttention, DenseOnly: true),
        ["migraphx_gqa_contrib_node_tests/group_query_attention_prefill_test.onnx"] = new(1, 1, AttentionForm.GroupQueryAttention),
    };

    /// <summary>
    /// onnx_backend_attention_node_tests: test_attention_{name} holds one ONNX Attention node;
    /// test_attention_{name}_expanded is the same function decomposed (MatMul/Softmax/MatMul, one
    /// Decomposed site) with the same verdict. Rewritable iff is_causal=1 without attn_mask,
    /// nonpad_kv_seqlen or a used qk_matmul output, and V's head size equals Q's. The comment lists
    /// what the node has (GQA = query/kv heads).
    /// </summary>
    private static readonly Dictionary<string, bool> NodeTests = new()
    {
        ["23_boolmask_fullymasked_row_nan_robustness"] = false,               // not causal, attn_mask
        ["23_fullymasked_qk_matmul_output_mode3_zero"] = false,               // not causal, attn_mask, qk_matmul output used
        ["24_fullymasked_qk_matmul_output_mode3_zero"] = false,               // not causal, attn_mask, qk_matmul output used
        ["24_qk_matmul_output_mode3_softmax_precision"] = false,              // not causal, attn_mask, qk_matmul output used
        ["3d"] = false,                                                       // not causal
        ["3d_attn_mask"] = false,                                             // not causal, attn_mask
        ["3d_causal"] = true,                                                 // causal
        ["3d_diff_heads_sizes"] = false,                                      // not causal, V head size 10 != 8
        ["3d_diff_heads_sizes_attn_mask"] = false,                            // not causal, attn_mask, V head size 10 != 8
        ["3d_diff_heads_sizes_causal"] = false,                               // causal, V head size 10 != 8
        ["3d_diff_heads_sizes_scaled"] = false,                               // not causal, V head size 10 != 8, scale 0.01
        ["3d_diff_heads_sizes_softcap"] = false,                              // not causal, V head size 10 != 8, softcap 3
        ["3d_diff_heads_with_past_and_present"] = false,                      // not causal, attn_mask, past/present, V head size 10 != 8
        ["3d_gqa"] = false,                                                   // not causal, gqa 9/3
        ["3d_gqa_attn_mask"] = false,                                         // not causal, attn_mask, gqa 9/3
        ["3d_gqa_causal"] = true,                                             // causal, gqa 9/3
        ["3d_gqa_scaled"] = false,                                            // not causal, scale 0.01, gqa 9/3
        ["3d_gqa_softcap"] = false,                                           // not causal, softcap 3, gqa 9/3
        ["3d_gqa_with_past_and_present"] = false,                             // not causal, attn_mask, past/present, gqa 9/3
        ["3d_scaled"] = false,                                                // not causal, scale 0.01
        ["3d_softcap"] = false,                                               // not causal, softcap 3
        ["3d_transpose_verification"] = false,                                // not causal
        ["3d_with_past_and_present"] = false,                                 // not causal, attn_mask, past/present
        ["3d_with_past_and_present_qk_matmul"] = false,                       // not causal, attn_mask, past/present, qk_matmul output used
        ["3d_with_past_and_present_qk_matmul_bias"] = false,                  // not causal, attn_mask, past/present, qk_matmul output used
        ["3d_with_past_and_present_qk_matmul_softcap"] = false,               // not causal, attn_mask, past/present, qk_matmul output used, softcap 2
        ["3d_with_past_and_present_qk_matmul_softmax"] = false,               // not causal, attn_mask, past/present, qk_matmul output used
        ["4d"] = false,                                                       // not causal
        ["4d_attn_mask"] = false,                                             // not causal, attn_mask
        ["4d_attn_mask_3d"] = false,                                          // not causal, attn_mask
        ["4d_attn_mask_3d_causal"] = false,                                   // causal, attn_mask
        ["4d_attn_mask_4d"] = false,                                          // not causal, attn_mask
        ["4d_attn_mask_4d_causal"] = false,                                   // causal, attn_mask
        ["4d_attn_mask_bool"] = false,                                        // not causal, attn_mask
        ["4d_attn_mask_bool_4d"] = false,                                     // not causal, attn_mask
        ["4d_causal"] = true,                                                 // causal
        ["4d_causal_nonpad_attn_mask_composition"] = false,                   // causal, attn_mask, nonpad_kv_seqlen
        ["4d_causal_nonpad_batch_prefill"] = false,                           // causal, nonpad_kv_seqlen
        ["4d_causal_nonpad_continued_prefill"] = false,                       // causal, nonpad_kv_seqlen
        ["4d_causal_nonpad_negative_offset_structural_empty"] = false,        // causal, nonpad_kv_seqlen
        ["4d_causal_with_past_and_present"] = true,                           // causal, past/present
        ["4d_diff_heads_mask4d_padded_kv"] = false,                           // not causal, attn_mask, nonpad_kv_seqlen, V head size 10 != 8
        ["4d_diff_heads_sizes"] = false,                                      // not causal, V head size 10 != 8
        ["4d_diff_heads_sizes_attn_mask"] = false,                            // not causal, attn_mask, V head size 10 != 8
        ["4d_diff_heads_sizes_causal"] = false,                               // causal, V head size 10 != 8
        ["4d_diff_heads_sizes_scaled"] = false,                               // not causal, V head size 10 != 8, scale 0.01
        ["4d_diff_heads_sizes_softcap"] = false,                              // not causal, V head size 10 != 8, softcap 2
        ["4d_diff_heads_with_past_and_present"] = false,                      // not causal, attn_mask, past/present, V head size 10 != 8
        ["4d_diff_heads_with_past_and_present_mask3d"] = false,               // not causal, attn_mask, past/present, V head size 10 != 8
        ["4d_diff_heads_with_past_and_present_mask4d"] = false,               // not causal, attn_mask, past/present, V head size 10 != 8
        ["4d_fp16"] = false,                                                  // not causal, fp16
        ["4d_gqa"] = false,                                                   // not causal, gqa 9/3
        ["4d_gqa_attn_mask"] = false,                                         // not causal, attn_mask, gqa 9/3
        ["4d_gqa_causal"] = true,                                             // causal, gqa 9/3
        ["4d_gqa_causal_nonpad_decode"] = false,                              // causal, nonpad_kv_seqlen, gqa 4/2
        ["4d_gqa_causal_nonpad_decode_fp16"] = false,                         // causal, nonpad_kv_seqlen, gqa 4/2, fp16
        ["4d_gqa_scaled"] = false,                                            // not causal, scale 0.01, gqa 9/3
        ["4d_gqa_softcap"] = false,                                           // not causal, softcap 2, gqa 9/3
        ["4d_gqa_with_past_and_present"] = false,                             // not causal, attn_mask, past/present, gqa 9/3
        ["4d_gqa_with_past_and_present_fp16"] = false,                        // not causal, attn_mask, past/present, gqa 9/3, fp16
        ["4d_scaled"] = false,                                                // not causal, scale 0.01
        ["4d_softcap"] = false,                                               // not causal, softcap 2
        ["4d_softcap_neginf_mask"] = false,                                   // not causal, attn_mask, softcap 0.5
        ["4d_softcap_neginf_mask_poison"] = false,                            // not causal, attn_mask, softcap 0.5
        ["4d_with_past_and_present"] = false,                                 // not causal, attn_mask, past/present
        ["4d_with_past_and_present_qk_matmul"] = false,                       // not causal, attn_mask, past/present, qk_matmul output used
        ["4d_with_past_and_present_qk_matmul_bias"] = false,                  // not causal, attn_mask, past/present, qk_matmul output used
        ["4d_with_past_and_present_qk_matmul_bias_3d_mask"] = false,          // not causal, attn_mask, past/present, qk_matmul output used
        ["4d_with_past_and_present_qk_matmul_bias_3d_mask_causal"] = false,   // causal, attn_mask, past/present, qk_matmul output used
        ["4d_with_past_and_present_qk_matmul_bias_4d_mask"] = false,          // not causal, attn_mask, past/present, qk_matmul output used
        ["4d_with_past_and_present_qk_matmul_bias_4d_mask_causal"] = false,   // causal, attn_mask, past/present, qk_matmul output used
        ["4d_with_qk_matmul"] = false,                                        // not causal, qk_matmul output used
        ["4d_with_qk_matmul_bias"] = false,                                   // not causal, attn_mask, qk_matmul output used
        ["4d_with_qk_matmul_softcap"] = false,                                // not causal, attn_mask, qk_matmul output used, softcap 2
        ["4d_with_qk_matmul_softmax"] = false,                                // not causal, attn_mask, qk_matmul output used
        ["causal_boolmask_nan_robustness"] = false,                           // causal, attn_mask
    };

    private static Verdict Expected(string relative)
    {
        if (Models.TryGetValue(relative, out var v)) return v;
        var parts = relative.Split('/');
        Assert.True(parts is ["onnx_backend_attention_node_tests", _, "model.onnx"], $"{relative}: not in the table");
        var name = parts[1]["test_attention_".Length..];
        bool expanded = name.EndsWith("_expanded", StringComparison.Ordinal);
        if (expanded) name = name[..^"_expanded".Length];
        Assert.True(NodeTests.TryGetValue(name, out bool rewritable), $"{relative}: not in the table");
        return new Verdict(1, rewritable ? 1 : 0, expanded ? AttentionForm.Decomposed : AttentionForm.OnnxAttention);
    }

    [Fact]
    public void FixtureListing_IsExactlyTheTable()
    {
        var listed = ((IEnumerable<object?[]>)AllModels()).Select(row => (string)row[0]!).ToList();
        Assert.Equal(10 + 2 * NodeTests.Count, listed.Count);
        Assert.Equal(162, listed.Count);
        Assert.All(listed, r => Expected(r));
        Assert.All(NodeTests.Keys, n =>
        {
            Assert.Contains($"onnx_backend_attention_node_tests/test_attention_{n}/model.onnx", listed);
            Assert.Contains($"onnx_backend_attention_node_tests/test_attention_{n}_expanded/model.onnx", listed);
        });
        Assert.Equal(5, NodeTests.Count(kv => kv.Value));
    }

    [Theory]
    [MemberData(nameof(AllModels))]
    public void Inspect_EveryFixture_GivesTheKnownVerdictAndSiteCount(string relative)
    {
        var model = OnnxModelFile.Load(Path.Combine(ModelRunner.FixturesRoot, relative));
        var sites = AttentionRewriter.Inspect(model);
        var want = Expected(relative);
        Assert.Equal(want.Sites, sites.Count);
        Assert.Equal(want.Rewritable, sites.Count(s => s.Rewritable));
        Assert.All(sites, s => Assert.Equal(want.Form, s.Form));
        Assert.All(sites, s => Assert.True(s.Rewritable || !string.IsNullOrEmpty(s.Reason), $"{s.Node}: refused without a reason"));
        Assert.All(sites, s => Assert.Equal(want.DenseOnly, s.Note?.Contains("dense-only", StringComparison.Ordinal) == true));
    }

    public static TheoryData<string, string, int> GqaReferenceSets() => new()
    {
        // model, reference folder, graph outputs compared per set (logits + present key/value per layer)
        { "genai_tiny_random_llama_fp32_gqa_modelbuilder/model.onnx", "ref_ort1.30_cpu", 5 },
        { "genai_tiny_qwen35_gqa_contrib_fp16/decoder.onnx", "ref_ort1.30_cpu", 7 },
        { "genai_webgpu_tiny_gqa_contrib_fp16/model.onnx", "ref_ort1.30_cpu", 3 },
    };

    [Theory]
    [MemberData(nameof(GqaReferenceSets))]
    public void GqaFixtures_Rewritten_ReproduceReferenceOutputs(string relative, string refs, int outputs)
    {
        using var dir = new TempDir();
        var src = Path.Combine(ModelRunner.FixturesRoot, relative);
        var output = dir[Path.GetFileName(src)];
        var (code, stdout, err) = CliProcess.Run("rewrite", src, "-o", output);
        Assert.True(code == 0, stdout + err);
        bool fp16 = relative.Contains("fp16", StringComparison.Ordinal);
        var sets = Directory.GetDirectories(Path.Combine(Path.GetDirectoryName(src)!, refs)).Order().Select(d => Path.GetFileName(d)).ToArray();
        Assert.Equal(["test_data_set_0_prefill", "test_data_set_1_decode"], sets);
        foreach (var set in sets)
            RunComparison.AssertMatches(output, Path.Combine(Path.GetDirectoryName(src)!, refs, set), fp16 ? "1e-3" : "1e-4", outputs);
    }

    public static TheoryData<string, bool> AttentionNodeTests()
    {
        var data = new TheoryData<string, bool>();
        foreach (var d in Directory.GetDirectories(Path.Combine(ModelRunner.FixturesRoot, "onnx_backend_attention_node_tests")).Order())
        {
            var name = Path.GetFileName(d);
            // Causal without mask, cache or nonpad lengths: rewritten (rule 2, and rule 3 for the
            // _expanded decomposed form); everything else refused with a reason.
            if (name.Contains("gqa", StringComparison.Ordinal))
                data.Add(name, name.Contains("_causal", StringComparison.Ordinal) && !name.Contains("nonpad", StringComparison.Ordinal));
        }
        return data;
    }

    [Fact]
    public void OnnxAttentionGqaNodeTests_ListingHasTheKnownTests()
    {
        // 15 GQA node tests (and their _expanded forms); 2 of them (3d/4d gqa_causal) are rewritten.
        var rows = ((IEnumerable<object?[]>)AttentionNodeTests()).Select(r => ((string)r[0]!, (bool)r[1]!)).ToList();
        Assert.Equal(30, rows.Count);
        Assert.Equal(["test_attention_3d_gqa_causal", "test_attention_3d_gqa_causal_expanded", "test_attention_4d_gqa_causal", "test_attention_4d_gqa_causal_expanded"],
            rows.Where(r => r.Item2).Select(r => r.Item1));
    }

    [Theory]
    [MemberData(nameof(AttentionNodeTests))]
    public void OnnxAttentionGqaNodeTests_RewrittenAndMatch_OrRefusedWithReason(string test, bool expectRewrite)
    {
        using var dir = new TempDir();
        var src = Path.Combine(ModelRunner.FixturesRoot, "onnx_backend_attention_node_tests", test);
        var (code, stdout, err) = CliProcess.Run("rewrite", Path.Combine(src, "model.onnx"), "-o", dir["m.onnx"], "--report", dir["r.json"]);
        if (!expectRewrite)
        {
            Assert.True(code == 3, stdout + err);
            Assert.Contains("\"reason\": \"", File.ReadAllText(dir["r.json"]));
            return;
        }
        Assert.True(code == 0, stdout + err);
        // One graph output (Y): no cache in the rewritable GQA node tests.
        RunComparison.AssertMatches(dir["m.onnx"], Path.Combine(src, "test_data_set_0"), "1e-4", expectedCompared: 1);
    }
}
