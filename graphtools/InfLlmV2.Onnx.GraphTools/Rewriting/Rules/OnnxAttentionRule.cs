using InfLlmV2.Onnx.GraphTools.Proto;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.GraphTools.Rewriting.Rules;

/// <summary>
/// Rule 2: ONNX <c>Attention</c> (opset 23/24) → SwitchableAttention, for causal self-attention
/// without an explicit mask or cache: 3-D [B, S, H·D] or 4-D [B, H, S, D] Q/K/V (4-D is transposed
/// to the op's layout and back), seqlens_k/total_sequence_length synthesized from the query shape.
/// ONNX's causal mask is top-left aligned, so when K/V are longer than Q (static shapes) only their
/// first S positions can ever be attended and are sliced off.
/// repeat_kv applied outside the node (4-D, no past) is stripped so that the op sees the real kv heads.
/// Refused with a reason: masks (the static-cache form is StaticCacheAttentionRule's), non-causal attention,
/// qk_matmul_output.
/// </summary>
public sealed class OnnxAttentionRule : IAttentionRule
{
    /// <summary>Facts of an ONNX Attention node.</summary>
    public sealed record Facts(NodeProto Node, int NumHeads, int KvNumHeads, int HeadDim, int Rank, long? KeySliceTo, float? Scale, float? Softcap,
        string? PastKey, string? PastValue)
        : AttentionMatch(Node, NumHeads, KvNumHeads, HeadDim)
    {
        /// <summary>The attention_mask input whose values the attn_mask's key padding comes from, or null.</summary>
        public string? PaddingMask { get; init; }

        /// <summary>The keys the op reads (repeat_kv stripped).</summary>
        public string Key { get; init; } = Node.Input[1];

        /// <summary>The values the op reads (repeat_kv stripped).</summary>
        public string Value { get; init; } = Node.Input[2];
    }

    /// <inheritdoc/>
    public AttentionForm Form => AttentionForm.OnnxAttention;

    /// <inheritdoc/>
    public bool Match(GraphIndex graph, NodeProto node) => IsOnnxAttention(node);

    /// <summary>Whether the node is ONNX's own Attention (the static-cache form is matched first by <see cref="StaticCacheAttentionRule"/>).</summary>
    public static bool IsOnnxAttention(NodeProto node) => node.OpType == "Attention" && node.Domain is "" or "ai.onnx";

    /// <inheritdoc/>
    public RuleCheck Check(GraphIndex g, NodeProto node, RewriteOptions options)
    {
        string Input(int i) => i < node.Input.Count ? node.Input[i] : "";
        var eval = new StaticEvaluator(g);
        var q = Input(0); var k = Input(1); var v = Input(2);
        // repeat_kv outside (4-D K/V expanded to the query heads before the node): use the real kv
        // heads, so that the op groups queries as the model does (sparse selection is per group).
        bool unrepeated = false;
        if (Input(4).Length == 0 && RepeatKv.Source(g, eval, k) is var k0 && RepeatKv.Source(g, eval, v) is var v0 && k0 != k && v0 != v
            && eval.PartialShape(k0) is { Length: 4 } && eval.PartialShape(v0) is { Length: 4 })
        {
            (k, v, unrepeated) = (k0, v0, true);
        }
        IReadOnlyList<object?>? Shape(string x) => g.Shape(x) ?? eval.PartialShape(x);
        var qs = Shape(q); var ks = Shape(k); var vs = Shape(v);
        int rank = qs?.Count ?? 0;
        var (heads, kvHeads, headSize) = HeadCounts(node, qs, ks);
        RuleCheck Refuse(string why) => RuleCheck.Refuse(why, heads, kvHeads, headSize);
        if (qs is null || ks is null || vs is null) return Refuse("the rank of Q/K/V is unknown (no shape information)");
        if (rank is not (3 or 4) || ks.Count != rank || vs.Count != rank) return Refuse($"Q/K/V ranks {qs.Count}/{ks.Count}/{vs.Count}: need all 3-D or all 4-D");
        bool hasPast = Input(4).Length > 0 || Input(5).Length > 0;
        bool hasMask = Input(3).Length > 0;
        if (hasPast && (Input(4).Length == 0 || Input(5).Length == 0)) return Refuse("past_key and past_value must come together");
        for (int i = hasPast ? 3 : 1; i < node.Output.Count; i++)
            if (node.Output[i].Length > 0 && (g.Consumers(node.Output[i]).Count > 0 || g.IsGraphOutput(node.Output[i])))
                return Refuse($"output {i} ({(i == 3 ? "qk_matmul_output" : "present cache without a past")}) is used");
        if (AttributeProblem(node) is { } attribute) return Refuse(attribute);
        if ((node.IntAttr("is_causal") ?? 0) != 1 && !hasMask) return Refuse("not causal (is_causal=0) and no attn_mask: SwitchableAttention is causal");
        if ((node.IntAttrOutOfRange("q_num_heads", 1, NodeAttributes.MaxHeads) ?? node.IntAttrOutOfRange("kv_num_heads", 1, NodeAttributes.MaxHeads)) is { } range)
            return Refuse(range);
        if (heads is null || kvHeads is null) return Refuse("head counts unknown (need static head dims or q_num_heads/kv_num_heads)");
        if (headSize is null) return Refuse("head size unknown");
        if (OpCapability.Check(heads, kvHeads, headSize, g.ElementType(q)) is { } cannot) return Refuse(cannot);
        int vHeadSize = rank == 4 ? Dim(vs[3]) ?? -1 : Dim(vs[2]) is int vh ? vh / kvHeads.Value : -1;
        int kHeadSize = rank == 4 ? Dim(ks[3]) ?? -1 : Dim(ks[2]) is int kh ? kh / kvHeads.Value : -1;
        if (kHeadSize != headSize || vHeadSize != headSize) return Refuse($"key/value head sizes ({kHeadSize}/{vHeadSize}) differ from the query's ({headSize}) or are unknown");
        int seqAxis = rank == 4 ? 2 : 1;
        object? sq = qs[seqAxis], sk = ks[seqAxis], sv = vs[seqAxis];
        long? sliceTo = null;
        if (!Equals(sk, sv)) return Refuse("key and value lengths differ or are unknown");
        if (hasPast)
        {
            // With a past, ONNX's causal mask is offset by the past length: query i sees keys up to
            // past + i, GQA's rule, as long as as many keys as queries are new.
            if (!Equals(sq, sk) || sq is null) return Refuse("with past_key/past_value, the new keys must be as many as the queries");
            var ps = g.Shape(Input(4));
            if (ps is not { Count: 4 } || Dim(ps[1]) != kvHeads || Dim(ps[3]) != headSize)
                return Refuse("past_key is not [B, kv_heads, past, head_size] with known heads and head size");
        }
        else if (!Equals(sq, sk) || sq is null)
        {
            if (sq is long a && sk is long b && b > a) sliceTo = a;  // top-left causal: keys >= S are never attended
            else return Refuse($"query length {sq ?? "?"} and key length {sk ?? "?"} are not provably compatible (need equal, or static with keys longer)");
        }
        string? paddingMask = null;
        if (hasMask)
        {
            // attn_mask (boolean or additive, [B|1, H|1, S, past + S]) must be proven causal, offset by the past.
            object? pastLength = hasPast ? g.Shape(Input(4)) is { Count: 4 } pk ? pk[2] : null : null;
            object? keyLength = hasPast ? ShapeInference.AddDims(pastLength, sq) : sk;
            if (sliceTo is not null) return Refuse("an attn_mask with keys longer than the queries and no past");
            var (facts, why) = MaskAnalysis.Analyze(g, eval, Input(3), sq, keyLength, pastLength);
            if (facts is null) return Refuse("attn_mask " + why!);
            if (facts.KeyLimits.Count > 0) return Refuse("the attn_mask also has key padding limits from per-batch inputs");
            if (facts.SlidingWindow is long w) return Refuse($"the attn_mask has a sliding window of {w} keys (not rewritten for this form yet)");
            string? expected = hasPast ? MaskAnalysis.DimVariable(pastLength) : null;
            if (facts.QueryOffset != expected || (hasPast && expected is null))
                return Refuse($"the attn_mask places query row 0 at {facts.QueryOffset ?? "0"}, not at the past length");
            paddingMask = facts.PaddingMask;
        }
        if (options.CompressedState) return Refuse("--compressed-state is supported for GroupQueryAttention models only");
        float? scale = node.FloatAttr("scale");
        float? softcap = node.FloatAttr("softcap");
        if (unrepeated && rank == 4 && (!Equals(ks[0], qs[0]) || Dim(ks[1]) is not int kvSource || heads % kvSource != 0))
            return Refuse("repeat_kv outside the node does not map the query heads onto the source kv heads");
        return RuleCheck.Accept(new Facts(node, heads.Value, kvHeads.Value, headSize.Value, rank, sliceTo, scale, softcap,
            hasPast ? Input(4) : null, hasPast ? Input(5) : null)
        {
            Key = k, Value = v, PaddingMask = paddingMask,
            Note = string.Join("; ", new[] { unrepeated ? $"repeat_kv outside the node removed: {kvHeads} kv heads" : null,
                paddingMask is null ? null : RewriteContext.PaddingMaskNote(paddingMask) }.OfType<string>()) is { Length: > 0 } note ? note : null,
        });
    }

    /// <inheritdoc/>
    public void Rewrite(RewriteContext c, AttentionMatch match)
    {
        var f = (Facts)match;
        var node = f.Node;
        string Out(int i) => i < node.Output.Count ? node.Output[i] : "";
        var nodes = SwitchableAttentionEmitter.Emit(c, node.Name, new SwitchableAttentionEmitter.Operands(
            node.Input[0], f.Key, f.Value, f.Rank, f.NumHeads, f.KvNumHeads, f.HeadDim, f.KeySliceTo,
            f.Scale, f.Softcap, node.Output[0])
        {
            PastKey = f.PastKey, PastValue = f.PastValue, PresentKey = Out(1), PresentValue = Out(2), AttentionMask = f.PaddingMask,
        });
        c.ReplaceNode(node, nodes);
    }

    /// <summary>
    /// Query heads, kv heads and head size of an ONNX Attention node as far as known: the static dims
    /// of 4-D Q [B, H, S, D] and K [B, Hkv, T, D], or q_num_heads/kv_num_heads and Q's hidden size when 3-D.
    /// </summary>
    internal static (int? Heads, int? KvHeads, int? HeadSize) HeadCounts(NodeProto node, IReadOnlyList<object?>? qs, IReadOnlyList<object?>? ks)
    {
        if (qs is { Count: 4 }) return (Dim(qs[1]), ks is { Count: 4 } ? Dim(ks[1]) : null, Dim(qs[3]));
        if (qs is not { Count: 3 }) return (null, null, null);
        int? heads = node.HeadsAttr("q_num_heads"), kvHeads = node.HeadsAttr("kv_num_heads");
        int? headSize = heads is > 0 && Dim(qs[2]) is int hidden && hidden % heads == 0 ? hidden / heads.Value : null;
        return (heads, kvHeads, headSize);
    }

    /// <summary>
    /// Why an attribute of an ONNX Attention node changes the math in a way SwitchableAttention cannot
    /// express, or null: scale and softcap are carried, is_causal and the head counts are read by the
    /// rules, qk_matmul_output_mode only shapes output 3 (refused when used) and softmax_precision asks
    /// for at least the op's fp32; a sliding window (opset 25's left/right_window_size) and attributes
    /// unknown here are refused.
    /// </summary>
    internal static string? AttributeProblem(NodeProto node)
    {
        foreach (var a in node.Attribute)
        {
            string? why = a.Name switch
            {
                "is_causal" or "q_num_heads" or "kv_num_heads" or "scale" or "softcap" or "qk_matmul_output_mode" or "softmax_precision" => null,
                "left_window_size" or "right_window_size" => a.I == -1 ? null : $"{a.Name}={a.I} (a sliding window) is not rewritten for this form yet",
                _ => $"unknown attribute '{a.Name}'",
            };
            if (why is not null) return why;
        }
        return node.FloatAttr("softcap") is float cap && cap < 0 ? $"softcap={cap} is negative" : null;
    }

    internal static int? Dim(object? d) => d is long v && v >= 0 && v <= int.MaxValue ? (int)v : null;

}
