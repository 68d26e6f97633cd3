using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools.Rewriting.Rules;

/// <summary>
/// Rule 5: <c>com.microsoft::MultiHeadAttention</c> (the ORT transformer optimizer's fusion and the
/// genai builder's MHA form) → SwitchableAttention. Matched: 3-D query/key/value [B, S, N·D] (the
/// separate <c>RotaryEmbedding</c> nodes before it stay as they are), an optional past/present
/// cache [B, N, P, D] that grows by the new keys, and causality either from
/// <c>unidirectional=1</c> without a mask or from an <c>attention_bias</c> that the mask analysis
/// proves to be exactly causal with the queries at the past length (<see cref="MaskAnalysis"/>).
/// K/V repeated to all query heads before the node (GQA exported through MHA) are taken as they
/// are: the cache keeps the heads the model gives it, which is exact. Refused with a reason:
/// packed QKV, the bias input, key_padding_mask, masks not proven causal, 4-D (cross-attention)
/// keys, past_sequence_length/cache_indirection (decoder-masked MHA), the qk output.
/// </summary>
public sealed class MultiHeadAttentionRule : IAttentionRule
{
    /// <summary>Facts of a MultiHeadAttention node.</summary>
    public sealed record Facts(NodeProto Node, int NumHeads, int KvNumHeads, int HeadDim, float? Scale, string? PastKey, string? PastValue)
        : AttentionMatch(Node, NumHeads, KvNumHeads, HeadDim)
    {
        /// <summary>The attention_mask input whose values the mask's key padding comes from, or null.</summary>
        public string? PaddingMask { get; init; }
    }

    /// <inheritdoc/>
    public AttentionForm Form => AttentionForm.MultiHeadAttention;

    /// <inheritdoc/>
    public bool Match(GraphIndex graph, NodeProto node) => node.OpType == "MultiHeadAttention" && node.Domain == "com.microsoft";

    /// <inheritdoc/>
    public RuleCheck Check(GraphIndex g, NodeProto node, RewriteOptions options)
    {
        string Input(int i) => i < node.Input.Count ? node.Input[i] : "";
        var heads64 = node.IntAttr("num_heads") ?? 0;
        if (node.IntAttrOutOfRange("num_heads", 1, NodeAttributes.MaxHeads) is { } range) return RuleCheck.Refuse("MultiHeadAttention: " + range);
        int h = (int)heads64;
        var qs = g.Shape(Input(0));
        int? d = qs is { Count: 3 } && qs[2] is long hidden && hidden % h == 0 && hidden / h <= int.MaxValue ? (int)(hidden / h) : null;
        var ks = Input(1).Length > 0 ? g.Shape(Input(1)) : null;
        var vs = Input(2).Length > 0 ? g.Shape(Input(2)) : null;
        int? hkv = d is int dd && ks is { Count: 3 } && ks[2] is long kh && kh % dd == 0 && kh / dd is > 0 and <= NodeAttributes.MaxHeads ? (int)(kh / dd) : null;
        RuleCheck Refuse(string why) => RuleCheck.Refuse("MultiHeadAttention: " + why, h, hkv, d) with { Operands = node.Input.Where(i => i.Length > 0).ToList() };

        if (Input(1).Length == 0 || Input(2).Length == 0) return Refuse("packed QKV (key/value omitted) is not supported");
        if (qs is null || ks is null || vs is null) return Refuse("the rank of query/key/value is unknown (no shape information, and the shape pass could not infer it)");
        if (qs.Count != 3 || ks.Count != 3 || vs.Count != 3) return Refuse($"query/key/value ranks {qs.Count}/{ks.Count}/{vs.Count}: only 3-D [B, S, N·D] self-attention is rewritten (4-D keys are cross-attention or a packed past)");
        if (d is null) return Refuse($"head size unknown: query hidden {ShapeInference.Format(qs[2])} is not a known multiple of num_heads {h}");
        if (hkv is null || !Equals(vs[2], ks[2])) return Refuse($"key/value hidden sizes {ShapeInference.Format(ks[2])}/{ShapeInference.Format(vs[2])} are not the same multiple of the head size {d}");
        if (OpCapability.Check(h, hkv, d, g.ElementType(Input(0))) is { } cannot) return Refuse(cannot);
        if (!Equals(ks[1], qs[1])) return Refuse($"key length {ShapeInference.Format(ks[1])} differs from the query length {ShapeInference.Format(qs[1])} (not self-attention over new tokens)");
        if (Input(3).Length > 0) return Refuse("uses the bias input (add the projection bias before the node first)");
        if (Input(4).Length > 0) return Refuse("uses key_padding_mask (padding masks are not rewritten)");
        if (Input(8).Length > 0 || Input(9).Length > 0) return Refuse("uses past_sequence_length/cache_indirection (decoder-masked, beam-search form)");
        for (int i = 10; i < node.Input.Count; i++)
            if (node.Input[i].Length > 0) return Refuse($"uses input {i}, which SwitchableAttention does not support");
        if (node.Output.Count > 3 && node.Output[3].Length > 0 && (g.Consumers(node.Output[3]).Count > 0 || g.IsGraphOutput(node.Output[3])))
            return Refuse("its qk output is used");
        string pastKey = Input(6), pastValue = Input(7);
        if ((pastKey.Length > 0) != (pastValue.Length > 0)) return Refuse("past_key and past_value must come together");
        bool hasPast = pastKey.Length > 0;
        object? pastLength = null;
        if (hasPast)
        {
            if (g.Shape(pastKey) is not { Count: 4 } ps || !Equals(ps[1], (long)hkv) || !Equals(ps[3], (long)d) || g.Shape(pastValue) is not { } pv || !pv.SequenceEqual(ps))
                return Refuse("the past is not [B, kv_heads, past, head_size] for keys and values alike");
            pastLength = ps[2];
        }
        else if (node.Output.Count > 1 && node.Output.Skip(1).Take(2).Any(o => o.Length > 0 && (g.Consumers(o).Count > 0 || g.IsGraphOutput(o))))
        {
            return Refuse("present outputs are used without a past input");
        }
        foreach (var a in node.Attribute)
        {
            string? why = a.Name switch
            {
                "num_heads" or "scale" or "mask_filter_value" or "unidirectional" => null,
                _ => $"unknown attribute '{a.Name}'",
            };
            if (why is not null) return Refuse(why);
        }
        // Causality: unidirectional=1, or an attention_bias proven causal at the past length.
        string mask = Input(5);
        string? paddingMask = null;
        if (mask.Length == 0)
        {
            if ((node.IntAttr("unidirectional") ?? 0) != 1) return Refuse("no mask and unidirectional=0: bidirectional attention cannot be expressed by a causal op");
        }
        else
        {
            object? keyLength = hasPast ? ShapeInference.AddDims(pastLength, qs[1]) : qs[1];
            var (facts, why) = MaskAnalysis.Analyze(g, new StaticEvaluator(g), mask, qs[1], keyLength, pastLength);
            if (facts is null) return Refuse(why!);
            paddingMask = facts.PaddingMask;
            if (facts.KeyLimits.Count > 0) return Refuse("the mask also has key padding limits");
            if (facts.SlidingWindow is long w) return Refuse($"the mask has a sliding window of {w} keys (not rewritten for this form yet)");
            string? expected = hasPast ? MaskAnalysis.DimVariable(pastLength) : null;
            if (facts.QueryOffset != expected)
                return Refuse($"the mask places query row 0 at {facts.QueryOffset ?? "0"}, not at the past length ({ShapeInference.Format(pastLength ?? 0L)})");
        }
        if (options.CompressedState) return Refuse("--compressed-state is supported for GroupQueryAttention models only");
        float? scale = node.Attribute.FirstOrDefault(a => a.Name == "scale") is { } s && s.F != 0 ? s.F : null;
        var notes = new List<string>();
        if (hkv == h && ks[2] is long && IsRepeated(g, Input(1)))
            notes.Add("K/V are repeated to every query head before the node: rewritten with the heads the cache holds");
        if (paddingMask is not null) notes.Add(RewriteContext.PaddingMaskNote(paddingMask));
        return RuleCheck.Accept(new Facts(node, h, hkv.Value, d.Value, scale, hasPast ? pastKey : null, hasPast ? pastValue : null)
        {
            Note = notes.Count > 0 ? string.Join("; ", notes) : null, PaddingMask = paddingMask,
        }) with
        {
            Operands = node.Input.Where(i => i.Length > 0).ToList(),
        };
    }

    /// <inheritdoc/>
    public void Rewrite(RewriteContext c, AttentionMatch match)
    {
        var f = (Facts)match;
        var n = f.Node;
        string Output(int i) => i < n.Output.Count ? n.Output[i] : "";
        var nodes = SwitchableAttentionEmitter.Emit(c, n.Name.Length > 0 ? n.Name : "MultiHeadAttention",
            new SwitchableAttentionEmitter.Operands(n.Input[0], n.Input[1], n.Input[2], 3, f.NumHeads, f.KvNumHeads, f.HeadDim, null, f.Scale, null, n.Output[0])
            {
                PastKey = f.PastKey, PastValue = f.PastValue, PresentKey = Output(1), PresentValue = Output(2), AttentionMask = f.PaddingMask,
            });
        c.ReplaceNode(n, nodes);
    }

    // Reshape(Expand(...)) on the key's path: repeat_kv done in the 3-D layout.
    private static bool IsRepeated(GraphIndex g, string key) =>
        g.Producer(g.SkipPassThroughUp(key)) is { OpType: "Reshape" } r && g.Producer(g.SkipPassThroughUp(r.Input[0])) is { OpType: "Expand" };
}
