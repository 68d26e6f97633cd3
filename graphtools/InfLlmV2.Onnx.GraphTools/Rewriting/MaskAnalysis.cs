using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools.Rewriting;

/// <summary>
/// What an attention mask provably computes: key k is visible to query row q of batch entry b iff
/// <c>k ≤ offset[b] + q</c> (causal, the query's absolute position being offset + q), and, when
/// set, <c>offset[b] + q − k &lt; SlidingWindow</c> (sliding window) and <c>k &lt; KeyLimit[b]</c> (padding).
/// </summary>
/// <param name="QueryOffset">Per-batch int graph input holding the position of query row 0 (null: 0).</param>
/// <param name="SlidingWindow">Sliding-window size in keys (GQA's local_window_size), or null.</param>
/// <param name="KeyLimits">Per-batch int graph inputs bounding the valid keys (padding), possibly empty.</param>
public sealed record MaskFacts(string? QueryOffset, long? SlidingWindow, IReadOnlyList<string> KeyLimits);

/// <summary>
/// Proves what a mask subgraph computes by evaluating it symbolically: integer index arithmetic
/// (Range over the query and key lengths, per-batch integer graph inputs, constants, Add/Sub,
/// Unsqueeze/Squeeze/Cast, scalars read from a symbolic dim such as the past length as variables
/// named by <see cref="DimVariable"/>), comparisons to conjunctions of linear constraints (And, Not of one
/// constraint) and additive masks <c>Where(allowed, 0, −large)</c>. The constraints must then be
/// exactly causal, optionally with one sliding window and padding limits; anything else (an op it
/// does not model, a data-dependent mask such as a 0/1 attention_mask input, an unrecognized
/// constraint) is refused with a reason. Matching is on dataflow only.
/// </summary>
public sealed class MaskAnalysis
{
    private const string Q = "Q", K = "K", B = "B", One = "1";
    private const string QueryIndex = "#q", KeyIndex = "#k";
    private readonly GraphIndex _graph;
    private readonly StaticEvaluator _eval;
    private readonly object _queryLength, _keyLength;
    private readonly Dictionary<string, Sym> _memo = new(StringComparer.Ordinal);

    private MaskAnalysis(GraphIndex graph, StaticEvaluator eval, object queryLength, object keyLength)
    {
        _graph = graph;
        _eval = eval;
        _queryLength = queryLength;
        _keyLength = keyLength;
    }

    /// <summary>
    /// Analyzes <paramref name="mask"/> for an attention whose queries have length
    /// <paramref name="queryLength"/> and keys <paramref name="keyLength"/> (each a fixed long or a
    /// dim_param string; they must be distinguishable). Returns the facts or a refusal reason.
    /// </summary>
    public static (MaskFacts? Facts, string? Reason) Analyze(GraphIndex graph, StaticEvaluator eval, string mask, object? queryLength, object? keyLength)
    {
        if (queryLength is null || keyLength is null) return (null, "the query or key length is unknown, so the mask's index ranges cannot be identified");
        if (Equals(queryLength, keyLength)) return (null, "query and key lengths are the same symbol, so the mask's query and key axes cannot be told apart");
        try
        {
            var a = new MaskAnalysis(graph, eval, queryLength, keyLength);
            var sym = a.Eval(mask, 0);
            var atoms = sym switch
            {
                AdditiveSym m => m.Atoms,
                BoolSym m => m.Atoms,
                _ => throw new Refusal("the mask is not a boolean or additive (0 / −large) mask"),
            };
            CheckAxes(sym.Axes);
            return (Classify(atoms), null);
        }
        catch (Refusal r)
        {
            return (null, "mask not provably causal: " + r.Message);
        }
    }

    /// <summary>
    /// The variable a symbolic dim (e.g. the past length read with Shape/Gather) stands for in the
    /// analysis, as <see cref="MaskFacts.QueryOffset"/> reports it; null for a fixed or unknown dim.
    /// </summary>
    public static string? DimVariable(object? dim) => dim is string s ? "dim:" + s : null;

    private sealed class Refusal(string message) : Exception(message);

    /// <summary>An integer linear expression: Σ coefficient·variable + constant.</summary>
    private sealed record Lin(SortedDictionary<string, long> Terms, long Const)
    {
        public static Lin Constant(long c) => new(new SortedDictionary<string, long>(StringComparer.Ordinal), c);

        public static Lin Var(string name) => new(new SortedDictionary<string, long>(StringComparer.Ordinal) { [name] = 1 }, 0);

        public Lin Plus(Lin other, long sign)
        {
            var t = new SortedDictionary<string, long>(Terms, StringComparer.Ordinal);
            foreach (var (v, c) in other.Terms)
            {
                long sum = t.GetValueOrDefault(v) + sign * c;
                if (sum == 0) t.Remove(v); else t[v] = sum;
            }
            return new Lin(t, Const + sign * other.Const);
        }

        public Lin Negate() => Constant(0).Plus(this, -1);

        public bool Is(long constant, params (string Var, long Coeff)[] terms) =>
            Const == constant && Terms.Count == terms.Length && terms.All(x => Terms.GetValueOrDefault(x.Var) == x.Coeff);

        public override string ToString() =>
            string.Join(" + ", Terms.Select(t => $"{t.Value}·{t.Key.TrimStart('#')}").Append(Const.ToString(System.Globalization.CultureInfo.InvariantCulture)));
    }

    private abstract record Sym(string[] Axes);

    /// <summary>An integer tensor; <see cref="Lin"/> gives its element at (b, q, k).</summary>
    private sealed record IntSym(string[] Axes, Lin Expr) : Sym(Axes);

    /// <summary>A float constant (the branches of Where).</summary>
    private sealed record FloatSym(string[] Axes, double Value) : Sym(Axes);

    /// <summary>A boolean tensor: true where every atom (Lin ≥ 0) holds.</summary>
    private sealed record BoolSym(string[] Axes, List<Lin> Atoms) : Sym(Axes);

    /// <summary>An additive mask: 0 where every atom holds, a large negative value elsewhere.</summary>
    private sealed record AdditiveSym(string[] Axes, List<Lin> Atoms) : Sym(Axes);

    private Sym Eval(string value, int depth)
    {
        if (_memo.TryGetValue(value, out var known)) return known;
        if (depth > 64) throw new Refusal("the mask subgraph is too deep");
        var r = Compute(value, depth);
        _memo[value] = r;
        return r;
    }

    private Sym Compute(string value, int depth)
    {
        if (_graph.Initializer(value) is { } init) return ConstantSym(value, init.Dims.Count);
        if (_graph.IsGraphInput(value))
        {
            var shape = _graph.Shape(value);
            var type = _graph.ElementType(value);
            if (shape is { Count: 1 } && type is TensorProto.Types.DataType.Int64 or TensorProto.Types.DataType.Int32)
                return new IntSym([B], Lin.Var(value));
            throw new Refusal($"it depends on the graph input '{value}', which is not a per-batch integer vector (a data-dependent mask)");
        }
        var n = _graph.Producer(value) ?? throw new Refusal($"'{value}' has no producer");
        // A scalar read from a symbolic dim other than the query/key lengths (the past length): a variable.
        if (n.OpType is "Shape" or "Gather" or "Squeeze" or "Unsqueeze" or "Cast" or "Add" && Dim(value, 0) is string sym
            && !Equals(sym, _queryLength) && !Equals(sym, _keyLength) && (_eval.PartialShape(value)?.Length ?? 0) <= 1)
            return new IntSym(Enumerable.Repeat(One, _eval.PartialShape(value)?.Length ?? 0).ToArray(), Lin.Var(DimVariable(sym)!));
        Sym In(int i) => i < n.Input.Count && n.Input[i].Length > 0 ? Eval(n.Input[i], depth + 1) : throw new Refusal($"{n.OpType} lacks input {i}");
        switch (n.OpType)
        {
            case "Constant":
                return ConstantSym(value, n.Attribute.FirstOrDefault(a => a.Name == "value")?.T?.Dims.Count ?? (n.Attribute.Any(a => a.Name is "value_ints" or "value_floats") ? 1 : 0));
            case "Identity" or "Cast":
                return In(0);
            case "Unsqueeze":
            {
                var x = In(0);
                var axes = _eval.Axes(n) ?? throw new Refusal("Unsqueeze axes are not constant");
                int rank = x.Axes.Length + axes.Length;
                var labels = x.Axes.ToList();
                foreach (var a in axes.Select(a => (int)(a < 0 ? a + rank : a)).Order()) labels.Insert(a, One);
                return WithAxes(x, labels.ToArray());
            }
            case "Squeeze":
            {
                var x = In(0);
                var axes = _eval.Axes(n) ?? throw new Refusal("Squeeze without constant axes");
                var drop = axes.Select(a => (int)(a < 0 ? a + x.Axes.Length : a)).ToHashSet();
                if (drop.Any(a => a < 0 || a >= x.Axes.Length || x.Axes[a] != One)) throw new Refusal("Squeeze of a non-unit axis");
                return WithAxes(x, x.Axes.Where((_, i) => !drop.Contains(i)).ToArray());
            }
            case "Range":
                return RangeSym(n);
            case "Add" or "Sub":
            {
                var (a, b) = (In(0), In(1));
                var axes = Broadcast(a.Axes, b.Axes);
                if (a is IntSym x && b is IntSym y) return new IntSym(axes, x.Expr.Plus(y.Expr, n.OpType == "Add" ? 1 : -1));
                if (n.OpType == "Add" && a is AdditiveSym p && b is AdditiveSym s) return new AdditiveSym(axes, [.. p.Atoms, .. s.Atoms]);
                if (n.OpType == "Add" && a is AdditiveSym m1 && b is FloatSym { Value: 0 } or IntSym { Expr: { Terms.Count: 0, Const: 0 } }) return new AdditiveSym(axes, m1.Atoms);
                if (n.OpType == "Add" && b is AdditiveSym m2 && a is FloatSym { Value: 0 } or IntSym { Expr: { Terms.Count: 0, Const: 0 } }) return new AdditiveSym(axes, m2.Atoms);
                throw new Refusal($"{n.OpType} of {a.GetType().Name[..^3].ToLowerInvariant()} and {b.GetType().Name[..^3].ToLowerInvariant()} values");
            }
            case "GreaterOrEqual" or "Greater" or "LessOrEqual" or "Less":
            {
                if (In(0) is not IntSym x || In(1) is not IntSym y) throw new Refusal($"{n.OpType} of non-integer values");
                var axes = Broadcast(x.Axes, y.Axes);
                // Everything as "expr ≥ 0" over integers.
                var atom = n.OpType switch
                {
                    "GreaterOrEqual" => x.Expr.Plus(y.Expr, -1),
                    "Greater" => x.Expr.Plus(y.Expr, -1).Plus(Lin.Constant(1), -1),
                    "LessOrEqual" => y.Expr.Plus(x.Expr, -1),
                    _ => y.Expr.Plus(x.Expr, -1).Plus(Lin.Constant(1), -1),
                };
                return new BoolSym(axes, [atom]);
            }
            case "And":
            {
                if (In(0) is not BoolSym x || In(1) is not BoolSym y) throw new Refusal("And of non-boolean values");
                return new BoolSym(Broadcast(x.Axes, y.Axes), [.. x.Atoms, .. y.Atoms]);
            }
            case "Not":
            {
                if (In(0) is not BoolSym { Atoms.Count: 1 } x) throw new Refusal("Not of a compound condition (a disjunction)");
                return new BoolSym(x.Axes, [x.Atoms[0].Negate().Plus(Lin.Constant(1), -1)]);
            }
            case "Where":
            {
                if (In(0) is not BoolSym c) throw new Refusal("Where with a condition that is not a modeled comparison");
                var (t, f) = (Number(In(1)), Number(In(2)));
                var axes = Broadcast(Broadcast(c.Axes, In(1).Axes), In(2).Axes);
                if (t == 0 && f <= -1e30) return new AdditiveSym(axes, c.Atoms);
                if (f == 0 && t <= -1e30 && c.Atoms.Count == 1) return new AdditiveSym(axes, [c.Atoms[0].Negate().Plus(Lin.Constant(1), -1)]);
                throw new Refusal($"Where({t}, {f}) is not an additive mask of 0 and a large negative value");
            }
            default:
                throw new Refusal($"it uses {n.OpType}, which the mask analysis does not model");
        }
    }

    private static double Number(Sym s) => s switch
    {
        FloatSym f => f.Value,
        IntSym { Expr.Terms.Count: 0 } i => i.Expr.Const,
        _ => throw new Refusal("a Where branch is not a constant"),
    };

    private Sym ConstantSym(string value, int rank)
    {
        var v = _eval.Values(value);
        if (v is not { Length: 1 }) throw new Refusal($"the constant '{value}' is not a single number");
        var axes = Enumerable.Repeat(One, rank).ToArray();
        double x = v[0];
        return x == Math.Floor(x) && Math.Abs(x) < 1e15 ? new IntSym(axes, Lin.Constant((long)x)) : new FloatSym(axes, x);
    }

    private Sym RangeSym(NodeProto n)
    {
        if (n.Input.Count < 3 || _eval.Scalar(n.Input[0]) != 0 || _eval.Scalar(n.Input[2]) != 1)
            throw new Refusal("a Range that does not start at 0 with step 1");
        var limit = Dim(n.Input[1], 0);
        if (Equals(limit, _queryLength)) return new IntSym([Q], Lin.Var(QueryIndex));
        if (Equals(limit, _keyLength)) return new IntSym([K], Lin.Var(KeyIndex));
        throw new Refusal($"a Range up to {limit ?? "an unknown length"}, which is neither the query length ({_queryLength}) nor the key length ({_keyLength})");
    }

    /// <summary>The value of a scalar shape expression: a constant, or a dim of some value's shape.</summary>
    private object? Dim(string value, int depth)
    {
        if (depth > 16) return null;
        if (_eval.Scalar(value) is double c) return (long)c;
        var n = _graph.Producer(value);
        if (n is null) return null;
        switch (n.OpType)
        {
            case "Squeeze" or "Unsqueeze" or "Identity" or "Cast" or "Reshape":
                return Dim(n.Input[0], depth + 1);
            case "Add":
                return ShapeInference.AddDims(Dim(n.Input[0], depth + 1), Dim(n.Input[1], depth + 1));
            case "Shape":
            {
                var shape = _eval.PartialShape(n.Input[0]);
                if (shape is null) return null;
                int rank = shape.Length;
                long start = n.IntAttr("start") ?? 0, end = n.IntAttr("end") ?? rank;
                if (start < 0) start += rank;
                if (end < 0) end += rank;
                return end - start == 1 && start >= 0 && start < rank ? shape[start] : null;
            }
            case "Gather" when _graph.Producer(n.Input[0]) is { OpType: "Shape" } shapeNode && (n.IntAttr("axis") ?? 0) == 0:
            {
                var shape = _eval.PartialShape(shapeNode.Input[0]);
                var index = _eval.Scalar(n.Input[1]);
                if (shape is null || index is null || shapeNode.Attribute.Count > 0) return null;
                int i = (int)(index < 0 ? index + shape.Length : index);
                return i >= 0 && i < shape.Length ? shape[i] : null;
            }
            default:
                return null;
        }
    }

    private static Sym WithAxes(Sym x, string[] axes) => x switch
    {
        IntSym i => i with { Axes = axes },
        FloatSym f => f with { Axes = axes },
        BoolSym b => b with { Axes = axes },
        AdditiveSym a => a with { Axes = axes },
        _ => throw new InvalidOperationException(),
    };

    private static string[] Broadcast(string[] a, string[] b)
    {
        int rank = Math.Max(a.Length, b.Length);
        var r = new string[rank];
        for (int i = 0; i < rank; i++)
        {
            var x = i - (rank - a.Length) >= 0 ? a[i - (rank - a.Length)] : One;
            var y = i - (rank - b.Length) >= 0 ? b[i - (rank - b.Length)] : One;
            r[i] = x == y || y == One ? x : x == One ? y : throw new Refusal($"it broadcasts a {x} axis against a {y} axis");
        }
        return r;
    }

    /// <summary>The mask must broadcast to [B, H, S, L]: key axis last, query axis before it, batch first.</summary>
    private static void CheckAxes(string[] axes)
    {
        if (axes.Length > 4) throw new Refusal($"rank {axes.Length} > 4");
        string[] expected = [B, One, Q, K];
        for (int i = 1; i <= axes.Length; i++)
        {
            var have = axes[^i];
            var want = expected[^i];
            if (have != One && have != want) throw new Refusal($"its axis {axes.Length - i} indexes {Describe(have)} where the attention expects {Describe(want)}");
        }
        if (!axes.Contains(K)) throw new Refusal("it does not vary along the keys");
    }

    private static string Describe(string axis) => axis switch { B => "the batch", Q => "the queries", K => "the keys", _ => "heads" };

    private static MaskFacts Classify(List<Lin> atoms)
    {
        var causalOffsets = new HashSet<string>(StringComparer.Ordinal);
        var windowOffsets = new HashSet<string>(StringComparer.Ordinal);
        bool causal = false;
        long? window = null;
        var limits = new List<string>();
        const string None = "";
        foreach (var atom in atoms)
        {
            var vars = atom.Terms.Keys.Where(v => v is not (QueryIndex or KeyIndex)).ToList();
            long q = atom.Terms.GetValueOrDefault(QueryIndex), k = atom.Terms.GetValueOrDefault(KeyIndex);
            if (atom.Terms.Count == 0)
            {
                if (atom.Const < 0) throw new Refusal("a constraint that is never true masks everything");
                continue;  // always true
            }
            if (vars.Count == 0 && atom.Const >= 0 && ((q == 1 && k == 0) || (q == 0 && k == 1))) continue;  // index ≥ −c: always true
            if (atom.Const == 0 && q == 1 && k == -1 && vars.Count <= 1 && vars.All(v => atom.Terms[v] == 1))
            {
                // causal: offset + q − k ≥ 0
                causal = true;
                causalOffsets.Add(vars.FirstOrDefault() ?? None);
            }
            else if (atom.Const >= 0 && q == -1 && k == 1 && vars.Count <= 1 && vars.All(v => atom.Terms[v] == -1))
            {
                // window: (W − 1) − offset − q + k ≥ 0, i.e. offset + q − k < W
                if (window is long w && w != atom.Const + 1) throw new Refusal("two different sliding windows");
                window = atom.Const + 1;
                windowOffsets.Add(vars.FirstOrDefault() ?? None);
            }
            else if (atom.Const == -1 && k == -1 && q == 0 && vars.Count == 1 && atom.Terms[vars[0]] == 1)
            {
                // padding: limit − k − 1 ≥ 0, i.e. k < limit[b]
                if (!limits.Contains(vars[0])) limits.Add(vars[0]);
            }
            else
            {
                throw new Refusal($"the constraint {atom} ≥ 0 is not causal, a sliding window or key padding");
            }
        }
        if (!causal) throw new Refusal("it has no causal constraint (k ≤ position of the query)");
        if (causalOffsets.Count > 1) throw new Refusal("two causal constraints with different query offsets");
        var offset = causalOffsets.Single();
        if (windowOffsets.Any(o => o != offset)) throw new Refusal("the sliding window and the causal constraint use different query offsets");
        return new MaskFacts(offset == None ? null : offset, window, limits);
    }
}
