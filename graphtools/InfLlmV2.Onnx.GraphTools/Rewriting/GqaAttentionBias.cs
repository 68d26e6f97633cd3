using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools.Rewriting;

/// <summary>
/// GroupQueryAttention's <c>attention_bias</c> (input 10) as onnx-community exports write it:
/// <c>Expand((1 − Cast(attention_mask)) · −FLT_MAX)</c> to [B, 1, S, T] beside
/// <c>seqlens_k = Expand(T − 1)</c>, so padding reaches the op only through the bias. When
/// <see cref="MaskAnalysis"/> proves that the bias masks exactly the keys that attention_mask marks
/// as padding (nothing by position: the op itself is causal), and seqlens_k/total_sequence_length
/// are the full mask width (T − 1 and T for every entry) or already come from the mask's row sums,
/// the site is rewritten with seqlens_k = ReduceSum(attention_mask) − 1 (the ones-then-zeros
/// contract of <see cref="RewriteContext.MaskLengths"/>) and the bias is dropped.
/// </summary>
public static class GqaAttentionBias
{
    /// <summary>GQA's attention_bias input.</summary>
    public const int BiasInput = 10;

    /// <summary>The attention_mask graph input the bias is proven to be padding of, or why not.</summary>
    public static (string? AttentionMask, string? Reason) Prove(GraphIndex g, NodeProto node)
    {
        var bias = node.Input[BiasInput];
        var query = g.Shape(node.Input[0]);
        var biasShape = g.Shape(bias);
        if (biasShape is not { Count: >= 2 }) return (null, $"attention_bias '{bias}' has an unknown rank");
        object? queryLength = query is { Count: 3 } ? query[1] : null;
        object? past = node.Input.Count > 3 && node.Input[3].Length > 0 && g.Shape(node.Input[3]) is { Count: 4 } ps ? ps[2] : null;
        var (facts, why) = MaskAnalysis.Analyze(g, new StaticEvaluator(g), bias, queryLength, biasShape[^1], past, requireCausal: false);
        if (facts is null) return (null, $"attention_bias: {why}");
        if (facts.Causal || facts.SlidingWindow is not null)
            return (null, "attention_bias also masks by position (causal or window), which the op applies itself: only key padding from attention_mask is rewritten");
        if (facts.KeyLimits.Count > 0)
            return (null, $"attention_bias masks keys by the per-batch input '{facts.KeyLimits[0]}', not by an attention_mask");
        if (facts.PaddingMask is not { } mask) return (null, "attention_bias masks nothing that comes from an attention_mask");
        var width = g.Shape(mask) is { Count: 2 } ms ? ms[1] : null;
        if (width is null) return (null, $"the width of '{mask}' is unknown");
        if (!IsWidth(g, node.Input[6], width, 0))
            return (null, $"total_sequence_length is not the width of '{mask}', so the bias's keys and the cache's cannot be matched");
        if (!IsWidth(g, node.Input[5], width, -1) && !IsRowSumMinusOne(g, node.Input[5], mask))
            return (null, $"seqlens_k is neither '{mask}''s width − 1 for every entry nor its row sums − 1");
        return (mask, null);
    }

    /// <summary>The report's note on such a site.</summary>
    public static string Note(string attentionMask) =>
        $"attention_bias = key padding from '{attentionMask}': " + RewriteContext.PaddingMaskNote(attentionMask);

    // Values a broadcast or a type change leaves as they are.
    private static string Strip(GraphIndex g, string v)
    {
        for (int i = 0; i < 16 && g.Producer(v) is { } p; i++)
        {
            if (p.OpType is "Cast" or "Identity" or "Expand" or "Reshape" or "Unsqueeze" or "Squeeze" or "Tile" && p.Input.Count > 0) v = p.Input[0];
            else break;
        }
        return v;
    }

    // Every element of v is width + delta.
    private static bool IsWidth(GraphIndex g, string v, object width, long delta)
    {
        v = Strip(g, v);
        if (delta == 0) return g.Inferred.Get(v).Values is [{ } d] && Equals(d, width);
        if (g.Producer(v) is not { OpType: "Sub" or "Add" } p) return false;
        var eval = new StaticEvaluator(g);
        var c = eval.Scalar(p.Input[1]);
        long sign = p.OpType == "Sub" ? -1 : 1;
        return c is double k && (long)k * sign == delta && IsWidth(g, p.Input[0], width, 0);
    }

    // ReduceSum(attention_mask over axis 1) − 1, as the genai builder computes seqlens_k.
    private static bool IsRowSumMinusOne(GraphIndex g, string v, string mask)
    {
        v = Strip(g, v);
        if (g.Producer(v) is not { OpType: "Sub" } sub || new StaticEvaluator(g).Scalar(sub.Input[1]) != 1) return false;
        var sum = Strip(g, sub.Input[0]);
        return g.Producer(sum) is { OpType: "ReduceSum" } r && g.SkipPassThroughUp(r.Input[0]) == mask;
    }
}
