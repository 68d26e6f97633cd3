using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.Models;

/// <summary>
/// optimum's merged decoder layout (<c>decoder_model_merged.onnx</c>): the main graph holds the
/// weights and one <c>If</c> on the bool input <c>use_cache_branch</c> [1]; its then-branch is the
/// decoder with past, its else-branch the decoder without (past replaced by an empty [B, heads, 0, D]
/// tensor built inside the branch, which never reads the past inputs). Both branches read the main
/// graph's inputs and initializers from the enclosing scope; their own values are prefixed with
/// the branch name.
/// </summary>
internal static class MergedDecoder
{
    public const string UseCacheBranch = "use_cache_branch";

    public static ModelProto Wrap(ModelProto decoder, TinyDecoderConfig c)
    {
        var inner = decoder.Graph;
        var g = new GraphProto { Name = inner.Name };
        g.Input.AddRange(inner.Input.Select(i => i.Clone()));
        g.Input.Add(Tensor(UseCacheBranch, TensorProto.Types.DataType.Bool, 1));
        g.Output.AddRange(inner.Output.Select(o => o.Clone()));
        g.Initializer.AddRange(inner.Initializer.Select(t => t.Clone()));
        var iff = Node("If", "", [UseCacheBranch], inner.Output.Select(o => o.Name).ToArray(), name: "/use_cache_branch/If");
        iff.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch(inner, "with_past", c, emptyPast: false) });
        iff.Attribute.Add(new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch(inner, "no_past", c, emptyPast: true) });
        g.Node.Add(iff);
        var m = decoder.Clone();
        m.Graph = g;
        return m;
    }

    private static GraphProto Branch(GraphProto inner, string prefix, TinyDecoderConfig c, bool emptyPast)
    {
        var b = new GraphProto { Name = prefix };
        var produced = inner.Node.SelectMany(n => n.Output).Where(o => o.Length > 0).ToHashSet(StringComparer.Ordinal);
        var pasts = Enumerable.Range(0, c.Layers).SelectMany(l => new[] { c.PastName(l, "key"), c.PastName(l, "value") }).ToHashSet(StringComparer.Ordinal);
        string empty = $"{prefix}/empty_past";
        if (emptyPast)
        {
            // [batch, cache heads, 0, head size] zeros: the no-past decoder's (empty) cache.
            int heads = c.Form == DecoderAttentionForm.MultiHeadAttention ? c.NumHeads : c.KvNumHeads;
            b.Initializer.Add(TensorProtos.Int64($"{prefix}/zero", [], [0]));
            b.Initializer.Add(TensorProtos.Int64($"{prefix}/axis0", [1], [0]));
            b.Initializer.Add(TensorProtos.Int64($"{prefix}/heads_0_d", [3], [heads, 0, c.HeadSize]));
            b.Node.Add(Node("Shape", "", ["input_ids"], [$"{prefix}/ids_shape"], name: $"/{prefix}/empty_past/Shape"));
            b.Node.Add(Node("Gather", "", [$"{prefix}/ids_shape", $"{prefix}/zero"], [$"{prefix}/batch"], [Attr("axis", 0L)], $"/{prefix}/empty_past/Gather"));
            b.Node.Add(Node("Unsqueeze", "", [$"{prefix}/batch", $"{prefix}/axis0"], [$"{prefix}/batch_1d"], name: $"/{prefix}/empty_past/Unsqueeze"));
            b.Node.Add(Node("Concat", "", [$"{prefix}/batch_1d", $"{prefix}/heads_0_d"], [$"{prefix}/empty_shape"], [Attr("axis", 0L)], $"/{prefix}/empty_past/Concat"));
            b.Node.Add(Node("ConstantOfShape", "", [$"{prefix}/empty_shape"], [empty],
                [new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = TensorProtos.Float("", [1], [0f]) }], $"/{prefix}/empty_past/ConstantOfShape"));
        }
        string R(string v) => v.Length == 0 ? v : produced.Contains(v) ? $"{prefix}/{v}" : emptyPast && pasts.Contains(v) ? empty : v;
        foreach (var n in inner.Node)
        {
            var copy = n.Clone();
            copy.Name = $"/{prefix}{n.Name}";
            for (int i = 0; i < copy.Input.Count; i++) copy.Input[i] = R(copy.Input[i]);
            for (int i = 0; i < copy.Output.Count; i++) copy.Output[i] = R(copy.Output[i]);
            b.Node.Add(copy);
        }
        foreach (var v in inner.ValueInfo)
        {
            var copy = v.Clone();
            copy.Name = R(v.Name);
            b.ValueInfo.Add(copy);
        }
        foreach (var o in inner.Output)
        {
            var copy = o.Clone();
            copy.Name = R(o.Name);
            b.Output.Add(copy);
        }
        return b;
    }
}
