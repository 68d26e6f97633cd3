using InfLlmV2.Onnx.GraphTools.Proto;
using DataType = InfLlmV2.Onnx.GraphTools.Proto.TensorProto.Types.DataType;

namespace InfLlmV2.Onnx.GraphTools;

/// <summary>What shape inference knows of one value.</summary>
/// <param name="ElementType">Element type, or null when unknown.</param>
/// <param name="Shape">Dims (a long per fixed dim, a symbol string per symbolic dim, null per unknown dim), or null when the rank is unknown.</param>
/// <param name="Values">For small integer tensors: the elements (long or symbol string), or null.</param>
public sealed record InferredValue(DataType? ElementType, object?[]? Shape, object?[]? Values);

/// <summary>
/// A symbolic shape pass over a whole graph, in dataflow order: element types, shapes whose dims
/// are fixed numbers or symbols (<c>batch_size</c>, <c>sequence_length</c>, sums such as
/// <c>past_sequence_length + sequence_length</c>) and the values of small integer tensors (the
/// Shape/Gather/Concat/Reshape arithmetic of exported graphs, folded, symbols included). It covers
/// the ONNX ops LLM exports use and the <c>com.microsoft</c> contrib attention ops; any other op (and
/// If/Loop/Scan) leaves its outputs unknown: nothing is guessed. Declared value info wins where it
/// knows a dim; inference fills what it leaves open.
/// </summary>
public sealed class ShapeInference
{
    /// <summary>Integer tensors up to this many elements have their values folded.</summary>
    public const int MaxFoldedElements = 64;

    private readonly GraphIndex _g;
    private readonly Dictionary<string, InferredValue> _known = new(StringComparer.Ordinal);

    private ShapeInference(GraphIndex graph) => _g = graph;

    /// <summary>Runs the pass over <paramref name="graph"/>.</summary>
    public static ShapeInference Run(GraphIndex graph)
    {
        var s = new ShapeInference(graph);
        s.RunAll();
        return s;
    }

    /// <summary>What is known of <paramref name="value"/> (all null when nothing is).</summary>
    public InferredValue Get(string value) => _known.GetValueOrDefault(value) ?? _g.Outer?.Inferred.Get(value) ?? Unknown;

    private static readonly InferredValue Unknown = new(null, null, null);

    /// <summary>A dim as text: the number, the symbol, or "?".</summary>
    public static string Format(object? dim) => dim switch { long v => v.ToString(System.Globalization.CultureInfo.InvariantCulture), string s => s, _ => "?" };

    /// <summary>A shape as text, e.g. <c>[batch_size, sequence_length, 4, 16]</c>; "?" for an unknown rank.</summary>
    public static string Format(IReadOnlyList<object?>? shape) => shape is null ? "?" : "[" + string.Join(", ", shape.Select(Format)) + "]";

    private void RunAll()
    {
        var graph = _g.Graph;
        foreach (var t in graph.Initializer)
            _known[t.Name] = new((DataType)t.DataType, t.Dims.Select(d => (object?)d).ToArray(), IntValues(t));
        foreach (var v in graph.Input)
            _known[v.Name] = Declared(v.Name) ?? Unknown;
        // Kahn's order over the nodes (exporters usually emit them sorted; this also copes when not).
        var produced = new HashSet<string>(graph.Node.SelectMany(n => n.Output).Where(o => o.Length > 0), StringComparer.Ordinal);
        var pending = new Dictionary<NodeProto, int>();
        var waiting = new Dictionary<string, List<NodeProto>>(StringComparer.Ordinal);
        var ready = new Queue<NodeProto>();
        foreach (var n in graph.Node)
        {
            var deps = n.Input.Where(i => i.Length > 0 && produced.Contains(i)).Distinct().ToList();
            pending[n] = deps.Count;
            foreach (var d in deps)
            {
                if (!waiting.TryGetValue(d, out var l)) waiting[d] = l = [];
                l.Add(n);
            }
            if (deps.Count == 0) ready.Enqueue(n);
        }
        while (ready.Count > 0)
        {
            var n = ready.Dequeue();
            Infer(n);
            foreach (var o in n.Output.Where(o => o.Length > 0))
                if (waiting.TryGetValue(o, out var l))
                    foreach (var c in l)
                        if (--pending[c] == 0) ready.Enqueue(c);
        }
    }

    private InferredValue? Declared(string name)
    {
        var t = _g.TensorType(name);
        if (t is null) return null;
        object?[]? shape = t.Shape?.Dim.Select(d => d.ValueCase switch
        {
            TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue => (object?)d.DimValue,
            TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam when !GraphIndex.IsPlaceholderSymbol(d.DimParam) => d.DimParam,
            _ => null,
        }).ToArray();
        return new(t.ElemType > 0 ? (DataType)t.ElemType : null, shape, null);
    }

    private void Set(NodeProto n, int output, DataType? type, object?[]? shape, object?[]? values = null)
    {
        if (output >= n.Output.Count || n.Output[output].Length == 0) return;
        var name = n.Output[output];
        if (values is not null && (values.Length > MaxFoldedElements || shape is not null && shape.All(d => d is long) && Product(shape) != values.Length))
            values = null;
        if (values is not null && shape is null) values = null;
        // Declared info wins per dim.
        if (Declared(name) is { } d)
        {
            type = d.ElementType ?? type;
            if (d.Shape is not null)
            {
                if (shape is not null && shape.Length == d.Shape.Length)
                    shape = d.Shape.Select((x, i) => x ?? shape[i]).ToArray();
                else if (shape is null)
                    shape = d.Shape;
                // else: a declared rank that contradicts the dataflow (seen in genai builder exports: a
                // Constant of dims [1] declared as a scalar) is not believed.
            }
        }
        _known[name] = new(type, shape, values);
    }

    private InferredValue In(NodeProto n, int i) => i < n.Input.Count && n.Input[i].Length > 0 ? Get(n.Input[i]) : Unknown;

    private static long? AttrI(NodeProto n, string name) => n.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.I : null;

    private static long[]? AttrInts(NodeProto n, string name) => n.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.Ints.ToArray() : null;

    private static long Product(object?[] shape) => shape.Aggregate(1L, (p, d) => p * (long)d!);

    // The integer elements of a value (no symbols), or null.
    private static long[]? Ints(InferredValue v) => v.Values is { } x && x.All(e => e is long) ? x.Select(e => (long)e!).ToArray() : null;

    private static object?[]? IntValues(TensorProto t)
    {
        if (t.DataType is not ((int)DataType.Int64 or (int)DataType.Int32 or (int)DataType.Bool)) return null;
        if (t.DataLocation == TensorProto.Types.DataLocation.External || TensorProtos.ElementCount(t) > MaxFoldedElements) return null;
        try { return TensorProtos.ToDoubles(t).Select(d => (object?)(long)d).ToArray(); }
        catch (NotSupportedException) { return null; }
    }

    private static bool IsInt(DataType? t) => t is DataType.Int64 or DataType.Int32 or DataType.Bool;

    private static readonly HashSet<string> Unary =
    [
        "Identity", "Neg", "Sqrt", "Reciprocal", "Sigmoid", "Relu", "Tanh", "Softmax", "LogSoftmax", "Erf", "Exp", "Log", "Abs",
        "Not", "Floor", "Ceil", "Gelu", "FastGelu", "BiasGelu", "QuickGelu", "Sin", "Cos", "Trilu", "IsNaN", "IsInf", "Softplus",
        "HardSigmoid", "Silu", "Dropout",
    ];

    private static readonly HashSet<string> Comparisons = ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor"];

    private static readonly HashSet<string> Binary = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "BitShift"];

    private void Infer(NodeProto n)
    {
        bool contrib = n.Domain == "com.microsoft";
        if (n.Domain is not ("" or "ai.onnx" or "com.microsoft")) return;
        var x = In(n, 0);
        switch (n.OpType)
        {
            case "Constant":
            {
                var t = n.Attribute.FirstOrDefault(a => a.Name == "value")?.T;
                if (t is not null) Set(n, 0, (DataType)t.DataType, t.Dims.Select(d => (object?)d).ToArray(), IntValues(t));
                else if (AttrI(n, "value_int") is long vi) Set(n, 0, DataType.Int64, [], [vi]);
                else if (AttrInts(n, "value_ints") is { Length: > 0 } vs && n.Attribute.Any(a => a.Name == "value_ints"))
                    Set(n, 0, DataType.Int64, [(long)vs.Length], vs.Select(v => (object?)v).ToArray());
                else if (n.Attribute.Any(a => a.Name == "value_float")) Set(n, 0, DataType.Float, []);
                else if (n.Attribute.FirstOrDefault(a => a.Name == "value_floats") is { } fs) Set(n, 0, DataType.Float, [(long)fs.Floats.Count]);
                return;
            }
            case "Cast":
                Set(n, 0, AttrI(n, "to") is long to ? (DataType)to : null, x.Shape, IsInt(AttrI(n, "to") is long t2 ? (DataType)t2 : null) ? x.Values : null);
                return;
            case "CastLike":
                Set(n, 0, In(n, 1).ElementType, x.Shape, IsInt(In(n, 1).ElementType) ? x.Values : null);
                return;
            case "Neg":
                Set(n, 0, x.ElementType, x.Shape, Ints(x) is { } neg ? neg.Select(v => (object?)(-v)).ToArray() : null);
                return;
            case "Squeeze" or "Unsqueeze":
                InferSqueeze(n, x);
                return;
            case "SimplifiedLayerNormalization" or "LayerNormalization" or "RMSNormalization" or "SkipSimplifiedLayerNormalization"
                or "SkipLayerNormalization" or "RotaryEmbedding" or "TensorScatter":
                Set(n, 0, x.ElementType, x.Shape);
                if (n.OpType.StartsWith("Skip", StringComparison.Ordinal)) Set(n, 3, x.ElementType, x.Shape);
                return;
            case "Shape":
            {
                if (x.Shape is null) { Set(n, 0, DataType.Int64, null); return; }
                int rank = x.Shape.Length;
                long start = Norm(AttrI(n, "start") ?? 0, rank), end = Norm(AttrI(n, "end") ?? rank, rank);
                end = Math.Max(start, end);
                var dims = x.Shape[(int)start..(int)end];
                Set(n, 0, DataType.Int64, [(long)dims.Length], dims.All(d => d is not null) ? dims : null);
                return;
            }
            case "Size":
                Set(n, 0, DataType.Int64, [], x.Shape is { } sz && sz.All(d => d is long) ? [Product(sz)] : null);
                return;
            case "Transpose":
            {
                var perm = AttrInts(n, "perm");
                if (x.Shape is null) { Set(n, 0, x.ElementType, null); return; }
                perm ??= Enumerable.Range(0, x.Shape.Length).Reverse().Select(i => (long)i).ToArray();
                Set(n, 0, x.ElementType, perm.Length == x.Shape.Length ? perm.Select(p => x.Shape[p]).ToArray() : null);
                return;
            }
            case "Reshape":
                Set(n, 0, x.ElementType, ReshapeShape(x.Shape, In(n, 1).Values, (AttrI(n, "allowzero") ?? 0) != 0), x.Values);
                return;
            case "Expand":
            {
                var target = In(n, 1).Values;
                // Target values unknown but their count known: the rank, and every dim of x other than 1.
                if (target is null && In(n, 1).Shape is [long count] && x.Shape is not null && count >= x.Shape.Length && count <= 16)
                {
                    var dims = new object?[count];
                    for (int i = 0; i < count; i++)
                    {
                        int j = i - (int)count + x.Shape.Length;
                        dims[i] = j >= 0 && x.Shape[j] is { } d && !Equals(d, 1L) ? d : null;
                    }
                    Set(n, 0, x.ElementType, dims);
                    return;
                }
                Set(n, 0, x.ElementType, x.Shape is null || target is null ? null : Broadcast(x.Shape, target.Select(t => Equals(t, 1L) ? 1L : t).ToArray()));
                return;
            }
            case "Concat":
                InferConcat(n);
                return;
            case "Slice":
                InferSlice(n, x);
                return;
            case "Gather":
                InferGather(n, x, In(n, 1));
                return;
            case "Range":
                InferRange(n);
                return;
            case "ConstantOfShape":
            {
                var t = n.Attribute.FirstOrDefault(a => a.Name == "value")?.T;
                var type = t is null ? DataType.Float : (DataType)t.DataType;
                var shape = In(n, 0).Values;
                object?[]? fill = null;
                if (shape is not null && shape.All(d => d is long) && IsInt(type) && t is not null && IntValues(t) is [var f])
                    fill = Enumerable.Repeat(f, (int)Math.Min(Product(shape), MaxFoldedElements + 1)).ToArray();
                Set(n, 0, type, shape, fill);
                return;
            }
            case "Where":
            {
                var s = Broadcast(Broadcast(In(n, 0).Shape, In(n, 1).Shape), In(n, 2).Shape);
                Set(n, 0, In(n, 1).ElementType ?? In(n, 2).ElementType, s);
                return;
            }
            case "MatMul":
                Set(n, 0, x.ElementType ?? In(n, 1).ElementType, MatMulShape(x.Shape, In(n, 1).Shape));
                return;
            case "ReduceSum" or "ReduceMean" or "ReduceMax" or "ReduceMin" or "ReduceProd" or "ReduceL2" or "ArgMax" or "ArgMin":
                InferReduce(n, x);
                return;
            case "Split":
                InferSplit(n, x);
                return;
            case "MultiHeadAttention" when contrib:
                InferMultiHeadAttention(n, x);
                return;
            case "GroupQueryAttention" when contrib:
            {
                long heads = AttrI(n, "num_heads") ?? 0, kvHeads = AttrI(n, "kv_num_heads") ?? 0;
                bool packed = n.Input.Count < 2 || n.Input[1].Length == 0;
                long? d = In(n, 3).Shape is { Length: 4 } past && past[3] is long pd ? pd
                    : x.Shape is { Length: 3 } && x.Shape[2] is long hid && heads > 0 ? hid / (packed ? heads + 2 * kvHeads : heads) : null;
                object? b = x.Shape is { Length: 3 } ? x.Shape[0] : null, s = x.Shape is { Length: 3 } ? x.Shape[1] : null;
                Set(n, 0, x.ElementType, x.Shape is { Length: 3 } ? [b, s, d is long dd && heads > 0 ? heads * dd : null] : null);
                // present: past buffer or past + new; its length is not known symbolically.
                for (int o = 1; o <= 2; o++) Set(n, o, x.ElementType, [b, kvHeads > 0 ? kvHeads : null, null, d]);
                return;
            }
            case "Attention" when contrib:
            {
                // Packed-weight attention: input [B, S, in], weights [in, 3·hidden] (or qkv_hidden_sizes).
                var w = In(n, 1).Shape;
                var sizes = AttrInts(n, "qkv_hidden_sizes");
                long? hidden = sizes is { Length: 3 } ? sizes[2] : w is { Length: 2 } && w[1] is long wc ? wc / 3 : null;
                Set(n, 0, x.ElementType, x.Shape is { Length: 3 } ? [x.Shape[0], x.Shape[1], hidden] : null);
                return;
            }
            case "Attention":
                InferOnnxAttention(n, x);
                return;
        }
        if (Unary.Contains(n.OpType) && !contrib || n.OpType is "FastGelu" or "BiasGelu" or "QuickGelu" or "Gelu")
        {
            Set(n, 0, n.OpType is "IsNaN" or "IsInf" ? DataType.Bool : x.ElementType, x.Shape);
            return;
        }
        if (Comparisons.Contains(n.OpType) || Binary.Contains(n.OpType))
        {
            var y = In(n, 1);
            var shape = Broadcast(x.Shape, y.Shape);
            var type = Comparisons.Contains(n.OpType) ? DataType.Bool : x.ElementType ?? y.ElementType;
            object?[]? values = null;
            if (n.OpType is "Add" or "Sub" or "Mul" or "Div" && IsInt(type) && x.Values is { } a && y.Values is { } b
                && (a.Length == b.Length || a.Length == 1 || b.Length == 1))
            {
                int len = Math.Max(a.Length, b.Length);
                values = Enumerable.Range(0, len).Select(k => Arith(n.OpType, a[a.Length == 1 ? 0 : k], b[b.Length == 1 ? 0 : k])).ToArray();
                if (values.Any(v => v is null)) values = null;
            }
            Set(n, 0, type, shape, values);
        }
    }

    private static long Norm(long axis, long rank) => Math.Clamp(axis < 0 ? axis + rank : axis, 0, rank);

    // Integer arithmetic on dims: numbers exactly; a symbol plus or minus 0, times or divided by 1;
    // symbol sums (a + b) kept as text so equal sums compare equal. Anything else is unknown.
    private static object? Arith(string op, object? a, object? b)
    {
        switch (a, b)
        {
            case (long x, long y):
                return op switch
                {
                    "Add" => x + y,
                    "Sub" => x - y,
                    "Mul" => x * y,
                    "Div" => y != 0 ? (x - (((x % y) + y) % y)) / y : null,  // floor division as Div on ints
                    _ => null,
                };
            case (string, 0L) when op is "Add" or "Sub": return a;
            case (0L, string) when op == "Add": return b;
            case (string, 1L) when op is "Mul" or "Div": return a;
            case (1L, string) when op == "Mul": return b;
            case (string s, string t) when op == "Add": return SymbolSum(s, t);
            default: return null;
        }
    }

    // "a + b" with the terms sorted, so that a + b and b + a are the same symbol.
    private static string SymbolSum(params string[] terms) =>
        string.Join(" + ", terms.SelectMany(t => t.Split(" + ")).Order(StringComparer.Ordinal));

    /// <summary>The sum of two dims: a number, a symbol sum such as <c>past_sequence_length + sequence_length</c>, or null when either is unknown.</summary>
    public static object? AddDims(object? a, object? b) =>
        a is null || b is null ? null : a is long x && b is long y ? x + y : Arith("Add", a, b);

    /// <summary>Numpy-style broadcast of two shapes; null when a rank is unknown or fixed dims clash.</summary>
    private static object?[]? Broadcast(object?[]? a, object?[]? b)
    {
        if (a is null || b is null) return null;
        int rank = Math.Max(a.Length, b.Length);
        var r = new object?[rank];
        for (int i = 0; i < rank; i++)
        {
            object? da = i - (rank - a.Length) >= 0 ? a[i - (rank - a.Length)] : 1L;
            object? db = i - (rank - b.Length) >= 0 ? b[i - (rank - b.Length)] : 1L;
            if (Equals(da, db) || Equals(db, 1L)) r[i] = da;
            else if (Equals(da, 1L)) r[i] = db;
            else if (da is long && db is long) return null;
            // An unknown dim against a known one other than 1: it is 1 or the same (else the op fails), so the known one.
            else if (da is null) r[i] = db;
            else if (db is null) r[i] = da;
            else r[i] = null;
        }
        return r;
    }

    private static object?[]? MatMulShape(object?[]? a, object?[]? b)
    {
        if (a is null || b is null || a.Length == 0 || b.Length == 0) return null;
        if (b.Length == 1) return a.Length == 1 ? [] : a[..^1];
        if (a.Length == 1) return [.. b[..^2], b[^1]];
        var batch = Broadcast(a[..^2], b[..^2]);
        return batch is null ? null : [.. batch, a[^2], b[^1]];
    }

    // Reshape's output shape: 0 copies the input dim (unless allowzero), -1 is solved from the
    // element count when the other dims account for every symbol of the input.
    private static object?[]? ReshapeShape(object?[]? input, object?[]? target, bool allowZero)
    {
        if (target is null) return null;
        var r = target.Select((t, i) => t switch
        {
            0L when !allowZero => input is not null && i < input.Length ? input[i] : null,
            long v when v < 0 => null,
            _ => t,
        }).ToArray();
        int unknown = Array.FindIndex(target, t => Equals(t, -1L));
        if (unknown < 0 || input is null || input.Any(d => d is null)) return r;
        var (inConst, inSyms) = Factor(input);
        var others = r.Where((_, i) => i != unknown).ToArray();
        if (others.Any(d => d is null)) return r;
        var (outConst, outSyms) = Factor(others);
        foreach (var s in outSyms)
            if (!inSyms.Remove(s)) return r;
        if (outConst == 0 || inConst % outConst != 0) return r;
        long rest = inConst / outConst;
        if (inSyms.Count == 0) r[unknown] = rest;
        else if (inSyms.Count == 1 && rest == 1) r[unknown] = inSyms[0];
        return r;
    }

    private static (long Const, List<string> Syms) Factor(object?[] dims)
    {
        long c = 1;
        var syms = new List<string>();
        foreach (var d in dims)
        {
            if (d is long v) c *= v;
            else syms.Add((string)d!);
        }
        return (c, syms);
    }

    private void InferSqueeze(NodeProto n, InferredValue x)
    {
        var axes = n.Input.Count > 1 && n.Input[1].Length > 0 ? Ints(In(n, 1)) : AttrInts(n, "axes");
        if (x.Shape is null) { Set(n, 0, x.ElementType, null); return; }
        if (n.OpType == "Unsqueeze")
        {
            if (axes is null) { Set(n, 0, x.ElementType, null); return; }
            int rank = x.Shape.Length + axes.Length;
            var r = x.Shape.ToList();
            foreach (var a in axes.Select(a => (int)(a < 0 ? a + rank : a)).Order()) r.Insert(Math.Clamp(a, 0, r.Count), 1L);
            Set(n, 0, x.ElementType, r.ToArray(), x.Values);
            return;
        }
        var drop = axes?.Select(a => (int)(a < 0 ? a + x.Shape.Length : a)).ToHashSet()
                   ?? (x.Shape.All(d => d is not null) ? Enumerable.Range(0, x.Shape.Length).Where(i => Equals(x.Shape[i], 1L)).ToHashSet() : null);
        Set(n, 0, x.ElementType, drop is null ? null : x.Shape.Where((_, i) => !drop.Contains(i)).ToArray(), x.Values);
    }

    private void InferConcat(NodeProto n)
    {
        var parts = n.Input.Where(i => i.Length > 0).Select(Get).ToList();
        var type = parts.Select(p => p.ElementType).FirstOrDefault(t => t is not null);
        if (parts.Count == 0 || parts.Any(p => p.Shape is null) || parts.Any(p => p.Shape!.Length != parts[0].Shape!.Length) || parts[0].Shape!.Length == 0)
        {
            Set(n, 0, type, null);
            return;
        }
        int rank = parts[0].Shape!.Length;
        long axis = AttrI(n, "axis") ?? 0;
        if (axis < 0) axis += rank;
        if (axis < 0 || axis >= rank) { Set(n, 0, type, null); return; }
        var r = new object?[rank];
        for (int i = 0; i < rank; i++)
        {
            if (i == axis) r[i] = parts.Select(p => p.Shape![i]).Aggregate(AddDims);
            else r[i] = parts.Select(p => p.Shape![i]).FirstOrDefault(d => d is not null);
        }
        object?[]? values = rank == 1 && parts.All(p => p.Values is not null) ? parts.SelectMany(p => p.Values!).ToArray() : null;
        Set(n, 0, type, r, values);
    }

    private void InferSlice(NodeProto n, InferredValue x)
    {
        long[]? Arg(int i, string attr) => n.Input.Count > 1 ? (i < n.Input.Count && n.Input[i].Length > 0 ? Ints(In(n, i)) : null) : AttrInts(n, attr);
        var starts = Arg(1, "starts");
        var ends = Arg(2, "ends");
        bool hasAxes = n.Input.Count > 3 && n.Input[3].Length > 0 || n.Input.Count <= 1 && AttrInts(n, "axes") is not null;
        var axes = hasAxes ? Arg(3, "axes") : starts is null ? null : Enumerable.Range(0, starts.Length).Select(i => (long)i).ToArray();
        bool hasSteps = n.Input.Count > 4 && n.Input[4].Length > 0;
        var steps = hasSteps ? Arg(4, "steps") : starts?.Select(_ => 1L).ToArray();
        if (x.Shape is null || starts is null || ends is null || axes is null || steps is null ||
            starts.Length != ends.Length || axes.Length != starts.Length || steps.Length != starts.Length)
        {
            Set(n, 0, x.ElementType, x.Shape is null ? null : new object?[x.Shape.Length]);
            return;
        }
        var r = (object?[])x.Shape.Clone();
        object?[]? values = x.Values is not null && x.Shape.Length == 1 ? x.Values : null;
        for (int k = 0; k < axes.Length; k++)
        {
            int a = (int)(axes[k] < 0 ? axes[k] + r.Length : axes[k]);
            if (a < 0 || a >= r.Length) { Set(n, 0, x.ElementType, null); return; }
            long st = starts[k], en = ends[k], step = steps[k];
            if (x.Shape[a] is long dim)
            {
                if (step == 0) { Set(n, 0, x.ElementType, null); return; }
                long s0 = st < 0 ? st + dim : st, e0 = en < 0 ? en + dim : en;
                if (step > 0) { s0 = Math.Clamp(s0, 0, dim); e0 = Math.Clamp(e0, 0, dim); }
                else { s0 = Math.Clamp(s0, -1, dim - 1); e0 = Math.Clamp(e0, -1, dim - 1); }
                long len = step > 0 ? Math.Max(0, (e0 - s0 + step - 1) / step) : Math.Max(0, (s0 - e0 + (-step) - 1) / (-step));
                r[a] = len;
                if (values is not null && a == 0)
                    values = Enumerable.Range(0, (int)len).Select(i => values[(int)(s0 + i * step)]).ToArray();
            }
            else
            {
                // A symbolic dim survives a full slice [0, ≥ dim) with step 1; a fixed prefix [0, c) is c only when c ≤ dim is known, which it is not.
                r[a] = st == 0 && step == 1 && en >= int.MaxValue ? x.Shape[a] : null;
                values = null;
            }
        }
        Set(n, 0, x.ElementType, r, values);
    }

    private void InferGather(NodeProto n, InferredValue data, InferredValue indices)
    {
        if (data.Shape is null || indices.Shape is null) { Set(n, 0, data.ElementType, null); return; }
        long axis = AttrI(n, "axis") ?? 0;
        if (axis < 0) axis += data.Shape.Length;
        if (axis < 0 || axis >= data.Shape.Length) { Set(n, 0, data.ElementType, null); return; }
        var shape = data.Shape[..(int)axis].Concat(indices.Shape).Concat(data.Shape[((int)axis + 1)..]).ToArray();
        object?[]? values = null;
        if (axis == 0 && data.Shape.Length == 1 && data.Values is { } d && Ints(indices) is { } idx &&
            idx.All(i => i >= -d.Length && i < d.Length))
            values = idx.Select(i => d[(int)(i < 0 ? i + d.Length : i)]).ToArray();
        Set(n, 0, data.ElementType, shape, values);
    }

    private void InferRange(NodeProto n)
    {
        var (start, limit, delta) = (In(n, 0), In(n, 1), In(n, 2));
        var type = start.ElementType ?? limit.ElementType;
        object? len = null;
        if (start.Values is [long s] && limit.Values is [long l] && delta.Values is [long d] && d != 0)
            len = Math.Max(0, (l - s + d - (d > 0 ? 1 : -1)) / d);
        else if (start.Values is [0L] && delta.Values is [1L] && limit.Values is [string sym])
            len = sym;
        object?[]? values = null;
        if (len is long count && count <= MaxFoldedElements && start.Values is [long s2] && delta.Values is [long d2])
            values = Enumerable.Range(0, (int)count).Select(i => (object?)(s2 + i * d2)).ToArray();
        Set(n, 0, type, [len], values);
    }

    private void InferReduce(NodeProto n, InferredValue x)
    {
        bool arg = n.OpType.StartsWith("Arg", StringComparison.Ordinal);
        var type = arg ? DataType.Int64 : x.ElementType;
        if (x.Shape is null) { Set(n, 0, type, null); return; }
        bool keep = (AttrI(n, "keepdims") ?? 1) != 0;
        long[]? axes = arg ? [AttrI(n, "axis") ?? 0]
            : n.Input.Count > 1 && n.Input[1].Length > 0 ? Ints(In(n, 1)) : AttrInts(n, "axes");
        bool noopEmpty = (AttrI(n, "noop_with_empty_axes") ?? 0) != 0;
        if (axes is null && n.Input.Count > 1 && n.Input[1].Length > 0) { Set(n, 0, type, null); return; }
        if (axes is null || axes.Length == 0)
        {
            if (noopEmpty) { Set(n, 0, type, x.Shape); return; }
            axes = Enumerable.Range(0, x.Shape.Length).Select(i => (long)i).ToArray();
        }
        var set = axes.Select(a => (int)(a < 0 ? a + x.Shape.Length : a)).ToHashSet();
        var r = keep ? x.Shape.Select((d, i) => set.Contains(i) ? 1L : d).ToArray() : x.Shape.Where((_, i) => !set.Contains(i)).ToArray();
        Set(n, 0, type, r);
    }

    private void InferSplit(NodeProto n, InferredValue x)
    {
        if (x.Shape is null) return;
        long axis = AttrI(n, "axis") ?? 0;
        if (axis < 0) axis += x.Shape.Length;
        if (axis < 0 || axis >= x.Shape.Length) return;
        var split = n.Input.Count > 1 && n.Input[1].Length > 0 ? Ints(In(n, 1)) : AttrInts(n, "split");
        int outputs = n.Output.Count;
        if ((split is null || split.Length == 0) && x.Shape[axis] is long dim && dim % outputs == 0)
            split = Enumerable.Repeat(dim / outputs, outputs).ToArray();
        for (int o = 0; o < outputs; o++)
        {
            var r = (object?[])x.Shape.Clone();
            r[axis] = split is { } sp && sp.Length == outputs ? sp[o] : null;
            Set(n, o, x.ElementType, r);
        }
    }

    // com.microsoft::MultiHeadAttention: query [B, S, N·H]; key/value [B, L, N·H] or [B, N, L, H];
    // past [B, N, P, H]. Output [B, S, N·Hv], present [B, N, P + L, H].
    private void InferMultiHeadAttention(NodeProto n, InferredValue q)
    {
        long heads = AttrI(n, "num_heads") ?? 0;
        var (k, v, past) = (In(n, 1), In(n, 2), In(n, 6));
        if (q.Shape is not { Length: 3 } || heads <= 0) return;
        object? b = q.Shape[0], s = q.Shape[1];
        object? vHidden = v.Shape switch
        {
            { Length: 3 } vs => vs[2],
            { Length: 4 } vs => vs[1] is long vn && vs[3] is long vh ? vn * vh : null,
            _ => q.Shape[2],
        };
        Set(n, 0, q.ElementType, [b, s, vHidden]);
        for (int o = 1; o <= 2; o++)
        {
            var src = o == 1 ? k : v;
            object? len = src.Shape is { Length: 3 or 4 } ks ? ks[ks.Length == 3 ? 1 : 2] : null;
            object? hs = src.Shape switch
            {
                { Length: 3 } s3 when s3[2] is long hid => hid % heads == 0 ? hid / heads : null,
                { Length: 4 } s4 => s4[3],
                _ => null,
            };
            var p = o == 1 ? past : In(n, 7);
            object? total = p.Shape is { Length: 4 } ps ? AddDims(ps[2], len) : n.Input.Count > 6 && n.Input[6].Length > 0 ? null : len;
            Set(n, o, q.ElementType, [b, heads, total, hs]);
        }
    }

    // ONNX Attention (opset 23/24): 4-D [B, Hq, S, D] or 3-D [B, S, Hq·D] (q_num_heads/kv_num_heads).
    private void InferOnnxAttention(NodeProto n, InferredValue q)
    {
        var (k, v, pk) = (In(n, 1), In(n, 2), In(n, 4));
        if (q.Shape is { Length: 4 } qs && v.Shape is { Length: 4 } vs)
        {
            Set(n, 0, q.ElementType, [qs[0], qs[1], qs[2], vs[3]]);
            if (k.Shape is { Length: 4 } ks)
            {
                object? total = pk.Shape is { Length: 4 } ps ? AddDims(ps[2], ks[2]) : n.Input.Count > 4 && n.Input[4].Length > 0 ? null : ks[2];
                Set(n, 1, q.ElementType, [ks[0], ks[1], total, ks[3]]);
                Set(n, 2, q.ElementType, [vs[0], vs[1], total, vs[3]]);
            }
            return;
        }
        if (q.Shape is { Length: 3 } q3 && v.Shape is { Length: 3 } v3 && AttrI(n, "q_num_heads") is long qh && AttrI(n, "kv_num_heads") is long kh && kh > 0)
            Set(n, 0, q.ElementType, [q3[0], q3[1], v3[2] is long vh ? vh / kh * qh : null]);
    }
}
