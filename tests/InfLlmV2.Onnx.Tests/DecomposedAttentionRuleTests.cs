using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Rewriting;

namespace InfLlmV2.Onnx.Tests;

/// <summary>Rule 3 on the ONNX Attention function bodies (the node tests' _expanded models).</summary>
public class DecomposedAttentionRuleTests
{
    private static InfLlmV2.Onnx.GraphTools.Proto.ModelProto Load(string test) =>
        OnnxModelFile.Load(Path.Combine(ModelRunner.FixturesRoot, "onnx_backend_attention_node_tests", test, "model.onnx"));

    [Theory]
    [InlineData("test_attention_4d_gqa_causal_expanded", 9, 3)]
    [InlineData("test_attention_3d_gqa_causal_expanded", 9, 3)]
    [InlineData("test_attention_4d_causal_expanded", 3, 3)]
    [InlineData("test_attention_4d_causal_with_past_and_present_expanded", 3, 3)]
    public void CausalFunctionBody_IsRewritten_WithFoldedScale(string test, int heads, int kvHeads)
    {
        var m = Load(test);
        var sites = AttentionRewriter.Rewrite(m, new RewriteOptions());
        var site = Assert.Single(sites);
        Assert.True(site.Rewritten, site.Reason);
        Assert.Equal(AttentionForm.Decomposed, site.Form);
        var node = Assert.Single(m.Graph.Node, n => n.OpType == "SwitchableAttention");
        Assert.Equal(heads, node.Attribute.Single(a => a.Name == "num_heads").I);
        Assert.Equal(kvHeads, node.Attribute.Single(a => a.Name == "kv_num_heads").I);
        var d = site.HeadSize!.Value;
        Assert.Equal(1 / MathF.Sqrt(d), node.Attribute.Single(a => a.Name == "scale").F, 1e-6f);
        Assert.DoesNotContain(m.Graph.Node, n => n.OpType is "Softmax" or "MatMul");  // the old attention is gone
    }

    [Theory]
    [InlineData("test_attention_4d_gqa_expanded", "bidirectional")]
    [InlineData("test_attention_4d_gqa_attn_mask_expanded", "not provably causal")]
    [InlineData("test_attention_4d_gqa_softcap_expanded", "softcap")]
    [InlineData("test_attention_4d_diff_heads_sizes_causal_expanded", "do not agree")]
    [InlineData("test_attention_4d_gqa_with_past_and_present_expanded", "not provably causal")]
    [InlineData("test_attention_3d_gqa_with_past_and_present_expanded", "not provably causal")]
    public void NearMisses_AreRefusedWithReason(string test, string reason)
    {
        var m = Load(test);
        var site = Assert.Single(AttentionRewriter.Rewrite(m, new RewriteOptions()));
        Assert.False(site.Rewritten);
        Assert.Contains(reason, site.Reason);
        Assert.DoesNotContain(m.Graph.Node, n => n.OpType == "SwitchableAttention");
    }
}

/// <summary>Rewritten node tests reproduce the ONNX reference outputs (including presents of the cache forms).</summary>
public class CacheFormConformanceTests
{
    [Theory]
    // test, graph outputs compared (Y, or Y + present_key + present_value)
    [InlineData("test_attention_4d_causal_with_past_and_present", 3)]
    [InlineData("test_attention_4d_causal_with_past_and_present_expanded", 3)]
    [InlineData("test_attention_3d_causal_expanded", 1)]
    [InlineData("test_attention_4d_causal", 1)]
    public void Rewritten_MatchesExpectedOutputs(string test, int outputs)
    {
        using var dir = new TempDir();
        var src = Path.Combine(ModelRunner.FixturesRoot, "onnx_backend_attention_node_tests", test);
        var (code, stdout, err) = CliProcess.Run("rewrite", Path.Combine(src, "model.onnx"), "-o", dir["m.onnx"]);
        Assert.True(code == 0, stdout + err);
        RunComparison.AssertMatches(dir["m.onnx"], Path.Combine(src, "test_data_set_0"), "1e-4", outputs);
    }
}
