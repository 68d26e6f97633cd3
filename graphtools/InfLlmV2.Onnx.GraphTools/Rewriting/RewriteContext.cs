using InfLlmV2.Onnx.GraphTools.Proto;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.GraphTools.Rewriting;

/// <summary>What a rule's Rewrite may touch: the graph being rewritten, the options, shared values.</summary>
public sealed class RewriteContext
{
    private readonly Dictionary<string, (string SeqlensK, string Total)> _lengths = new(StringComparer.Ordinal);

    internal RewriteContext(ModelProto model, GraphProto graph, GraphIndex index, RewriteOptions options, bool isMainGraph)
    {
        Model = model;
        Graph = graph;
        Index = index;
        Options = options;
        IsMainGraph = isMainGraph;
    }

    /// <summary>The whole model (for opset imports).</summary>
    public ModelProto Model { get; }

    /// <summary>The graph holding the matched node.</summary>
    public GraphProto Graph { get; }

    /// <summary>Dataflow index of <see cref="Graph"/> as it was before this rewrite pass.</summary>
    public GraphIndex Index { get; }

    /// <summary>Rewrite options.</summary>
    public RewriteOptions Options { get; }

    /// <summary>Whether <see cref="Graph"/> is the model's main graph (graph inputs/outputs may be added).</summary>
    public bool IsMainGraph { get; }

    /// <summary>The SwitchableAttention attributes: heads, scale/softcap when given, sparse options.</summary>
    public List<AttributeProto> SwitchableAttributes(int numHeads, int kvNumHeads, IEnumerable<AttributeProto> carried)
    {
        var attrs = new List<AttributeProto> { Attr("num_heads", (long)numHeads), Attr("kv_num_heads", (long)kvNumHeads) };
        attrs.AddRange(carried);
        foreach (var (name, value) in Options.SparseAttributes()) attrs.Add(Attr(name, value));
        return attrs;
    }

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
    /// seqlens_k and total_sequence_length for a query [B, S, *] after a past [B, Hkv, P, D] of
    /// uniform length (no padding): total = P + S. Built once per past.
    /// </summary>
    public (string SeqlensK, string Total) LengthsFromQueryAndPast(string query3d, string pastKey)
    {
        var key = "past|" + pastKey;
        if (_lengths.TryGetValue(key, out var known)) return known;
        string N(string hint) => Index.UniqueName($"infllmv2/lengths/{hint}");
        var qShape = N("query_shape");
        var pShape = N("past_shape");
        var seq = N("sequence_length");
        var past = N("past_length");
        var batch = N("batch_size");
        var totalI64 = N("total_i64");
        var total = N("total_sequence_length");
        var one = N("one");
        var minusOne = N("total_minus_one");
        var seqlens = N("seqlens_k");
        var idx1 = N("index_1");
        var idx2 = N("index_2");
        var range0 = N("starts_0");
        var range1 = N("ends_1");
        Graph.Initializer.Add(TensorProtos.Int64(idx1, [], [1]));
        Graph.Initializer.Add(TensorProtos.Int64(idx2, [], [2]));
        Graph.Initializer.Add(TensorProtos.Int64(range0, [1], [0]));
        Graph.Initializer.Add(TensorProtos.Int64(range1, [1], [1]));
        Graph.Initializer.Add(TensorProtos.Int32(one, [], [1]));
        Graph.Node.Add(Node("Shape", "", [query3d], [qShape], name: N("Shape")));
        Graph.Node.Add(Node("Shape", "", [pastKey], [pShape], name: N("PastShape")));
        Graph.Node.Add(Node("Gather", "", [qShape, idx1], [seq], [Attr("axis", 0L)], N("Gather")));
        Graph.Node.Add(Node("Gather", "", [pShape, idx2], [past], [Attr("axis", 0L)], N("GatherPast")));
        Graph.Node.Add(Node("Add", "", [seq, past], [totalI64], name: N("Add")));
        Graph.Node.Add(Node("Slice", "", [qShape, range0, range1], [batch], name: N("Slice")));
        Graph.Node.Add(Node("Cast", "", [totalI64], [total], [Attr("to", (long)TensorProto.Types.DataType.Int32)], N("Cast")));
        Graph.Node.Add(Node("Sub", "", [total, one], [minusOne], name: N("Sub")));
        Graph.Node.Add(Node("Expand", "", [minusOne, batch], [seqlens], name: N("Expand")));
        var r = (seqlens, total);
        _lengths[key] = r;
        return r;
    }

    /// <summary>
    /// seqlens_k (int32 [B]) and total_sequence_length (int32 scalar) for a query [B, S, *] without
    /// past and without padding: total = S, seqlens_k = S - 1 for every entry. Built once per
    /// <paramref name="shareKey"/> and reused by every layer with the same key.
    /// </summary>
    public (string SeqlensK, string Total) LengthsFromQuery(string query3d, string shareKey)
    {
        if (_lengths.TryGetValue(shareKey, out var known)) return known;
        string N(string hint) => Index.UniqueName($"infllmv2/lengths/{hint}");
        var shape = N("query_shape");
        var seq = N("sequence_length");
        var batch = N("batch_size");
        var total = N("total_sequence_length");
        var one = N("one");
        var minusOne = N("total_minus_one");
        var seqlens = N("seqlens_k");
        var idx1 = N("index_1");
        var range0 = N("starts_0");
        var range1 = N("ends_1");
        Graph.Initializer.Add(TensorProtos.Int64(idx1, [], [1]));
        Graph.Initializer.Add(TensorProtos.Int64(range0, [1], [0]));
        Graph.Initializer.Add(TensorProtos.Int64(range1, [1], [1]));
        Graph.Initializer.Add(TensorProtos.Int32(one, [], [1]));
        Graph.Node.Add(Node("Shape", "", [query3d], [shape], name: N("Shape")));
        Graph.Node.Add(Node("Gather", "", [shape, idx1], [seq], [Attr("axis", 0L)], N("Gather")));
        Graph.Node.Add(Node("Slice", "", [shape, range0, range1], [batch], name: N("Slice")));
        Graph.Node.Add(Node("Cast", "", [seq], [total], [Attr("to", (long)TensorProto.Types.DataType.Int32)], N("Cast")));
        Graph.Node.Add(Node("Sub", "", [total, one], [minusOne], name: N("Sub")));
        Graph.Node.Add(Node("Expand", "", [minusOne, batch], [seqlens], name: N("Expand")));
        var r = (seqlens, total);
        _lengths[shareKey] = r;
        return r;
    }
}
