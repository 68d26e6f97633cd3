using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools;

/// <summary>
/// Folds the small constant subgraphs of exported attention (head sizes, scale factors such as
/// 1/√D in floating point, reshape targets) to numbers; integer values and every shape come from
/// the one shape pass, <see cref="ShapeInference"/> (which folds the integer shape arithmetic,
/// symbols included). Returns null whenever a value or a rank is not known.
/// </summary>
public sealed class StaticEvaluator(GraphIndex graph)
{
    private readonly Dictionary<string, double[]?> _values = new(StringComparer.Ordinal);

    /// <summary>The elements of a small constant-foldable tensor, or null.</summary>
    public double[]? Values(string value, int depth = 0)
    {
        if (_values.TryGetValue(value, out var known)) return known;
        var r = depth > 32 ? null : ComputeValues(value, depth);
        _values[value] = r;
        return r;
    }

    /// <summary>A scalar (or one-element) constant, or null.</summary>
    public double? Scalar(string value) => Values(value) is { Length: 1 } v ? v[0] : null;

    /// <summary>
    /// The shape of a value as far as it is known: a long per fixed dim, a symbol string per symbolic
    /// dim, null per unknown dim (an unknown dim is never taken to equal anything); null when the rank
    /// is unknown. The one shape pass is <see cref="ShapeInference"/> (declared value info first,
    /// through <see cref="GraphIndex.Shape"/>); this evaluator only folds values.
    /// </summary>
    public object?[]? PartialShape(string value) => graph.Shape(value)?.ToArray();

    /// <summary>The fully static shape of a value, or null.</summary>
    public long[]? Shape(string value) =>
        PartialShape(value) is { } s && s.All(d => d is long) ? s.Select(d => (long)d!).ToArray() : null;

    /// <summary>The axes of an Unsqueeze/Squeeze node (input 1 since opset 13, attribute before), or null.</summary>
    public double[]? Axes(NodeProto node) =>
        node.Input.Count > 1 ? Values(node.Input[1]) : node.Attribute.FirstOrDefault(a => a.Name == "axes")?.Ints.Select(v => (double)v).ToArray();

    private double[]? ComputeValues(string value, int depth)
    {
        if (graph.Initializer(value) is { } init) return FromTensor(init);
        var n = graph.Producer(value);
        if (n is null) return null;
        double[]? In(int i) => i < n.Input.Count && n.Input[i].Length > 0 ? Values(n.Input[i], depth + 1) : null;
        AttributeProto? A(string name) => n.Attribute.FirstOrDefault(a => a.Name == name);
        switch (n.OpType)
        {
            case "Constant":
                if (A("value") is { T: { } t }) return FromTensor(t);
                if (A("value_float") is { } f) return [f.F];
                if (A("value_int") is { } i) return [i.I];
                if (A("value_ints") is { } ints) return ints.Ints.Select(x => (double)x).ToArray();
                if (A("value_floats") is { } floats) return floats.Floats.Select(x => (double)x).ToArray();
                return null;
            case "Identity" or "Cast" or "CastLike":
                return In(0);
            case "Sqrt": return In(0)?.Select(Math.Sqrt).ToArray();
            case "Reciprocal": return In(0)?.Select(x => 1 / x).ToArray();
            case "Mul" or "Div" or "Add" or "Sub":
            {
                var a = In(0);
                var b = In(1);
                if (a is null || b is null || (a.Length != b.Length && a.Length != 1 && b.Length != 1)) return null;
                int len = Math.Max(a.Length, b.Length);
                return Enumerable.Range(0, len).Select(k =>
                {
                    double x = a[a.Length == 1 ? 0 : k], y = b[b.Length == 1 ? 0 : k];
                    return n.OpType switch { "Mul" => x * y, "Div" => x / y, "Add" => x + y, _ => x - y };
                }).ToArray();
            }
            case "Shape":
            {
                var shape = Shape(n.Input[0]);
                if (shape is null) return null;
                int rank = shape.Length;
                long start = A("start")?.I ?? 0, end = A("end")?.I ?? rank;
                if (start < 0) start += rank;
                if (end < 0) end += rank;
                start = Math.Clamp(start, 0, rank);
                end = Math.Clamp(end, start, rank);
                return shape[(int)start..(int)end].Select(x => (double)x).ToArray();
            }
            case "Concat":
            {
                var parts = n.Input.Select(i => Values(i, depth + 1)).ToList();
                return parts.Any(p => p is null) ? null : parts.SelectMany(p => p!).ToArray();
            }
            case "Gather":
            {
                var data = In(0);
                var idx = In(1);
                if (data is null || idx is null || (A("axis")?.I ?? 0) != 0) return null;
                return idx.Select(i => data[(int)(i < 0 ? i + data.Length : i)]).ToArray();
            }
            case "Squeeze" or "Unsqueeze":
                return In(0);
            default:
                // Integer values folded by the shape pass (fixed numbers only).
                return graph.Inferred.Get(value).Values is { } folded && folded.All(e => e is long)
                    ? folded.Select(e => (double)(long)e!).ToArray()
                    : null;
        }
    }

    private static double[]? FromTensor(TensorProto t)
    {
        if (t.DataLocation == TensorProto.Types.DataLocation.External || TensorProtos.ElementCount(t) > 64) return null;
        try
        {
            var v = TensorProtos.ToDoubles(t);
            return v.Any(double.IsNaN) ? null : v;
        }
        catch (NotSupportedException)
        {
            return null;
        }
    }
}
