using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.OpContract;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.GraphTools.Rewriting;

/// <summary>What a rule's Rewrite may touch: the graph being rewritten, the options, shared values.</summary>
public sealed class RewriteContext
{
    private readonly Dictionary<string, (string SeqlensK, string Total)> _lengths = new(StringComparer.Ordinal);

    internal RewriteContext(GraphProto graph, GraphIndex index, RewriteOptions options, bool isMainGraph, long defaultOpset = 21)
    {
        DefaultOpset = defaultOpset;
        Graph = graph;
        Index = index;
        Options = options;
        IsMainGraph = isMainGraph;
    }

    /// <summary>The graph holding the matched node.</summary>
    public GraphProto Graph { get; }

    /// <summary>Dataflow index of <see cref="Graph"/> as it was before this rewrite pass.</summary>
    public GraphIndex Index { get; }

    /// <summary>The model's ai.onnx opset (ReduceSum takes its axes as an input from 13 on).</summary>
    public long DefaultOpset { get; }

    /// <summary>Rewrite options.</summary>
    public RewriteOptions Options { get; }

    /// <summary>Whether <see cref="Graph"/> is the model's main graph (graph inputs/outputs may be added).</summary>
    public bool IsMainGraph { get; }

    /// <summary>Puts <paramref name="nodes"/> where <paramref name="node"/> was (the rest of the old attention becomes dead code).</summary>
    public void ReplaceNode(NodeProto node, IReadOnlyList<NodeProto> nodes)
    {
        int at = Graph.Node.IndexOf(node);
        if (at < 0) throw new InvalidOperationException($"node '{node.Name}' is not in graph '{Graph.Name}'");
        Graph.Node.RemoveAt(at);
        for (int i = 0; i < nodes.Count; i++) Graph.Node.Insert(at + i, nodes[i]);
    }

    /// <summary>The SwitchableAttention attributes: heads, scale/softcap when given, sparse options.</summary>
    public List<AttributeProto> SwitchableAttributes(int numHeads, int kvNumHeads, IEnumerable<AttributeProto> carried)
    {
        var attrs = new List<AttributeProto> { Attr("num_heads", (long)numHeads), Attr("kv_num_heads", (long)kvNumHeads) };
        attrs.AddRange(carried);
        // A carried attribute wins over the option (dense_len of a sliding-window site).
        foreach (var (name, value) in Options.Sparse.Attributes())
            if (!attrs.Any(a => a.Name == name)) attrs.Add(Attr(name, value));
        return attrs;
    }

    /// <summary>
    /// The attributes of a site with GQA's sliding window of <paramref name="window"/> keys: the op
    /// runs local_window_size in dense mode only (sparse would change the model), so the site gets
    /// dense_len = <see cref="SwitchableAttentionOp.DenseOnly"/> and never switches to sparse.
    /// </summary>
    public static IEnumerable<AttributeProto> SlidingWindowAttributes(long window) =>
        [Attr(SwitchableAttentionOp.Attributes.SlidingWindow, window), Attr(SwitchableAttentionOp.Attributes.DenseLen, SwitchableAttentionOp.DenseOnly)];

    /// <summary>The report's note on a sliding-window site.</summary>
    public static string SlidingWindowNote(long window) =>
        $"sliding window of {window} keys: rewritten dense-only ({SwitchableAttentionOp.Attributes.SlidingWindow}={window})";

    /// <summary>
    /// The shared <c>attention_mode</c> graph input name when the options ask for it (added once), else "".
    /// </summary>
    public string AttentionModeInput()
    {
        if (!Options.AttentionModeInput) return "";
        if (!IsMainGraph) throw new InvalidOperationException("attention_mode input requested inside a subgraph");
        var name = RewriteOptions.AttentionModeInputName;
        if (!Graph.Input.Any(i => i.Name == name))
        {
            if (Index.AllNames.Contains(name) && !Index.IsGraphInput(name))
                throw new InvalidDataException($"Cannot add graph input '{name}': the name is already used in the model");
            Graph.Input.Add(Tensor(name, TensorProto.Types.DataType.Int32));
        }
        return name;
    }

    /// <summary>
    /// seqlens_k = ReduceSum(attention_mask, axis 1) − 1 (int32 [B]) and total_sequence_length =
    /// attention_mask.shape[1] (int32 scalar), as the genai builder feeds GroupQueryAttention; built
    /// once per graph and mask and shared by every layer. Exact when each row of the mask is ones
    /// then zeros (no padding, or right padding).
    /// </summary>
    public (string SeqlensK, string Total) MaskLengths(string attentionMask)
    {
        var key = "mask|" + attentionMask;
        if (_lengths.TryGetValue(key, out var known)) return known;
        string N(string hint) => Index.UniqueName($"infllmv2/mask_lengths/{hint}");
        var sum = N("ReduceSum/output_0");
        var sum32 = N("sum_int32");
        var seqlens = N("seqlens_k");
        var shape = N("Shape/output_0");
        var width = N("Gather/output_0");
        var total = N("total_sequence_length");
        var one = N("one");
        var axis = N("axis_1");
        var index = N("index_1");
        Graph.Initializer.Add(TensorProtos.Int32(one, [], [1]));
        Graph.Initializer.Add(TensorProtos.Int64(index, [], [1]));
        if (DefaultOpset >= 13)
        {
            Graph.Initializer.Add(TensorProtos.Int64(axis, [1], [1]));
            Graph.Node.Add(Node("ReduceSum", "", [attentionMask, axis], [sum], [Attr("keepdims", 0L)], N("ReduceSum")));
        }
        else
        {
            Graph.Node.Add(Node("ReduceSum", "", [attentionMask], [sum], [Ints("axes", 1), Attr("keepdims", 0L)], N("ReduceSum")));
        }
        Graph.Node.Add(Node("Cast", "", [sum], [sum32], [Attr("to", (long)TensorProto.Types.DataType.Int32)], N("CastSum")));
        Graph.Node.Add(Node("Sub", "", [sum32, one], [seqlens], name: N("Sub")));
        Graph.Node.Add(Node("Shape", "", [attentionMask], [shape], name: N("Shape")));
        Graph.Node.Add(Node("Gather", "", [shape, index], [width], [Attr("axis", 0L)], N("Gather")));
        Graph.Node.Add(Node("Cast", "", [width], [total], [Attr("to", (long)TensorProto.Types.DataType.Int32)], N("CastWidth")));
        var r = (seqlens, total);
        _lengths[key] = r;
        return r;
    }

    /// <summary>The report's note on a site whose mask is causal AND key padding from attention_mask.</summary>
    public static string PaddingMaskNote(string attentionMask) =>
        $"mask = causal AND key padding from '{attentionMask}': seqlens_k = ReduceSum({attentionMask}) - 1, total_sequence_length = its width; " +
        "exact when each row of it is ones then zeros (no padding, or right padding: padded query rows give 0)";

    /// <summary>
    /// seqlens_k (int32 [B]) and total_sequence_length (int32 scalar) for a query [B, S, *] after an
    /// optional past [B, Hkv, P, D] of uniform length (no padding): total = P + S, seqlens_k =
    /// total - 1 for every entry. Built once per <paramref name="shareKey"/> (or per past) and reused
    /// by every layer with the same key. With <paramref name="queryOffset"/> (a per-batch int graph
    /// input holding the position of query row 0, e.g. a static cache's write index) the past shape
    /// is not used: total[b] = offset[b] + S, total_sequence_length = max over b.
    /// </summary>
    public (string SeqlensK, string Total) Lengths(string query3d, string? pastKey, string shareKey, string? queryOffset = null)
    {
        var key = queryOffset is not null ? $"offset|{queryOffset}|{shareKey}" : pastKey is null ? shareKey : "past|" + pastKey;
        if (_lengths.TryGetValue(key, out var known)) return known;
        string N(string hint) => Index.UniqueName($"infllmv2/lengths/{hint}");
        string Int64(string hint, long[] dims, long value)
        {
            var name = N(hint);
            Graph.Initializer.Add(TensorProtos.Int64(name, dims, [value]));
            return name;
        }
        string CastTo(TensorProto.Types.DataType type, string x, string hint, string nodeName)
        {
            var name = N(hint);
            Graph.Node.Add(Node("Cast", "", [x], [name], [Attr("to", (long)type)], N(nodeName)));
            return name;
        }
        var shape = N("query_shape");
        var seq = N("sequence_length");
        var total = N("total_sequence_length");
        var one = N("one");
        var seqlens = N("seqlens_k");
        Graph.Initializer.Add(TensorProtos.Int32(one, [], [1]));
        Graph.Node.Add(Node("Shape", "", [query3d], [shape], name: N("Shape")));
        Graph.Node.Add(Node("Gather", "", [shape, Int64("index_1", [], 1)], [seq], [Attr("axis", 0L)], N("Gather")));
        if (queryOffset is not null)
        {
            // total[b] = offset[b] + S; total_sequence_length = max over b.
            var offset64 = CastTo(TensorProto.Types.DataType.Int64, queryOffset, "query_offset", "CastOffset");
            var ends = N("ends");
            Graph.Node.Add(Node("Add", "", [offset64, seq], [ends], name: N("Add")));
            var ends32 = CastTo(TensorProto.Types.DataType.Int32, ends, "totals", "Cast");
            Graph.Node.Add(Node("ReduceMax", "", [ends32], [total], [Attr("keepdims", 0L)], N("ReduceMax")));
            Graph.Node.Add(Node("Sub", "", [ends32, one], [seqlens], name: N("Sub")));
        }
        else
        {
            var batch = N("batch_size");
            var minusOne = N("total_minus_one");
            Graph.Node.Add(Node("Slice", "", [shape, Int64("starts_0", [1], 0), Int64("ends_1", [1], 1)], [batch], name: N("Slice")));
            var length = seq;
            if (pastKey is not null)
            {
                var pastShape = N("past_shape");
                var past = N("past_length");
                length = N("total_i64");
                Graph.Node.Add(Node("Shape", "", [pastKey], [pastShape], name: N("PastShape")));
                Graph.Node.Add(Node("Gather", "", [pastShape, Int64("index_2", [], 2)], [past], [Attr("axis", 0L)], N("GatherPast")));
                Graph.Node.Add(Node("Add", "", [seq, past], [length], name: N("Add")));
            }
            Graph.Node.Add(Node("Cast", "", [length], [total], [Attr("to", (long)TensorProto.Types.DataType.Int32)], N("Cast")));
            Graph.Node.Add(Node("Sub", "", [total, one], [minusOne], name: N("Sub")));
            Graph.Node.Add(Node("Expand", "", [minusOne, batch], [seqlens], name: N("Expand")));
        }
        var r = (seqlens, total);
        _lengths[key] = r;
        return r;
    }
}
