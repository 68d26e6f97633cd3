using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools.Rewriting;

/// <summary>
/// What an attention mask provably computes: key k is visible to query row q of batch entry b iff
/// <c>k ≤ offset[b] + q</c> (causal, the query's absolute position being offset + q), and, when
/// set, <c>offset[b] + q − k &lt; SlidingWindow</c> (sliding window), <c>k &lt; KeyLimit[b]</c> (padding)
/// and <c>attention_mask[b, k] ≠ 0</c> (<see cref="PaddingMask"/>).
/// </summary>
/// <param name="QueryOffset">Per-batch int graph input holding the position of query row 0, or a
/// <see cref="MaskAnalysis.DimVariable"/> such as the past length (null: 0).</param>
/// <param name="SlidingWindow">Sliding-window size in keys (GQA's local_window_size), or null.</param>
/// <param name="KeyLimits">Per-batch int graph inputs bounding the valid keys (padding), possibly empty.</param>
public sealed record MaskFacts(string? QueryOffset, long? SlidingWindow, IReadOnlyList<string> KeyLimits)
{
    /// <summary>
    /// The 2-D integer graph input (an HF/genai <c>attention_mask</c> [B, past + S]) whose values mask
    /// keys, or null. The analysis takes its rows to be ones then zeros (no padding, or right padding),
    /// so that key k is visible iff k &lt; ReduceSum(attention_mask[b]); the rewrite is exact under that
    /// contract only.
    /// </summary>
    public string? PaddingMask { get; init; }

    /// <summary>
    /// Whether the mask has the causal constraint. Always true from a plain MaskAnalysis.Analyze;
    /// an analysis with <c>requireCausal: false</c> (an attention_bias added to an op that is causal
    /// itself) reports false when the mask constrains keys only.
    /// </summary>
    public bool Causal { get; init; } = true;
}

/// <summary>
/// Proves what a mask subgraph computes by evaluating it symbolically. Integer index arithmetic:
/// Range over the query or key length (from 0, or from the past length), per-batch integer graph
/// inputs, constants, Add/Sub, Unsqueeze/Squeeze/Reshape/Expand/Tile that only move or broadcast axes,
/// scalars read from a symbolic dim such as the past length as variables named by
/// <see cref="DimVariable"/>. Every index variable is the index of an axis counted from the right
/// (broadcasting aligns axes from the right), so a Range used as the query axis in one place and the
/// key axis in another is told apart. Everything else is a piecewise-constant tensor: a table of
/// values over a few conditions, each a conjunction of linear constraints (comparisons, And/Or/Not,
/// Where, Add/Sub/Mul/Min/Max of tables, Equal, Cast, ConstantOfShape, Trilu, and a 2-D integer
/// <c>attention_mask</c> input, read as "key k &lt; its row's sum" under the ones-then-zeros contract).
/// The visible keys (a boolean mask's true, an additive mask's 0 against ≤ −10⁴ elsewhere) must then
/// be one conjunction of those conditions (assignments that contradict themselves over non-negative
/// indices and lengths do not count), and that conjunction must be exactly causal, optionally with one
/// sliding window and padding limits; anything else (an op it does not model, a user mask input, an
/// unrecognized constraint, a disjunction) is refused with a reason. Matching is on dataflow only.
/// </summary>
public sealed class MaskAnalysis
{
    private const string B = "B", Q = "Q", K = "K", One = "1", Rows = "R", Cols = "C";
    private const string KeyIndex = "#0", QueryIndex = "#1";
    private const double Blocked = -1e4;
    private const int MaxConditions = 6;
    private readonly GraphIndex _graph;
    private readonly StaticEvaluator _eval;
    private readonly object _queryLength, _keyLength;
    private readonly object? _pastLength;
    private readonly HashSet<object> _keyLengths = [];
    private readonly Dictionary<string, Sym> _memo = new(StringComparer.Ordinal);
    private string? _paddingMask;

    private MaskAnalysis(GraphIndex graph, StaticEvaluator eval, object queryLength, object keyLength, object? pastLength)
    {
        _graph = graph;
        _eval = eval;
        _queryLength = queryLength;
        _keyLength = keyLength;
        _pastLength = pastLength;
        _keyLengths.Add(keyLength);
        // By its contract an attention_mask [B, past + S] is as long as the keys: its width is a key length.
        // (An If/Loop/Scan body reads it from an enclosing graph.)
        for (var scope = graph; scope is not null; scope = scope.Outer)
            foreach (var input in scope.Graph.Input)
                if (IsAttentionMaskShape(graph, input.Name) is { } width) _keyLengths.Add(width);
    }

    /// <summary>
    /// A 2-D integer graph input that is not token ids (never the indices of a Gather from a constant
    /// table, i.e. an embedding): an attention_mask [B, past + S]. Its width is not trusted to be a
    /// distinct key length when it is declared with the query length's symbol (an exporter that names
    /// input_ids' and attention_mask's second dims alike); its values are still read by the contract.
    /// </summary>
    private bool IsAttentionMaskInput(string input) =>
        _graph.Shape(input) is { Count: 2 } shape && _graph.ElementType(input) is TensorProto.Types.DataType.Int64 or TensorProto.Types.DataType.Int32
        && !Equals(shape[1], 1L) && !Consumers(input).Any(c => c.OpType == "Gather" && c.Input.Count > 1 && c.Input[1] == input && _graph.Initializer(c.Input[0]) is not null);

    // Consumers of a value in this graph and the enclosing ones.
    private IEnumerable<NodeProto> Consumers(string value)
    {
        for (var scope = _graph; scope is not null; scope = scope.Outer)
            foreach (var c in scope.Consumers(value)) yield return c;
    }

    private object? IsAttentionMaskShape(GraphIndex graph, string input) =>
        graph.Shape(input) is { Count: 2 } shape && graph.ElementType(input) is TensorProto.Types.DataType.Int64 or TensorProto.Types.DataType.Int32
        && shape[1] is { } width && !Equals(width, _queryLength) && !Equals(width, 1L) ? width : null;

    /// <summary>
    /// Analyzes <paramref name="mask"/> for an attention whose queries have length
    /// <paramref name="queryLength"/> and keys <paramref name="keyLength"/> (each a fixed long or a
    /// dim_param string; they must be distinguishable); <paramref name="pastLength"/> is the cache's
    /// past length when the keys are past + new ones. Returns the facts or a refusal reason. With
    /// <paramref name="requireCausal"/> false a mask without the causal constraint (key padding only,
    /// as the bias of an op that applies causality itself) is accepted, its facts saying Causal = false.
    /// </summary>
    public static (MaskFacts? Facts, string? Reason) Analyze(GraphIndex graph, StaticEvaluator eval, string mask, object? queryLength, object? keyLength,
        object? pastLength = null, bool requireCausal = true) =>
        Analyze(graph, eval, [mask], [], queryLength, keyLength, pastLength, requireCausal);

    /// <summary>
    /// Analyzes a mask given in parts, as the scores meet them: <paramref name="additive"/> values
    /// added to the scores, and <paramref name="selects"/> conditions of <c>Where(cond, scores, −large)</c>
    /// (visible where the condition is <c>VisibleWhenTrue</c>), e.g. TorchScript GPT-2's
    /// <c>Where(causal buffer slice, scores, −1e4) + (1 − mask) · −1e4</c>. Their sum is analyzed as one mask.
    /// </summary>
    public static (MaskFacts? Facts, string? Reason) Analyze(GraphIndex graph, StaticEvaluator eval, IReadOnlyList<string> additive,
        IReadOnlyList<(string Condition, bool VisibleWhenTrue)> selects, object? queryLength, object? keyLength, object? pastLength = null,
        bool requireCausal = true)
    {
        if (additive.Count + selects.Count == 0) return (null, "no mask");
        if (queryLength is null || keyLength is null) return (null, "the query or key length is unknown, so the mask's index ranges cannot be identified");
        // Without a past (a merged decoder's no-past branch: past length 0) keys and queries have one
        // length; axes are then told apart only where the dataflow says which is which (a buffer's
        // rows and columns, attention_mask's keys), and anything ambiguous is refused by the axis checks.
        if (Equals(queryLength, keyLength) && !Equals(pastLength, 0L))
            return (null, "query and key lengths are the same symbol, so the mask's query and key axes cannot be told apart");
        try
        {
            var a = new MaskAnalysis(graph, eval, queryLength, keyLength, pastLength);
            var parts = new List<TabSym>();
            foreach (var value in additive)
                parts.Add(a.Eval(value, 0) as TabSym ?? throw new Refusal("the mask is an index expression, not a boolean or additive (0 / −large) mask"));
            foreach (var (condition, visibleWhenTrue) in selects)
            {
                var c = ToBool(a.Eval(condition, 0), "Where");
                parts.Add(Combine("Where", [c, TabSym.Const(c.Axes, visibleWhenTrue ? 0 : Blocked), TabSym.Const(c.Axes, visibleWhenTrue ? Blocked : 0)], false));
            }
            var t = parts.Count == 1 ? parts[0] : parts.Skip(1).Aggregate(parts[0], (x, y) => Combine("Add", [ToAdditive(x), ToAdditive(y)], false));
            CheckAxes(t.Axes);
            var atoms = VisibleConjunction(t);
            foreach (var atom in atoms)
                if (atom.Terms.Keys.FirstOrDefault(v => v.StartsWith('#') && v is not (KeyIndex or QueryIndex)) is { } other)
                    throw new Refusal($"it depends on the index of axis {other[1..]} from the right, which is neither the query nor the key axis");
            var facts = Classify(atoms, requireCausal);
            var limits = facts.KeyLimits.Where(l => !l.StartsWith(LengthPrefix, StringComparison.Ordinal)).ToList();
            string? padding = facts.KeyLimits.FirstOrDefault(l => l.StartsWith(LengthPrefix, StringComparison.Ordinal))?[LengthPrefix.Length..];
            return (facts with { KeyLimits = limits, PaddingMask = padding }, null);
        }
        catch (Refusal r)
        {
            return (null, (requireCausal ? "mask not provably causal: " : "mask not provably key padding: ") + r.Message);
        }
    }

    /// <summary>
    /// The variable a symbolic dim (e.g. the past length read with Shape/Gather) stands for in the
    /// analysis, as <see cref="MaskFacts.QueryOffset"/> reports it; null for a fixed or unknown dim.
    /// </summary>
    public static string? DimVariable(object? dim) => dim is string s ? "dim:" + s : null;

    private const string LengthPrefix = "len:";

    private sealed class Refusal(string message) : Exception(message);

    // A dim as a linear expression: a number, a symbol's variable, or a sum of symbols ("a + b") as
    // the sum of their variables. Every key length is the same length, past + S when the past is known
    // (an attention_mask's width, a present key's length and past + S are one value), so key lengths
    // are written as that sum: T − S of two shape reads is then the past length.
    private Lin? DimLin(object? dim) =>
        dim is not null && _pastLength is not null && _keyLengths.Contains(dim) && !Equals(dim, _pastLength) && PlainDimLin(_pastLength) is { } past
            && PlainDimLin(_queryLength) is { } q ? past.Plus(q, 1) : PlainDimLin(dim);

    private static Lin? PlainDimLin(object? dim) => dim switch
    {
        long c => Lin.Constant(c),
        string sum => sum.Split(" + ").Aggregate(Lin.Constant(0), (l, term) => l.Plus(Lin.Var(DimVariable(term.Trim())!), 1)),
        _ => null,
    };

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

        /// <summary>The atom "not (this ≥ 0)", i.e. −this − 1 ≥ 0.</summary>
        public Lin Not() => Negate().Plus(Constant(1), -1);

        public Lin Rename(IReadOnlyDictionary<int, int> positions)
        {
            var t = new SortedDictionary<string, long>(StringComparer.Ordinal);
            foreach (var (v, c) in Terms)
            {
                if (!v.StartsWith('#')) { t[v] = c; continue; }
                int from = int.Parse(v[1..], System.Globalization.CultureInfo.InvariantCulture);
                if (!positions.TryGetValue(from, out int to)) throw new Refusal("a reshape drops an axis the mask varies along");
                t[Index(to)] = c;
            }
            return new Lin(t, Const);
        }

        public override string ToString() =>
            string.Join(" + ", Terms.Select(t => $"{t.Value}·{Name(t.Key)}").Append(Const.ToString(System.Globalization.CultureInfo.InvariantCulture)));

        private static string Name(string v) => v switch { KeyIndex => "k", QueryIndex => "q", _ when v.StartsWith('#') => "i" + v[1..], _ => v };
    }

    private static string Index(int positionFromRight) => "#" + positionFromRight.ToString(System.Globalization.CultureInfo.InvariantCulture);

    private static string Key(IEnumerable<Lin> atoms) => string.Join(" & ", atoms.Select(a => a.ToString()).Order(StringComparer.Ordinal));

    /// <summary>Axis labels, left to right: B (batch), Q (query length), K (key length), 1 (broadcast).</summary>
    private abstract record Sym(string[] Axes);

    /// <summary>An integer tensor; <see cref="Lin"/> gives its element from the axis indices ("#j", j counted from the right).</summary>
    private sealed record IntSym(string[] Axes, Lin Expr) : Sym(Axes);

    /// <summary>
    /// A piecewise-constant tensor: <c>Values[bits]</c> where bit i says whether every atom (Lin ≥ 0)
    /// of <c>Conds[i]</c> holds. Booleans hold 0/1.
    /// </summary>
    private sealed record TabSym(string[] Axes, IReadOnlyList<IReadOnlyList<Lin>> Conds, double[] Values, bool IsBool) : Sym(Axes)
    {
        public static TabSym Const(string[] axes, double v, bool isBool = false) => new(axes, [], [v], isBool);

        public static TabSym Condition(string[] axes, IReadOnlyList<Lin> atoms) => new(axes, [atoms], [0, 1], true);
    }

    private Sym Eval(string value, int depth)
    {
        if (_memo.TryGetValue(value, out var known)) return known;
        if (depth > 96) throw new Refusal("the mask subgraph is too deep");
        var r = Compute(value, depth);
        _memo[value] = r;
        return r;
    }

    private Sym Compute(string value, int depth)
    {
        if (_graph.Initializer(value) is { } init) return TriangularBuffer(init) ?? ConstantSym(value, init.Dims.Count);
        if (_graph.IsGraphInput(value)) return InputSym(value);
        var n = _graph.Producer(value) ?? throw new Refusal($"'{value}' has no producer");
        // A scalar (or one-element vector) read from the shapes (Shape with start/end, Gather of a shape,
        // Squeeze/Unsqueeze/Cast/Add of those): its value as a sum of dim variables ("dim:past_sequence_length"),
        // so T − S of two shape reads is the past length.
        if (n.OpType is "Shape" or "Gather" or "Squeeze" or "Unsqueeze" or "Cast" or "Add" or "Reshape" or "Concat" or "Slice" or "Identity"
            && (_eval.PartialShape(value)?.Length ?? 0) <= 1 && Dim(value, 0) is { } dim && DimLin(dim) is { } lin)
            return new IntSym(Enumerable.Repeat(One, _eval.PartialShape(value)?.Length ?? 0).ToArray(), lin);
        Sym In(int i) => i < n.Input.Count && n.Input[i].Length > 0 ? Eval(n.Input[i], depth + 1) : throw new Refusal($"{n.OpType} lacks input {i}");
        switch (n.OpType)
        {
            case "Constant" when n.Attribute.FirstOrDefault(a => a.Name == "value")?.T is { } table && TriangularBuffer(table) is { } buffer:
                return buffer;
            case "Constant":
                return ConstantSym(value, n.Attribute.FirstOrDefault(a => a.Name == "value")?.T?.Dims.Count ?? (n.Attribute.Any(a => a.Name is "value_ints" or "value_floats") ? 1 : 0));
            case "Identity":
                return In(0);
            case "Cast":
            {
                var x = In(0);
                bool toBool = (n.IntAttr("to") ?? 0) == (long)TensorProto.Types.DataType.Bool;
                if (x is IntSym i) return toBool ? Compare("NotEqual", i, new IntSym([], Lin.Constant(0))) : i;
                var t = (TabSym)x;
                return toBool ? t with { Values = t.Values.Select(v => v != 0 ? 1.0 : 0.0).ToArray(), IsBool = true } : t with { IsBool = false };
            }
            case "Unsqueeze":
            {
                var x = In(0);
                var axes = _eval.Axes(n) ?? throw new Refusal("Unsqueeze axes are not constant");
                int rank = x.Axes.Length + axes.Length;
                var inserted = axes.Select(a => (int)(a < 0 ? a + rank : a)).ToHashSet();
                var labels = new string[rank];
                for (int i = 0, j = 0; i < rank; i++) labels[i] = inserted.Contains(i) ? One : x.Axes[j++];
                return Move(x, labels, Enumerable.Range(0, rank).Where(i => !inserted.Contains(i)).ToArray());
            }
            case "Squeeze":
            {
                var x = In(0);
                var axes = _eval.Axes(n) ?? throw new Refusal("Squeeze without constant axes");
                var drop = axes.Select(a => (int)(a < 0 ? a + x.Axes.Length : a)).ToHashSet();
                if (drop.Any(a => a < 0 || a >= x.Axes.Length || x.Axes[a] != One)) throw new Refusal("Squeeze of a non-unit axis");
                var keep = Enumerable.Range(0, x.Axes.Length).Where(i => !drop.Contains(i)).ToArray();
                var map = new int[x.Axes.Length];
                for (int i = 0, j = 0; i < x.Axes.Length; i++) map[i] = drop.Contains(i) ? -1 : j++;
                return Move(x, keep.Select(i => x.Axes[i]).ToArray(), map);
            }
            case "Reshape" when FlatMaskGather(n, depth) is { } gathered:
                return gathered;
            case "Reshape":
                return ReshapeSym(In(0), value, n.Input[1]);
            case "Expand":
                return ExpandSym(In(0), value, n.Input[1]);
            case "Tile":
            {
                var reps = _eval.Values(n.Input[1]);
                if (reps is null || reps.Any(r => r != 1)) throw new Refusal("a Tile that repeats the mask");
                return In(0);
            }
            case "Range":
                return RangeSym(n);
            case "ConstantOfShape":
            {
                var fill = n.Attribute.FirstOrDefault(a => a.Name == "value")?.T;
                double v = fill is null ? 0 : TensorValue(fill);
                int rank = _eval.PartialShape(value)?.Length ?? _eval.Values(n.Input[0])?.Length ?? throw new Refusal("ConstantOfShape of an unknown rank");
                return Constant(Enumerable.Repeat(One, rank).ToArray(), v);
            }
            case "Trilu":
                return TriluSym(n, In(0));
            case "Slice":
                return SliceSym(n, depth);
            case "Add" or "Sub" when In(0) is IntSym x && In(1) is IntSym y:
                return new IntSym(Broadcast(x.Axes, y.Axes), x.Expr.Plus(y.Expr, n.OpType == "Add" ? 1 : -1));
            case "Add" or "Sub" or "Mul" or "Min" or "Max" or "Div":
                return Combine(n.OpType, n.Input.Where(i => i.Length > 0).Select((_, i) => ToTable(In(i), n.OpType)).ToArray(), false);
            case "GreaterOrEqual" or "Greater" or "LessOrEqual" or "Less" or "Equal":
                if (In(0) is IntSym a && In(1) is IntSym b && (a.Expr.Terms.Count > 0 || b.Expr.Terms.Count > 0)) return Compare(n.OpType, a, b);
                return Combine(n.OpType, [ToTable(In(0), n.OpType), ToTable(In(1), n.OpType)], true);
            case "And" or "Or" or "Xor":
                return Combine(n.OpType, [ToBool(In(0), n.OpType), ToBool(In(1), n.OpType)], true);
            case "Not":
            {
                var x = ToBool(In(0), "Not");
                return x with { Values = x.Values.Select(v => v != 0 ? 0.0 : 1.0).ToArray() };
            }
            case "Where":
                return Combine("Where", [ToBool(In(0), "Where"), ToTable(In(1), "Where"), ToTable(In(2), "Where")], false);
            default:
                throw new Refusal($"it uses {n.OpType}, which the mask analysis does not model");
        }
    }

    /// <summary>
    /// attention_mask[b, x] read through flat indices, as torch.export-based exporters lower
    /// <c>mask[batch_index, key_index]</c>: <c>Reshape(Gather(Reshape(M, [−1]), Reshape(x + b·W, [−1])), Shape(x + b·W))</c>
    /// with M the [B, W] attention_mask (optionally Cast), W its width (a shape read) and b the batch
    /// index (Range(0, B) on the leading axis). It is M's row b at x: "x &lt; the row's sum" under the
    /// ones-then-zeros contract, x being the index expression it gathers. Null when the pattern differs.
    /// </summary>
    private Sym? FlatMaskGather(NodeProto reshape, int depth)
    {
        if (_graph.Producer(reshape.Input[0]) is not { OpType: "Gather" } gather || (gather.IntAttr("axis") ?? 0) != 0) return null;
        if (_graph.Producer(gather.Input[0]) is not { OpType: "Reshape" } flatData || _eval.Values(flatData.Input[1]) is not [-1]) return null;
        if (_graph.Producer(gather.Input[1]) is not { OpType: "Reshape" } flatIndex || _eval.Values(flatIndex.Input[1]) is not [-1]) return null;
        var mask = _graph.SkipPassThroughUp(flatData.Input[0]);
        if (!_graph.IsGraphInput(mask) || !IsAttentionMaskInput(mask)) return null;
        var index = flatIndex.Input[0];
        // The result takes the index's shape back: Reshape(·, Shape(index)).
        if (_graph.Producer(reshape.Input[1]) is not { OpType: "Shape" } back || back.Input[0] != index || back.Attribute.Count > 0) return null;
        if (_graph.Producer(index) is not { OpType: "Add" } add) return null;
        for (int i = 0; i < 2; i++)
        {
            if (_graph.Producer(add.Input[1 - i]) is not { OpType: "Mul" } mul) continue;
            for (int j = 0; j < 2; j++)
            {
                if (!IsBatchIndex(mul.Input[j]) || !IsWidthOf(mul.Input[1 - j], mask)) continue;
                if (Eval(add.Input[i], depth + 1) is not IntSym x || x.Axes.Contains(B)) throw new Refusal("a flat gather of attention_mask at an index that is not a key index expression");
                if (_paddingMask is not null && _paddingMask != mask) throw new Refusal($"it reads two 2-D integer inputs ('{_paddingMask}', '{mask}')");
                _paddingMask = mask;
                var axes = (string[])x.Axes.Clone();
                if (axes.Length < 4) axes = [.. Enumerable.Repeat(One, 4 - axes.Length), .. axes];
                axes[0] = B;
                bool isBool = _graph.Producer(flatData.Input[0]) is { OpType: "Cast" } cast && (cast.IntAttr("to") ?? 0) == (long)TensorProto.Types.DataType.Bool;
                var visible = Lin.Var(LengthPrefix + mask).Plus(x.Expr, -1).Plus(Lin.Constant(1), -1);
                return new TabSym(axes, [[visible]], [0, 1], isBool);
            }
        }
        return null;
    }

    // Range(0, B, 1) placed on the leading axis of a rank-4 tensor (Reshape to [−1, 1, 1, 1], then Expand).
    private bool IsBatchIndex(string value)
    {
        for (int i = 0; i < 8 && _graph.Producer(value) is { } p; i++)
        {
            switch (p.OpType)
            {
                case "Expand" or "Cast" or "Identity":
                    value = p.Input[0];
                    continue;
                case "Reshape" when _eval.Values(p.Input[1]) is [-1, 1, 1, 1]:
                    value = p.Input[0];
                    continue;
                case "Range":
                    return _eval.Scalar(p.Input[0]) == 0 && _eval.Scalar(p.Input[2]) == 1;
                default:
                    return false;
            }
        }
        return false;
    }

    // The width (last dim) of mask, read from its shape (or a Cast of it).
    private bool IsWidthOf(string value, string mask) =>
        Dim(value, 0) is { } w && _graph.Shape(mask) is { Count: 2 } shape && Equals(shape[1], w);

    // A boolean part of a mask sum stands for 0 where true and −large where false.
    private static TabSym ToAdditive(TabSym t) =>
        t.IsBool ? t with { Values = t.Values.Select(v => v != 0 ? 0.0 : Blocked).ToArray(), IsBool = false } : t;

    /// <summary>
    /// A constant whose last two axes are a square lower-triangular table (TorchScript GPT-2's
    /// <c>bias</c> buffer, tril(ones(N, N)) viewed as [1, 1, N, N]): a table over buffer rows (R) and
    /// columns (C), "column ≤ row", which Slices turn into the query and key axes. Null for other constants.
    /// </summary>
    private Sym? TriangularBuffer(TensorProto t)
    {
        if (t.Dims.Count < 2 || t.Dims[^1] != t.Dims[^2] || t.Dims[^1] < 2 || t.Dims[^1] > 8192 || t.Dims.Take(t.Dims.Count - 2).Any(d => d != 1))
            return null;
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
            throw new Refusal($"the constant '{t.Name}' (a [{string.Join(", ", t.Dims)}] table) is stored as external data, which the analysis does not read");
        double[] v;
        try { v = TensorProtos.ToDoubles(t); }
        catch (NotSupportedException) { return null; }
        long n = t.Dims[^1];
        double on = v[0], off = v[1];
        if (on == off) return null;
        for (long i = 0; i < n; i++)
            for (long j = 0; j < n; j++)
                if (v[i * n + j] != (j <= i ? on : off)) return null;
        var axes = Enumerable.Repeat(One, t.Dims.Count - 2).Append(Rows).Append(Cols).ToArray();
        var colNotAfterRow = Lin.Var(Index(1)).Plus(Lin.Var(Index(0)), -1);
        return new TabSym(axes, [[colNotAfterRow]], [off, on], t.DataType == (int)TensorProto.Types.DataType.Bool);
    }

    /// <summary>
    /// Slice along one axis at a time: a full-length slice of the query, key or a broadcast axis
    /// changes nothing; a buffer's rows sliced [P, P + S) become the queries (row = P + q) and its
    /// columns sliced [0, key length) the keys. Anything else is refused.
    /// </summary>
    private Sym SliceSym(NodeProto n, int depth)
    {
        var x = Eval(n.Input[0], depth + 1);
        int rank = x.Axes.Length;
        bool attributes = n.Input.Count < 3;
        if (attributes)
        {
            var st = n.Attribute.FirstOrDefault(a => a.Name == "starts")?.Ints.ToArray() ?? [];
            var en = n.Attribute.FirstOrDefault(a => a.Name == "ends")?.Ints.ToArray() ?? [];
            var ax = n.Attribute.FirstOrDefault(a => a.Name == "axes")?.Ints.ToArray() ?? Enumerable.Range(0, st.Length).Select(i => (long)i).ToArray();
            if (st.Length != en.Length || ax.Length != st.Length) throw new Refusal("a Slice with inconsistent starts/ends/axes");
            for (int i = 0; i < st.Length; i++) x = SliceAxis(x, Norm(ax[i], rank), Lin.Constant(st[i]), Lin.Constant(Math.Min(en[i], long.MaxValue / 2)));
            return x;
        }
        if (n.Input.Count > 4 && n.Input[4].Length > 0 && (_eval.Values(n.Input[4]) is not { } steps || steps.Any(v => v != 1)))
            throw new Refusal("a Slice with a step other than 1");
        var axes = n.Input.Count > 3 && n.Input[3].Length > 0 ? _eval.Values(n.Input[3]) ?? throw new Refusal("a Slice with non-constant axes") : null;
        var starts = _eval.Values(n.Input[1]);
        var ends = _eval.Values(n.Input[2]);
        int count = axes?.Length ?? starts?.Length ?? 1;
        if (count == 1)
        {
            int axis = Norm((long)(axes?[0] ?? 0), rank);
            var start = ScalarLin(n.Input[1], depth) ?? throw new Refusal("a Slice whose start is not a scalar length expression");
            var end = ends is [var e] ? Lin.Constant((long)Math.Min(e, long.MaxValue / 2)) : ScalarLin(n.Input[2], depth)
                ?? throw new Refusal("a Slice whose end is not a scalar length expression");
            return SliceAxis(x, axis, start, end);
        }
        if (starts is null || ends is null || axes is null || starts.Length != count || ends.Length != count)
            throw new Refusal("a multi-axis Slice with non-constant bounds");
        for (int i = 0; i < count; i++)
            x = SliceAxis(x, Norm((long)axes[i], rank), Lin.Constant((long)starts[i]), Lin.Constant((long)Math.Min(ends[i], long.MaxValue / 2)));
        return x;
    }

    private static int Norm(long axis, int rank) =>
        axis >= -rank && axis < rank ? (int)(axis < 0 ? axis + rank : axis) : throw new Refusal($"a Slice of axis {axis} of a rank-{rank} mask");

    // A scalar index expression (no axis indices) from the dataflow, or null.
    private Lin? ScalarLin(string value, int depth) =>
        Eval(value, depth + 1) is IntSym s && s.Axes.All(a => a == One) && !s.Expr.Terms.Keys.Any(k => k.StartsWith('#')) ? s.Expr : null;

    private bool IsKeyLength(Lin end) => _keyLengths.Any(k => DimLin(k) is { } l && Key([l]) == Key([end]));

    private Sym SliceAxis(Sym x, int axis, Lin start, Lin end)
    {
        var label = x.Axes[axis];
        const long Huge = int.MaxValue;
        bool fromZero = start.Terms.Count == 0 && start.Const == 0;
        bool toEnd = end.Terms.Count == 0 && end.Const >= Huge;
        if (fromZero && toEnd) return x;  // [0, end of axis)
        if (label == One && fromZero && end.Terms.Count == 0 && end.Const >= 1) return x;
        if (label == K && fromZero && IsKeyLength(end)) return x;
        if (label == Q && fromZero && DimLin(_queryLength) is { } ql && Key([ql]) == Key([end])) return x;
        if (label == Cols && fromZero && IsKeyLength(end)) return WithLabel(x, axis, K);
        if (label == Rows && x is TabSym t && DimLin(_queryLength) is { } q && Key([end.Plus(start, -1)]) == Key([q]))
        {
            // Buffer row r = start + q.
            string position = Index(x.Axes.Length - 1 - axis);
            var shifted = t.Conds.Select(cond => (IReadOnlyList<Lin>)cond.Select(a => Substitute(a, position, Lin.Var(position).Plus(start, 1))).ToList()).ToList();
            return WithLabel(new TabSym(t.Axes, shifted, t.Values, t.IsBool), axis, Q);
        }
        throw new Refusal($"a Slice of {Describe(label)} axis from {start} to {end}");
    }

    private static Lin Substitute(Lin atom, string variable, Lin replacement)
    {
        if (!atom.Terms.TryGetValue(variable, out long coefficient)) return atom;
        var terms = new SortedDictionary<string, long>(atom.Terms, StringComparer.Ordinal);
        terms.Remove(variable);
        var r = new Lin(terms, atom.Const);
        for (long i = 0; i < Math.Abs(coefficient); i++) r = r.Plus(replacement, Math.Sign(coefficient));
        return r;
    }

    private static Sym WithLabel(Sym x, int axis, string label)
    {
        var axes = (string[])x.Axes.Clone();
        axes[axis] = label;
        return WithAxes(x, axes);
    }

    private Sym InputSym(string value)
    {
        var shape = _graph.Shape(value);
        var type = _graph.ElementType(value);
        bool isInt = type is TensorProto.Types.DataType.Int64 or TensorProto.Types.DataType.Int32;
        if (shape is { Count: 1 } && isInt) return new IntSym([B], Lin.Var(value));
        // attention_mask [B, past + S]: key k visible iff k < its row's sum (rows ones then zeros).
        if (IsAttentionMaskInput(value))
        {
            if (_paddingMask is not null && _paddingMask != value) throw new Refusal($"it reads two 2-D integer inputs ('{_paddingMask}', '{value}')");
            _paddingMask = value;
            return new TabSym([B, K], [[Lin.Var(LengthPrefix + value).Plus(Lin.Var(KeyIndex), -1).Plus(Lin.Constant(1), -1)]], [0, 1], false);
        }
        throw new Refusal($"it depends on the graph input '{value}', which is neither a per-batch integer vector nor a [batch, keys] integer attention_mask (a data-dependent mask)");
    }

    private static double TensorValue(TensorProto t)
    {
        var v = TensorProtos.ToDoubles(t);
        if (v is not { Length: 1 }) throw new Refusal("a fill value that is not a single number");
        return v[0];
    }

    private Sym ConstantSym(string value, int rank)
    {
        var v = _eval.Values(value);
        if (v is { Length: 1 } && _graph.ElementType(value) == TensorProto.Types.DataType.Bool)
            return TabSym.Const(Enumerable.Repeat(One, rank).ToArray(), v[0] != 0 ? 1 : 0, isBool: true);
        if (v is not { Length: 1 })
            throw new Refusal(rank >= 2 ? $"the constant '{value}' is a table that is neither a single number nor a lower-triangular [.., N, N] buffer"
                : $"the constant '{value}' is not a single number");
        return Constant(Enumerable.Repeat(One, rank).ToArray(), v[0]);
    }

    private static Sym Constant(string[] axes, double x) =>
        x == Math.Floor(x) && Math.Abs(x) < 1e15 ? new IntSym(axes, Lin.Constant((long)x)) : TabSym.Const(axes, x);

    private static TabSym ToTable(Sym s, string op) => s switch
    {
        TabSym t => t,
        IntSym { Expr.Terms.Count: 0 } i => TabSym.Const(i.Axes, i.Expr.Const),
        _ => throw new Refusal($"{op} mixes an index expression with mask values"),
    };

    private static TabSym ToBool(Sym s, string op) => ToTable(s, op) is { IsBool: true } t ? t : throw new Refusal($"{op} of a value that is not boolean");

    private static TabSym Compare(string op, IntSym x, IntSym y)
    {
        var axes = Broadcast(x.Axes, y.Axes);
        var ge = x.Expr.Plus(y.Expr, -1);  // x − y
        // Everything as "expr ≥ 0" over integers.
        return op switch
        {
            "GreaterOrEqual" => TabSym.Condition(axes, [ge]),
            "Greater" => TabSym.Condition(axes, [ge.Plus(Lin.Constant(1), -1)]),
            "LessOrEqual" => TabSym.Condition(axes, [ge.Negate()]),
            "Less" => TabSym.Condition(axes, [ge.Not()]),
            "Equal" => TabSym.Condition(axes, [ge, ge.Negate()]),
            "NotEqual" => new TabSym(axes, [[ge, ge.Negate()]], [1, 0], true),
            _ => throw new Refusal($"{op} of index expressions"),
        };
    }

    /// <summary>Elementwise <paramref name="op"/> over tables: the union of their conditions, the op applied per assignment.</summary>
    private static TabSym Combine(string op, TabSym[] args, bool isBool)
    {
        var axes = args.Skip(1).Aggregate(args[0].Axes, (a, t) => Broadcast(a, t.Axes));
        var conds = new List<IReadOnlyList<Lin>>();
        var keys = new List<string>();
        var maps = args.Select(t => t.Conds.Select(c =>
        {
            var k = Key(c);
            int at = keys.IndexOf(k);
            if (at < 0) { keys.Add(k); conds.Add(c); at = conds.Count - 1; }
            return at;
        }).ToArray()).ToArray();
        if (conds.Count > MaxConditions) throw new Refusal($"it combines more than {MaxConditions} conditions");
        var values = new double[1 << conds.Count];
        for (int bits = 0; bits < values.Length; bits++)
        {
            var v = new double[args.Length];
            for (int a = 0; a < args.Length; a++)
            {
                int local = 0;
                for (int c = 0; c < maps[a].Length; c++) if ((bits >> maps[a][c] & 1) != 0) local |= 1 << c;
                v[a] = args[a].Values[local];
            }
            values[bits] = op switch
            {
                "Add" => v[0] + v[1],
                "Sub" => v[0] - v[1],
                "Mul" => v[0] * v[1],  // IEEE: 0 · (−inf) is NaN, which the final check refuses where it can occur
                "Div" => v[1] != 0 ? v[0] / v[1] : throw new Refusal("a division by zero in the mask"),
                "Min" => v.Min(),
                "Max" => v.Max(),
                "GreaterOrEqual" => v[0] >= v[1] ? 1 : 0,
                "Greater" => v[0] > v[1] ? 1 : 0,
                "LessOrEqual" => v[0] <= v[1] ? 1 : 0,
                "Less" => v[0] < v[1] ? 1 : 0,
                "Equal" => v[0] == v[1] ? 1 : 0,
                "And" => v[0] != 0 && v[1] != 0 ? 1 : 0,
                "Or" => v[0] != 0 || v[1] != 0 ? 1 : 0,
                "Xor" => (v[0] != 0) != (v[1] != 0) ? 1 : 0,
                "Where" => v[0] != 0 ? v[1] : v[2],
                _ => throw new InvalidOperationException(op),
            };
        }
        bool resultBool = isBool || (op == "Where" && args[1].IsBool && args[2].IsBool);
        return new TabSym(axes, conds, values, resultBool);
    }

    private Sym RangeSym(NodeProto n)
    {
        if (n.Input.Count < 3 || _eval.Scalar(n.Input[2]) != 1) throw new Refusal("a Range with a step other than 1");
        var limit = Dim(n.Input[1], 0);
        if (_eval.Scalar(n.Input[0]) == 0)
        {
            if (Equals(limit, _queryLength)) return new IntSym([Q], Lin.Var(KeyIndex));
            if (limit is not null && _keyLengths.Contains(limit)) return new IntSym([K], Lin.Var(KeyIndex));
            throw new Refusal($"a Range up to {limit ?? "an unknown length"}, which is neither the query length ({_queryLength}) nor the key length ({_keyLength})");
        }
        // Range(start, start + S): the positions of the queries (HF's cache_position).
        var start = Dim(n.Input[0], 0);
        if (start is not null && Equals(ShapeInference.AddDims(start, _queryLength), limit) && Eval(n.Input[0], 1) is IntSym { Axes.Length: 0 or 1 } s
            && s.Axes.All(a => a == One) && !s.Expr.Terms.Keys.Any(v => v.StartsWith('#')))
            return new IntSym([Q], Lin.Var(KeyIndex).Plus(s.Expr, 1));
        throw new Refusal($"a Range from {ShapeInference.Format(start)} to {ShapeInference.Format(limit)}: not 0 up to the query or key length, nor start + the query length");
    }

    /// <summary>Reshape that only inserts or removes unit axes (the non-unit axes keep their order and lengths).</summary>
    private Sym ReshapeSym(Sym x, string value, string target)
    {
        var dims = (Target(target) is { } t && t.All(d => d is not (null or 0L)) && t.Count(d => Equals(d, -1L)) <= 1 ? t : null) ?? _eval.PartialShape(value)
            ?? throw new Refusal("a Reshape to an unknown shape");
        // One −1 (the rest inferred) stands for the one axis of x that is not a unit axis.
        if (dims.Any(d => Equals(d, -1L)))
        {
            var only = x.Axes.Where(a => a != One).ToList();
            if (only.Count != 1 || dims.Any(d => d is not (-1L or 1L))) throw new Refusal("a Reshape with −1 that merges or splits the mask's axes");
            dims = dims.Select(d => Equals(d, -1L) ? (only[0] == Q ? _queryLength : only[0] == K ? _keyLength : null) : d).ToArray();
            if (dims.Any(d => d is null)) throw new Refusal("a Reshape with −1 of the batch axis");
        }
        var outer = new List<int>();
        for (int i = 0; i < dims.Length; i++)
        {
            if (Equals(dims[i], 1L)) continue;
            if (dims[i] is null) throw new Refusal("a Reshape to a partly unknown shape");
            outer.Add(i);
        }
        var inner = Enumerable.Range(0, x.Axes.Length).Where(i => x.Axes[i] != One).ToList();
        if (inner.Count != outer.Count) throw new Refusal("a Reshape that merges or splits the mask's axes");
        var labels = Enumerable.Repeat(One, dims.Length).ToArray();
        var map = Enumerable.Repeat(-1, x.Axes.Length).ToArray();
        for (int j = 0; j < inner.Count; j++)
        {
            var label = x.Axes[inner[j]];
            if (!LengthMatches(label, dims[outer[j]])) throw new Refusal($"a Reshape that gives {Describe(label)} axis the length {ShapeInference.Format(dims[outer[j]])}");
            labels[outer[j]] = label;
            map[inner[j]] = outer[j];
        }
        return Move(x, labels, map);
    }

    /// <summary>
    /// A target shape as the dataflow computes it (the shape pass folds shape tensors, symbolic dims
    /// included), rather than the output's declared value_info: exporters
    /// name the dims of intermediate values with their own symbols (e.g. target_sequence_length),
    /// which say nothing about the inputs' dims.
    /// </summary>
    private object?[]? Target(string shapeTensor, int depth = 0)
    {
        if (_graph.Inferred.Get(shapeTensor).Values is { } v) return v.ToArray();
        // The exporters' "Where(Equal(shape, −1·ones), ones, shape)" guard: a shape of dims (≥ 0)
        // never equals a negative constant, so it is the shape itself.
        if (depth < 4 && _graph.Producer(shapeTensor) is { OpType: "Where" } w && _graph.Producer(w.Input[0]) is { OpType: "Equal" } eq
            && eq.Input.Contains(w.Input[2]) && eq.Input.FirstOrDefault(i => i != w.Input[2]) is { } other && IsNegative(other)
            && Target(w.Input[2], depth + 1) is { } dims && dims.All(d => d is string || d is long x && x >= 0))
            return dims;
        return _eval.Values(shapeTensor)?.Select(d => (object?)(long)d).ToArray();
    }

    // Mul(ConstantOfShape(fill > 0), c < 0) or a constant with every element negative.
    private bool IsNegative(string value)
    {
        if (_eval.Values(value) is { Length: > 0 } v) return v.All(x => x < 0);
        if (_graph.Producer(value) is not { OpType: "Mul" } m) return false;
        for (int i = 0; i < 2; i++)
            if (_eval.Scalar(m.Input[i]) is < 0 && _graph.Producer(m.Input[1 - i]) is { OpType: "ConstantOfShape" } c
                && c.Attribute.FirstOrDefault(a => a.Name == "value")?.T is { } fill && TensorValue(fill) > 0)
                return true;
        return false;
    }

    private bool LengthMatches(string label, object? dim) => label switch
    {
        Q => Equals(dim, _queryLength),
        K => dim is not null && _keyLengths.Contains(dim),
        _ => true,
    };

    /// <summary>
    /// Expand: broadcast axes keep their labels. One case changes the mask: a square causal mask over
    /// the new tokens ([S, S], "key ≤ query") expanded along the keys to past + S keys, as the genai
    /// builder's MHA mask does. ORT accepts that Expand only when S = past + S (no past) or S = 1
    /// (decode); in both cases the result equals "key ≤ past + query", which is what it becomes here.
    /// </summary>
    private Sym ExpandSym(Sym x, string value, string target)
    {
        var dims = Target(target) ?? _eval.PartialShape(value) ?? throw new Refusal("an Expand to an unknown shape");
        if (dims.Length < x.Axes.Length) throw new Refusal("an Expand to a lower rank");
        var labels = new string[dims.Length];
        bool squareToKeys = false;
        for (int j = 0; j < dims.Length; j++)
        {
            int i = j - (dims.Length - x.Axes.Length);
            var label = i >= 0 ? x.Axes[i] : One;
            labels[j] = label;
            if (label == One || dims[j] is null || Equals(dims[j], 1L) || LengthMatches(label, dims[j]) || label == B) continue;
            if (label == Q && j == dims.Length - 1 && LengthMatches(K, dims[j]) && i >= 1 && x.Axes[i - 1] == Q)
            {
                squareToKeys = true;
                labels[j] = K;
                continue;
            }
            throw new Refusal($"an Expand of {Describe(label)} axis to length {ShapeInference.Format(dims[j])}");
        }
        if (!squareToKeys) return WithAxes(x, labels);
        if (DimVariable(_pastLength) is not { } past) throw new Refusal("a [S, S] mask expanded to the keys without a known past length");
        if (x is not TabSym t) throw new Refusal("an index expression expanded from the new tokens to all keys");
        var causal = Lin.Var(QueryIndex).Plus(Lin.Var(KeyIndex), -1);
        var shifted = causal.Plus(Lin.Var(past), 1);
        var conds = t.Conds.Select(c => (IReadOnlyList<Lin>)c.Select(a =>
            !a.Terms.ContainsKey(KeyIndex) ? a
            : Key([a]) == Key([causal]) ? shifted
            : throw new Refusal($"a [S, S] mask with the constraint {a} ≥ 0 (not key ≤ query) expanded to past + S keys")).ToList()).ToList();
        return new TabSym(labels, conds, t.Values, t.IsBool);
    }

    /// <summary>Trilu over the last two axes: rows are the queries (#1), columns the keys (#0).</summary>
    private Sym TriluSym(NodeProto n, Sym input)
    {
        var x = ToTable(input, "Trilu");
        var dims = _eval.PartialShape(n.Input[0]) ?? throw new Refusal("a Trilu of an unknown shape");
        if (dims.Length < 2) throw new Refusal("a Trilu of rank < 2");
        string Label(object? d, string what) =>
            Equals(d, _queryLength) ? Q : d is not null && _keyLengths.Contains(d) ? K : throw new Refusal($"a Trilu whose {what} are {ShapeInference.Format(d)}, neither the query nor the key length");
        var (rows, cols) = (Label(dims[^2], "rows"), Label(dims[^1], "columns"));
        if (rows != Q || cols != K) throw new Refusal("a Trilu whose rows are not the queries and columns not the keys");
        long k = n.Input.Count > 1 && n.Input[1].Length > 0 ? (long)(_eval.Scalar(n.Input[1]) ?? throw new Refusal("a Trilu with a non-constant diagonal")) : 0;
        bool upper = (n.IntAttr("upper") ?? 1) != 0;
        var colMinusRow = Lin.Var(KeyIndex).Plus(Lin.Var(QueryIndex), -1);
        var keep = upper ? colMinusRow.Plus(Lin.Constant(k), -1) : colMinusRow.Negate().Plus(Lin.Constant(k), 1);
        var axes = Broadcast(x.Axes, [.. Enumerable.Repeat(One, dims.Length - 2), Q, K]);
        return Combine("Where", [TabSym.Condition(axes, [keep]), x, TabSym.Const(axes, 0)], false);
    }

    /// <summary>The value of a scalar shape expression: a constant, or a dim of some value's shape.</summary>
    private object? Dim(string value, int depth)
    {
        if (depth > 16) return null;
        if (_eval.Scalar(value) is double c) return (long)c;
        var n = _graph.Producer(value);
        if (n is null) return null;
        if (_graph.Inferred.Get(value).Values is [{ } folded]) return folded;  // the shape pass's folding (Slice of a Shape, ...)
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
        TabSym t => t with { Axes = axes },
        _ => throw new InvalidOperationException(),
    };

    /// <summary>New labels, and where each old axis went (−1: dropped); index variables follow their axes.</summary>
    private static Sym Move(Sym x, string[] labels, int[] newIndexOfOld)
    {
        var positions = new Dictionary<int, int>();
        for (int i = 0; i < newIndexOfOld.Length; i++)
            if (newIndexOfOld[i] >= 0) positions[x.Axes.Length - 1 - i] = labels.Length - 1 - newIndexOfOld[i];
        return x switch
        {
            IntSym s => new IntSym(labels, s.Expr.Rename(positions)),
            TabSym t => new TabSym(labels, t.Conds.Select(c => (IReadOnlyList<Lin>)c.Select(a => a.Rename(positions)).ToList()).ToList(), t.Values, t.IsBool),
            _ => throw new InvalidOperationException(),
        };
    }

    private static string[] Broadcast(string[] a, string[] b)
    {
        int rank = Math.Max(a.Length, b.Length);
        var r = new string[rank];
        for (int i = 0; i < rank; i++)
        {
            var x = i - (rank - a.Length) >= 0 ? a[i - (rank - a.Length)] : One;
            var y = i - (rank - b.Length) >= 0 ? b[i - (rank - b.Length)] : One;
            r[i] = x == y || y == One ? x : x == One ? y : throw new Refusal($"it broadcasts a {Describe(x)} axis against a {Describe(y)} axis");
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

    private static string Describe(string axis) => axis switch
    {
        B => "the batch",
        Q => "the queries",
        K => "the keys",
        One => "a broadcast",
        Rows => "a table's rows",
        Cols => "a table's columns",
        _ => "heads",
    };

    /// <summary>
    /// The visible set of the final mask as one conjunction of atoms: for every assignment of the
    /// conditions that is not self-contradictory, visible (true, or additive 0) must equal one
    /// conjunction of literals (a negated condition must be a single atom).
    /// </summary>
    private static List<Lin> VisibleConjunction(TabSym t)
    {
        int n = t.Conds.Count;
        var visible = new bool[t.Values.Length];
        for (int bits = 0; bits < visible.Length; bits++)
        {
            double v = t.Values[bits];
            if (t.IsBool) visible[bits] = v != 0;
            else if (double.IsNaN(v) && !Feasible(t.Conds, bits)) visible[bits] = false;  // cannot occur
            else if (v == 0) visible[bits] = true;
            else if (v <= Blocked) visible[bits] = false;
            else throw new Refusal($"it is not an additive mask (0 / −large) nor a boolean one: it takes the value {v}");
        }
        var feasible = Enumerable.Range(0, visible.Length).Where(bits => Feasible(t.Conds, bits)).ToList();
        if (feasible.All(b => !visible[b])) throw new Refusal("it masks every key");
        // Literal choice per condition: 0 absent, 1 the condition, 2 its negation. Most literals first: an
        // implied constraint (e.g. causal under a stricter padding limit) is kept, so the reason names it.
        int combos = (int)Math.Pow(3, n);
        foreach (var choice in Enumerable.Range(0, combos).OrderByDescending(c => Digits(c, n).Count(d => d != 0)))
        {
            var d = Digits(choice, n);
            if (Enumerable.Range(0, n).Any(i => d[i] == 2 && t.Conds[i].Count != 1)) continue;
            bool Conj(int bits) => Enumerable.Range(0, n).All(i => d[i] == 0 || ((bits >> i & 1) != 0) == (d[i] == 1));
            if (!feasible.All(bits => Conj(bits) == visible[bits])) continue;
            var atoms = new List<Lin>();
            for (int i = 0; i < n; i++)
                if (d[i] == 1) atoms.AddRange(t.Conds[i]);
                else if (d[i] == 2) atoms.Add(t.Conds[i][0].Not());
            return atoms;
        }
        throw new Refusal("its visible keys are not one conjunction of its conditions (an Or, or values that unmask what another part masks)");
    }

    private static int[] Digits(int c, int n)
    {
        var d = new int[n];
        for (int i = 0; i < n; i++, c /= 3) d[i] = c % 3;
        return d;
    }

    /// <summary>False when the assignment contradicts itself: one atom or the sum of two is negative for all non-negative indices and lengths.</summary>
    private static bool Feasible(IReadOnlyList<IReadOnlyList<Lin>> conds, int bits)
    {
        var atoms = new List<Lin>();
        for (int i = 0; i < conds.Count; i++)
            if ((bits >> i & 1) != 0) atoms.AddRange(conds[i]);
            else if (conds[i].Count == 1) atoms.Add(conds[i][0].Not());
        static bool NonNegative(string v) => v.StartsWith('#') || v.StartsWith("dim:", StringComparison.Ordinal) || v.StartsWith(LengthPrefix, StringComparison.Ordinal);
        static bool Impossible(Lin a) => a.Const < 0 && a.Terms.All(t => t.Value <= 0 && NonNegative(t.Key));
        for (int i = 0; i < atoms.Count; i++)
        {
            if (Impossible(atoms[i])) return false;
            for (int j = i + 1; j < atoms.Count; j++)
                if (Impossible(atoms[i].Plus(atoms[j], 1))) return false;
        }
        return true;
    }

    private static MaskFacts Classify(List<Lin> atoms, bool requireCausal)
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
        if (!causal && requireCausal) throw new Refusal("it has no causal constraint (k ≤ position of the query): a bidirectional mask");
        if (!causal)
        {
            if (window is not null) throw new Refusal("a sliding window without the causal constraint");
            return new MaskFacts(null, null, limits) { Causal = false };
        }
        if (causalOffsets.Count > 1) throw new Refusal("two causal constraints with different query offsets");
        var offset = causalOffsets.Single();
        if (windowOffsets.Any(o => o != offset)) throw new Refusal("the sliding window and the causal constraint use different query offsets");
        return new MaskFacts(offset == None ? null : offset, window, limits);
    }
}
