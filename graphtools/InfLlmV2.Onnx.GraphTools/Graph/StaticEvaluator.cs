using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools;

/// <summary>
/// Folds the small shape-only subgraphs of exported attention (head sizes, scale factors, reshape
/// targets) to numbers, and infers shapes (static or symbolic dims) through the few ops that carry
/// them (Identity, Cast, Transpose, Reshape, Unsqueeze, Concat, Gather, MatMul with a 2-D weight,
/// elementwise and shape-preserving ops such as the normalizations and RotaryEmbedding). Returns null
/// whenever a value or a rank is not known.
/// </summary>
public sealed class StaticEvaluator(GraphIndex graph)
{
    private readonly Dictionary<string, double[]?> _values = new(StringComparer.Ordinal);
    private readonly Dictionary<string, object?[]?> _shapes = new(StringComparer.Ordinal);

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
    /// The shape of a value as far as it is known: a long per fixed dim, the dim_param string per
    /// symbolic dim (from value info), null per unknown dim; null when the rank is unknown.
    /// </summary>
    public object?[]? PartialShape(string value, int depth = 0)
    {
        if (_shapes.TryGetValue(value, out var known)) return known;
        var r = depth > 32 ? null : ComputeShape(value, depth);
        _shapes[value] = r;
        return r;
    }

    /// <summary>The fully static shape of a value, or null.</summary>
    public long[]? Shape(string value, int depth = 0) =>
        PartialShape(value, depth) is { } s && s.All(d => d is long) ? s.Select(d => (long)d!).ToArray() : null;

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
                var shape = Shape(n.Input[0], depth + 1);
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

    private object?[]? ComputeShape(string value, int depth)
    {
        if (graph.Shape(value) is { } declared) return declared.ToArray();
        var n = graph.Producer(value);
        if (n is null) return null;
        object?[]? In(int i) => i < n.Input.Count && n.Input[i].Length > 0 ? PartialShape(n.Input[i], depth + 1) : null;
        switch (n.OpType)
        {
            case "Identity" or "Cast" or "CastLike" or "Neg" or "Sigmoid" or "Relu" or "Tanh" or "Softmax"
                or "RMSNormalization" or "LayerNormalization" or "SimplifiedLayerNormalization" or "RotaryEmbedding" or "TensorScatter":
                // Shape-preserving in their first output (RotaryEmbedding and TensorScatter: the
                // input's shape; the normalizations: X's shape).
                return value == n.Output[0] ? In(0) : null;
            case "Gather":
            {
                // data.shape[:axis] + indices.shape + data.shape[axis + 1:]
                var data = In(0);
                var indices = In(1);
                if (data is null || indices is null) return null;
                long axis = n.Attribute.FirstOrDefault(a => a.Name == "axis")?.I ?? 0;
                if (axis < 0) axis += data.Length;
                if (axis < 0 || axis >= data.Length) return null;
                return [.. data[..(int)axis], .. indices, .. data[((int)axis + 1)..]];
            }
            case "MatMul":
            {
                // [..., M, K] x [K, N] -> [..., M, N] (a 2-D right operand: the projections of exported LLMs).
                var a = In(0);
                var b = In(1);
                if (a is not { Length: >= 2 } || b is not { Length: 2 }) return null;
                return [.. a[..^1], b[1]];
            }
            case "Transpose":
            {
                var x = In(0);
                var perm = n.Attribute.FirstOrDefault(a => a.Name == "perm")?.Ints.ToArray();
                if (x is null) return null;
                perm ??= Enumerable.Range(0, x.Length).Reverse().Select(i => (long)i).ToArray();
                return perm.Length == x.Length ? perm.Select(p => x[p]).ToArray() : null;
            }
            case "Reshape":
            {
                var x = In(0);
                var target = n.Input.Count > 1 ? Values(n.Input[1], depth + 1) : null;
                if (target is null || (n.Attribute.FirstOrDefault(a => a.Name == "allowzero")?.I ?? 0) != 0) return null;
                var r = target.Select((t, i) => t == 0 ? (x is not null && i < x.Length ? x[i] : null) : t < 0 ? null : (object?)(long)t).ToArray();
                if (x is null || !x.All(d => d is long)) return r;
                // Fully static input: infer a -1 and check the element count.
                long total = x.Aggregate(1L, (p, d) => p * (long)d!);
                int unknown = Array.IndexOf(target, -1.0);
                if (unknown >= 0 && r.Where((d, i) => i != unknown).All(d => d is long))
                {
                    long rest = r.Where((d, i) => i != unknown).Aggregate(1L, (p, d) => p * (long)d!);
                    if (rest == 0 || total % rest != 0) return null;
                    r[unknown] = total / rest;
                }
                return r.All(d => d is long) && r.Aggregate(1L, (p, d) => p * (long)d!) != total ? null : r;
            }
            case "Unsqueeze":
            {
                var x = In(0);
                var axes = Axes(n);
                if (x is null || axes is null) return null;
                var r = x.ToList();
                int rank = x.Length + axes.Length;
                foreach (var a in axes.Select(a => (int)(a < 0 ? a + rank : a)).Order()) r.Insert(a, 1L);
                return r.ToArray();
            }
            case "Concat":
            {
                var parts = n.Input.Select(i => PartialShape(i, depth + 1)).ToList();
                if (parts.Any(p => p is null) || parts.Count == 0 || parts.Any(p => p!.Length != parts[0]!.Length)) return null;
                long axis = n.Attribute.FirstOrDefault(a => a.Name == "axis")?.I ?? 0;
                if (axis < 0) axis += parts[0]!.Length;
                var r = (object?[])parts[0]!.Clone();
                r[axis] = parts.All(p => p![axis] is long) ? parts.Sum(p => (long)p![axis]!) : null;
                return r;
            }
            case "Mul" or "Div" or "Add" or "Sub":
            {
                var a = In(0);
                // A one-element constant operand broadcasts like a scalar.
                var b = In(1) ?? (Values(n.Input[1], depth + 1) is { Length: 1 } ? [] : null);
                if (a is null || b is null) return null;
                int rank = Math.Max(a.Length, b.Length);
                var r = new object?[rank];
                for (int i = 0; i < rank; i++)
                {
                    object? da = i - (rank - a.Length) >= 0 ? a[i - (rank - a.Length)] : 1L;
                    object? db = i - (rank - b.Length) >= 0 ? b[i - (rank - b.Length)] : 1L;
                    if (Equals(da, db) || Equals(db, 1L)) r[i] = da;
                    else if (Equals(da, 1L)) r[i] = db;
                    else if (da is long && db is long) return null;  // incompatible
                    else r[i] = null;
                }
                return r;
            }
            default:
                return null;
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
