using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.OpContract;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.GraphTools.Rewriting;

/// <summary>
/// Emits a SwitchableAttention node for causal self-attention given as ONNX-style Q/K/V: 3-D
/// [B, S, N·D] (used as they are) or 4-D [B, N, S, D] (transposed to [B, S, N·D] and the output
/// back). Keys/values longer than the queries are sliced to the queries' length (top-left causal
/// attention never sees the rest). seqlens_k/total_sequence_length come from the query shape.
/// </summary>
public static class SwitchableAttentionEmitter
{
    /// <summary>What to emit.</summary>
    /// <param name="Query">Query value.</param>
    /// <param name="Key">Key value (kv heads).</param>
    /// <param name="Value">Value value (kv heads).</param>
    /// <param name="Rank">3 or 4.</param>
    /// <param name="NumHeads">Query heads.</param>
    /// <param name="KvNumHeads">Key/value heads.</param>
    /// <param name="HeadSize">Head size.</param>
    /// <param name="KeySliceTo">Keep only the first this many keys/values (null: all).</param>
    /// <param name="Scale">Softmax scale (null: 1/sqrt(D)).</param>
    /// <param name="Softcap">Softcap (null or 0: none).</param>
    /// <param name="Output">Name the attention output must have (in Q's rank and layout).</param>
    public sealed record Operands(string Query, string Key, string Value, int Rank, int NumHeads, int KvNumHeads, int HeadSize,
        long? KeySliceTo, float? Scale, float? Softcap, string Output)
    {
        /// <summary>Past keys [B, kv_heads, past, D] (the cache form), or null.</summary>
        public string? PastKey { get; init; }

        /// <summary>Past values, with <see cref="PastKey"/>.</summary>
        public string? PastValue { get; init; }

        /// <summary>Name the present keys (past + new) must have, or empty when unused.</summary>
        public string PresentKey { get; init; } = "";

        /// <summary>Name the present values must have, or empty when unused.</summary>
        public string PresentValue { get; init; } = "";

        /// <summary>Per-batch int graph input with the position of query row 0 (static caches), or null.</summary>
        public string? QueryOffset { get; init; }

        /// <summary>The attention_mask graph input the lengths come from (rows ones then zeros), or null.</summary>
        public string? AttentionMask { get; init; }

        /// <summary>Sliding window in keys (GQA's local_window_size); makes the site dense-only.</summary>
        public long? SlidingWindow { get; init; }
    }

    /// <summary>The nodes to insert where the replaced attention was (initializers are added to the graph directly).</summary>
    public static List<NodeProto> Emit(RewriteContext c, string hint, Operands o)
    {
        var g = c.Graph;
        string N(string h) => c.Index.UniqueName($"{hint}/infllmv2/{h}");
        var nodes = new List<NodeProto>();
        string Const(string h, long[] values)
        {
            var name = N(h);
            g.Initializer.Add(TensorProtos.Int64(name, [values.Length], values));
            return name;
        }
        long seqAxis = o.Rank == 4 ? 2 : 1;
        string? starts = null, ends = null, axes = null;
        if (o.KeySliceTo is long to)
        {
            starts = Const("slice_starts", [0]); ends = Const("slice_ends", [to]); axes = Const("slice_axes", [seqAxis]);
        }
        string flat = o.Rank == 4 ? Const("bs_hidden", [0, 0, -1]) : "";
        string To3d(string x, string h, bool slice)
        {
            if (slice && starts is not null)
            {
                var sliced = N($"{h}_sliced");
                nodes.Add(Node("Slice", "", [x, starts, ends!, axes!], [sliced], name: N($"{h}_Slice")));
                x = sliced;
            }
            if (o.Rank == 3) return x;
            var t = N($"{h}_bsnh");
            var r = N($"{h}_3d");
            nodes.Add(Node("Transpose", "", [x], [t], [Ints("perm", 0, 2, 1, 3)], N($"{h}_Transpose")));
            nodes.Add(Node("Reshape", "", [t, flat], [r], name: N($"{h}_Reshape")));
            return r;
        }
        var q3 = To3d(o.Query, "query", false);
        var k3 = To3d(o.Key, "key", true);
        var v3 = To3d(o.Value, "value", true);
        var qShape = c.Index.Shape(o.Query);
        var shareKey = qShape is not null && qShape.All(d => d is not null)
            ? $"{g.Name}|{string.Join(",", qShape)}|{o.Rank}"
            : $"{g.Name}|{o.Query}";
        var (seqlens, total) = o.AttentionMask is { } mask ? c.MaskLengths(mask) : c.Lengths(q3, o.PastKey, shareKey, o.QueryOffset);
        var carried = new List<AttributeProto>();
        if (o.SlidingWindow is long w) carried.AddRange(RewriteContext.SlidingWindowAttributes(w));
        if (o.Scale is float s) carried.Add(Attr(SwitchableAttentionOp.Attributes.Scale, s));
        if (o.Softcap is float sc && sc > 0) carried.Add(Attr(SwitchableAttentionOp.Attributes.Softcap, sc));
        var mode = c.AttentionModeInput();
        var inputs = new List<string> { q3, k3, v3, o.PastKey ?? "", o.PastValue ?? "", seqlens, total };
        if (mode.Length > 0)
        {
            while (inputs.Count < SwitchableAttentionOp.Inputs.AttentionMode) inputs.Add("");
            inputs.Add(mode);
        }
        var out3 = o.Rank == 3 ? o.Output : N("output_3d");
        var presentKey = o.PresentKey.Length > 0 ? o.PresentKey : N("present_key");
        var presentValue = o.PresentValue.Length > 0 ? o.PresentValue : N("present_value");
        nodes.Add(Node(SwitchableAttentionOp.OpType, SwitchableAttentionOp.Domain, inputs, [out3, presentKey, presentValue],
            c.SwitchableAttributes(o.NumHeads, o.KvNumHeads, carried), N(SwitchableAttentionOp.OpType)));
        // Types of the new values (shape inference cannot see through a custom op).
        if (c.Index.ElementType(o.Query) is { } type)
        {
            if (o.Rank == 4) g.ValueInfo.Add(Tensor(out3, type, null, null, (long)o.NumHeads * o.HeadSize));
            foreach (var present in new[] { presentKey, presentValue })
                if (!c.Index.IsGraphOutput(present) && c.Index.TensorType(present) is null)
                    g.ValueInfo.Add(Tensor(present, type, null, o.KvNumHeads, null, o.HeadSize));
        }
        if (o.Rank == 4)
        {
            var split = N("output_bsnh");
            nodes.Add(Node("Reshape", "", [out3, Const("bsnh", [0, 0, o.NumHeads, o.HeadSize])], [split], name: N("output_Reshape")));
            nodes.Add(Node("Transpose", "", [split], [o.Output], [Ints("perm", 0, 2, 1, 3)], N("output_Transpose")));
        }
        return nodes;
    }
}
