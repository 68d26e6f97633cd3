using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// Attention the rewriter cannot convert is reported with what stops it, never as "no attention
/// found": each class is a small decomposed attention (x → Q/K/V projections → MatMul → scale →
/// [bias] → Softmax → MatMul) with the one thing that makes it unconvertible.
/// </summary>
public class RefusalReasonTests
{
    private const int S = 4, H = 4, D = 8, Hidden = H * D;
    private const TensorProto.Types.DataType F32 = TensorProto.Types.DataType.Float;

    /// <summary>The variant's model; every variant but the baseline stays refused.</summary>
    private static ModelProto Build(string variant)
    {
        var g = new GraphProto { Name = "attention_" + variant };
        var rng = new Random(7);
        void N(string op, string[] inputs, string[] outputs, params AttributeProto[] attrs) =>
            g.Node.Add(Node(op, op.EndsWith("Grad_13", StringComparison.Ordinal) ? "com.microsoft" : "", inputs, outputs, attrs, outputs[0] + "_" + op));
        string Const(string name, long[] dims, float[] values) { g.Initializer.Add(TensorProtos.Float(name, dims, values)); return name; }
        string I64(string name, long[] dims, long[] values) { g.Initializer.Add(TensorProtos.Int64(name, dims, values)); return name; }

        g.Input.Add(Tensor("x", F32, 1, S, Hidden));
        I64("heads_shape", [4], [1, S, H, D]);
        I64("hidden_shape", [3], [1, S, Hidden]);
        foreach (var p in new[] { "q", "k", "v" })
        {
            var w = "w" + p;
            if (variant == "weightInputs") g.Input.Add(Tensor(w, F32, Hidden, Hidden));
            else Const(w, [Hidden, Hidden], Enumerable.Range(0, Hidden * Hidden).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray());
            N("MatMul", ["x", w], [p + "_proj"]);
            N("Reshape", [p + "_proj", "heads_shape"], [p + "_split"]);
            // Vision exports transpose K straight to [B, H, D, S].
            long[] perm = p == "k" && variant == "vision" ? [0, 2, 3, 1] : [0, 2, 1, 3];
            N("Transpose", [p + "_split"], [p + "_bhsd"], Ints("perm", perm));
        }
        if (variant != "vision") N("Transpose", ["k_bhsd"], ["k_t"], Ints("perm", 0, 1, 3, 2));
        var kt = variant == "vision" ? "k_bhsd" : "k_t";
        if (variant == "bloom") return Bloom(g, N, Const, I64);
        string scores = "scores";
        if (variant == "reshapeBetween")
        {
            // Scores computed as [B·H, S, S] and reshaped back (BLOOM's baddbmm layout).
            I64("flat_heads", [3], [H, S, D]);
            I64("flat_heads_t", [3], [H, D, S]);
            I64("scores_shape", [4], [1, H, S, S]);
            N("Reshape", ["q_bhsd", "flat_heads"], ["q_flat"]);
            N("Reshape", [kt, "flat_heads_t"], ["k_flat"]);
            N("MatMul", ["q_flat", "k_flat"], ["raw_flat"]);
            N("Reshape", ["raw_flat", "scores_shape"], ["raw"]);
        }
        else N("MatMul", ["q_bhsd", kt], ["raw"]);
        N("Mul", ["raw", Const("scale", [], [1 / MathF.Sqrt(D)])], [scores]);

        // The causal mask as the ONNX Attention function body builds it: Where(Less(rows, cols), -inf, 0).
        string CausalMask()
        {
            N("Range", [I64("zero", [], [0]), I64("length", [], [S]), I64("step", [], [1])], ["positions_range"]);
            N("Unsqueeze", ["positions_range", I64("axis_1", [1], [1])], ["rows"]);
            N("Unsqueeze", ["positions_range", I64("axis_0", [1], [0])], ["cols"]);
            N("Less", ["rows", "cols"], ["future"]);
            N("Where", ["future", Const("minus_inf", [], [float.NegativeInfinity]), Const("zero_f", [], [0])], ["causal"]);
            return "causal";
        }
        switch (variant)
        {
            case "alibi":
                // BLOOM: positions = (cumsum(mask) - 1) * mask; alibi = slopes[h] * positions, added to the scores.
                g.Input.Add(Tensor("attention_mask", TensorProto.Types.DataType.Int64, 1, S));
                N("Cast", ["attention_mask"], ["mask_f"], Attr("to", (long)F32));
                N("CumSum", ["mask_f", I64("last_axis", [], [-1])], ["mask_cumsum"]);
                N("Sub", ["mask_cumsum", Const("one", [], [1])], ["positions0"]);
                N("Mul", ["positions0", "mask_f"], ["positions"]);
                N("Unsqueeze", ["positions", I64("axes_12", [2], [1, 2])], ["positions_4d"]);
                N("Mul", [Const("slopes", [1, H, 1, 1], [0.5f, 0.25f, 0.125f, 0.0625f]), "positions_4d"], ["alibi"]);
                N("Add", [scores, "alibi"], ["scores_alibi"]);
                N("Add", ["scores_alibi", CausalMask()], ["biased"]);
                break;
            case "maskInput":
                g.Input.Add(Tensor("attn_mask", F32, 1, 1, S, S));
                N("Add", [scores, "attn_mask"], ["biased"]);
                break;
            case "vision":
                N("Identity", [scores], ["biased"]);
                break;
            default:
                N("Add", [scores, CausalMask()], ["biased"]);
                break;
        }
        N("Softmax", ["biased"], ["probs"], Attr("axis", -1L));
        N("MatMul", ["probs", "v_bhsd"], ["context"]);
        N("Transpose", ["context"], ["context_bshd"], Ints("perm", 0, 2, 1, 3));
        N("Reshape", ["context_bshd", "hidden_shape"], ["y"]);
        g.Output.Add(Tensor("y", F32, 1, S, Hidden));
        if (variant == "training")
        {
            // The backward pass reads the probabilities (ORT training's SoftmaxGrad).
            g.Input.Add(Tensor("grad_probs", F32, 1, H, S, S));
            N("SoftmaxGrad_13", ["grad_probs", "probs"], ["grad_scores"], Attr("axis", -1L));
            g.Output.Add(Tensor("grad_scores", F32, 1, H, S, S));
        }
        return Model(g, ("", 17), ("com.microsoft", 1));
    }

    /// <summary>
    /// BLOOM as exported: alibi = slopes × ((CumSum(mask) − 1) × mask) as [B·H, 1, T], scores =
    /// baddbmm(alibi, Q, K) in the [B·H, S, T] layout viewed as [B, H, S, T], masked_fill by Where,
    /// Softmax in fp32 between Casts, and bmm with V in the flat layout again.
    /// </summary>
    private static ModelProto Bloom(GraphProto g, Action<string, string[], string[], AttributeProto[]> n,
        Func<string, long[], float[], string> constant, Func<string, long[], long[], string> i64)
    {
        g.Input.Add(Tensor("attention_mask", TensorProto.Types.DataType.Int64, 1, S));
        n("CumSum", ["attention_mask", i64("last_axis", [], [-1])], ["mask_cumsum"], []);
        n("Sub", ["mask_cumsum", i64("one", [], [1])], ["positions0"], []);
        n("Mul", ["positions0", "attention_mask"], ["positions"], []);
        n("Cast", ["positions"], ["positions_f"], [Attr("to", (long)F32)]);
        n("Reshape", ["positions_f", i64("row_shape", [3], [1, 1, S])], ["positions_3d"], []);
        n("Mul", [constant("slopes", [H, 1, 1], [0.5f, 0.25f, 0.125f, 0.0625f]), "positions_3d"], ["alibi"], []);
        n("Reshape", ["q_bhsd", i64("flat_q", [3], [H, S, D])], ["q_flat"], []);
        n("Reshape", ["k_t", i64("flat_k", [3], [H, D, S])], ["k_flat"], []);
        n("Reshape", ["v_bhsd", i64("flat_v", [3], [H, S, D])], ["v_flat"], []);
        n("MatMul", ["q_flat", "k_flat"], ["qk"], []);
        n("Mul", ["qk", constant("inv_norm", [], [1 / MathF.Sqrt(D)])], ["qk_scaled"], []);
        n("Add", ["alibi", "qk_scaled"], ["baddbmm"], []);
        n("Reshape", ["baddbmm", i64("view_4d", [4], [1, H, S, S])], ["scores_4d"], []);
        var future = new TensorProto { Name = "future", DataType = (int)TensorProto.Types.DataType.Bool };
        future.Dims.AddRange([1, 1, S, S]);
        future.RawData = Google.Protobuf.ByteString.CopyFrom(Enumerable.Range(0, S * S).Select(i => (byte)(i % S > i / S ? 1 : 0)).ToArray());
        g.Initializer.Add(future);
        n("Where", ["future", constant("min_value", [], [float.MinValue]), "scores_4d"], ["masked"], []);
        n("Cast", ["masked"], ["masked_f32"], [Attr("to", (long)F32)]);
        n("Softmax", ["masked_f32"], ["probs_f32"], [Attr("axis", -1L)]);
        n("Cast", ["probs_f32"], ["probs"], [Attr("to", (long)F32)]);
        n("Reshape", ["probs", i64("flat_p", [3], [H, S, S])], ["probs_flat"], []);
        n("MatMul", ["probs_flat", "v_flat"], ["context_flat"], []);
        n("Reshape", ["context_flat", i64("context_4d", [4], [1, H, S, D])], ["context"], []);
        n("Transpose", ["context"], ["context_bshd"], [Ints("perm", 0, 2, 1, 3)]);
        n("Reshape", ["context_bshd", "hidden_shape"], ["y"], []);
        g.Output.Add(Tensor("y", F32, 1, S, Hidden));
        return Model(g, ("", 17));
    }

    [Fact]
    public void Baseline_CausalConstantMask_IsRewritten()
    {
        var site = Assert.Single(AttentionRewriter.Inspect(Build("baseline")));
        Assert.True(site.Rewritable, site.Reason);
        Assert.Equal(AttentionForm.Decomposed, site.Form);
    }

    [Theory]
    [InlineData("alibi", "an ALiBi position bias (CumSum of 'attention_mask' times per-head slopes, added to the scores)")]
    [InlineData("bloom", "an ALiBi position bias (CumSum of 'attention_mask' times per-head slopes, added to the scores)")]
    [InlineData("training", "a training graph: the attention's probabilities also feed a backward pass (com.microsoft::SoftmaxGrad_13)")]
    [InlineData("maskInput", "the mask is the graph input 'attn_mask' ([1, 1, 4, 4]): its values are the caller's, so causality cannot be proven")]
    [InlineData("weightInputs", "the projection weights 'wq' are a graph input")]
    [InlineData("vision", "non-causal attention: nothing masks the scores between Q·Kᵀ and the Softmax (encoder or vision attention)")]
    [InlineData("reshapeBetween", "the scores are not a MatMul but Reshape (scores: MatMul → Reshape → Mul → Add → Softmax)")]
    public void Refused_WithWhatStopsTheRewrite(string variant, string reason)
    {
        var model = Build(variant);
        var site = Assert.Single(AttentionRewriter.Inspect(model));
        Assert.False(site.Rewritable);
        Assert.Contains(reason, site.Reason);
        Assert.DoesNotContain(AttentionRewriter.Rewrite(model, new RewriteOptions()), s => s.Rewritten);
    }

    [Fact]
    public void AttentionOpNoRuleHandles_IsReportedByName()
    {
        var g = new GraphProto { Name = "packed" };
        g.Input.Add(Tensor("qkv", F32, 4, 3 * Hidden));
        g.Input.Add(Tensor("token_offset", TensorProto.Types.DataType.Int32, 1, 4));
        g.Input.Add(Tensor("cumulative_sequence_length", TensorProto.Types.DataType.Int32, 2));
        g.Node.Add(Node("PackedMultiHeadAttention", "com.microsoft", ["qkv", "", "", "", "token_offset", "cumulative_sequence_length"], ["out"],
            [Attr("num_heads", (long)H)], "packed_mha"));
        g.Output.Add(Tensor("out", F32, 4, Hidden));
        var site = Assert.Single(AttentionRewriter.Inspect(Model(g, ("", 17), ("com.microsoft", 1))));
        Assert.Equal(AttentionForm.Unrecognized, site.Form);
        Assert.Equal("com.microsoft::PackedMultiHeadAttention is an attention op no rule rewrites", site.Reason);
    }

    [Fact]
    public void SoftmaxBetweenProjections_IsNoAttentionSite()
    {
        // A router or a classifier head: Softmax(x·W) feeding another product with weights.
        var g = new GraphProto { Name = "router" };
        g.Input.Add(Tensor("x", F32, 1, S, Hidden));
        g.Initializer.Add(TensorProtos.Float("w_router", [Hidden, 8], new float[Hidden * 8]));
        g.Initializer.Add(TensorProtos.Float("w_out", [8, Hidden], new float[8 * Hidden]));
        g.Node.Add(Node("MatMul", "", ["x", "w_router"], ["logits"], name: "router"));
        g.Node.Add(Node("Softmax", "", ["logits"], ["weights"], [Attr("axis", -1L)], "softmax"));
        g.Node.Add(Node("MatMul", "", ["weights", "w_out"], ["y"], name: "mix"));
        g.Output.Add(Tensor("y", F32, 1, S, Hidden));
        Assert.Empty(AttentionRewriter.Inspect(Model(g, ("", 17))));
    }

    [Fact]
    public void Cli_NothingRewritten_SaysWhy_NotNoAttentionFound()
    {
        using var dir = new TempDir();
        OnnxModelFile.Save(Build("alibi"), dir["alibi.onnx"]);
        var (code, stdout, stderr) = CliProcess.Run("rewrite", dir["alibi.onnx"], "-o", dir["out.onnx"]);
        Assert.Equal(3, code);
        Assert.DoesNotContain("no attention found", stdout + stderr);
        Assert.Contains("ALiBi", stdout + stderr);
        Assert.False(File.Exists(dir["out.onnx"]));
    }
}
