using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools;

/// <summary>
/// Dataflow view of one <see cref="GraphProto"/>: who produces and who consumes each value, which
/// values are initializers, graph inputs/outputs, and what is known of their types and shapes.
/// Rebuild it after structural edits.
/// </summary>
public sealed class GraphIndex
{
    private readonly Dictionary<string, NodeProto> _producer = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<NodeProto>> _consumers = new(StringComparer.Ordinal);
    private readonly Dictionary<string, TensorProto> _initializers = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ValueInfoProto> _valueInfo = new(StringComparer.Ordinal);
    private readonly HashSet<string> _graphInputs = new(StringComparer.Ordinal);
    private readonly HashSet<string> _graphOutputs = new(StringComparer.Ordinal);
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);

    /// <summary>
    /// Indexes <paramref name="graph"/>; <paramref name="outerNames"/> are values visible from enclosing graphs.
    /// With <paramref name="outer"/> (the enclosing graph's index, for an If/Loop/Scan body) the
    /// values of enclosing scopes are known too: their producers, initializers, graph inputs, types and
    /// shapes (<see cref="Consumers"/> and <see cref="IsGraphOutput"/> stay this graph's own).
    /// </summary>
    public GraphIndex(GraphProto graph, IEnumerable<string>? outerNames = null, GraphIndex? outer = null)
    {
        Graph = graph;
        Outer = outer;
        if (outer is not null) foreach (var n in outer.AllNames) _names.Add(n);
        foreach (var t in graph.Initializer) { _initializers[t.Name] = t; _names.Add(t.Name); }
        foreach (var v in graph.Input) { _graphInputs.Add(v.Name); _valueInfo[v.Name] = v; _names.Add(v.Name); }
        foreach (var v in graph.ValueInfo) _valueInfo.TryAdd(v.Name, v);
        foreach (var v in graph.Output) { _graphOutputs.Add(v.Name); _valueInfo.TryAdd(v.Name, v); }
        foreach (var n in graph.Node)
        {
            _names.Add(n.Name);
            foreach (var o in n.Output.Where(o => o.Length > 0)) { _producer[o] = n; _names.Add(o); }
            foreach (var i in n.Input.Where(i => i.Length > 0))
            {
                if (!_consumers.TryGetValue(i, out var list)) _consumers[i] = list = [];
                list.Add(n);
            }
            foreach (var sub in Subgraphs(n))
                foreach (var name in ImplicitInputs(sub))
                {
                    if (!_consumers.TryGetValue(name, out var list)) _consumers[name] = list = [];
                    list.Add(n);
                }
        }
        if (outerNames is not null) foreach (var n in outerNames) _names.Add(n);
    }

    /// <summary>The indexed graph.</summary>
    public GraphProto Graph { get; }

    /// <summary>The enclosing graph's index (values of outer scopes), or null.</summary>
    public GraphIndex? Outer { get; }

    /// <summary>Whether <paramref name="node"/> is a node of this graph itself (not of an enclosing one).</summary>
    public bool IsLocal(NodeProto node) => _producer.TryGetValue(node.Output.FirstOrDefault(o => o.Length > 0) ?? "", out var p) && ReferenceEquals(p, node);

    /// <summary>The node producing <paramref name="value"/>, or null for inputs, initializers and outer values.</summary>
    public NodeProto? Producer(string value) => _producer.GetValueOrDefault(value) ?? (IsLocalValue(value) ? null : Outer?.Producer(value));

    // A value this graph defines itself (which shadows nothing: ONNX names are unique across scopes).
    private bool IsLocalValue(string value) => _producer.ContainsKey(value) || _initializers.ContainsKey(value) || _graphInputs.Contains(value);

    /// <summary>Nodes reading <paramref name="value"/> (including nodes whose subgraphs read it).</summary>
    public IReadOnlyList<NodeProto> Consumers(string value) => _consumers.TryGetValue(value, out var l) ? l : [];

    /// <summary>The initializer named <paramref name="value"/>, or null.</summary>
    public TensorProto? Initializer(string value) => _initializers.GetValueOrDefault(value) ?? (IsLocalValue(value) ? null : Outer?.Initializer(value));

    /// <summary>Whether <paramref name="value"/> is a graph input.</summary>
    public bool IsGraphInput(string value) => _graphInputs.Contains(value) || !IsLocalValue(value) && Outer?.IsGraphInput(value) == true;

    /// <summary>Whether <paramref name="value"/> is a graph output.</summary>
    public bool IsGraphOutput(string value) => _graphOutputs.Contains(value);

    /// <summary>Known tensor type of a value (graph input/output or value_info), or null.</summary>
    public TypeProto.Types.Tensor? TensorType(string value) =>
        _valueInfo.TryGetValue(value, out var v) && v.Type?.TensorType is { } t ? t : IsLocalValue(value) ? null : Outer?.TensorType(value);

    /// <summary>Element type of a value when known (from value info or an initializer, else from <see cref="Inferred"/>).</summary>
    public TensorProto.Types.DataType? ElementType(string value) =>
        TensorType(value) is { ElemType: > 0 } t ? (TensorProto.Types.DataType)t.ElemType
        : Initializer(value) is { } init ? (TensorProto.Types.DataType)init.DataType : Inferred.Get(value).ElementType;

    /// <summary>
    /// Known dims of a value: a long for a fixed dim, a string for a symbolic one, null for unknown;
    /// null when the rank is unknown. Declared shapes (initializers, value info) come first; what
    /// they leave open comes from <see cref="Inferred"/>.
    /// </summary>
    public IReadOnlyList<object?>? Shape(string value)
    {
        var declared = DeclaredShape(value);
        return declared is not null && declared.All(d => d is not null) ? declared : Inferred.Get(value).Shape ?? declared;
    }

    /// <summary>The shape written in the model (initializer dims or value info), without inference.</summary>
    public IReadOnlyList<object?>? DeclaredShape(string value)
    {
        if (Initializer(value) is { } init) return init.Dims.Select(d => (object?)d).ToList();
        var t = TensorType(value);
        if (t?.Shape is null) return null;
        return t.Shape.Dim.Select(d => d.ValueCase switch
        {
            TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue => (object?)d.DimValue,
            TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam when !IsPlaceholderSymbol(d.DimParam) => d.DimParam,
            _ => null,
        }).ToList();
    }

    /// <summary>
    /// Whether a dim_param is a placeholder for "unknown" rather than a symbol: empty, "unk" or
    /// "unk__N" (onnx shape inference and the genai builder write these for every unknown dim, so two
    /// of them say nothing about being equal).
    /// </summary>
    public static bool IsPlaceholderSymbol(string dimParam) =>
        dimParam.Length == 0 || dimParam == "unk" || dimParam.StartsWith("unk__", StringComparison.Ordinal);

    /// <summary>The symbolic shape pass over this graph (run on first use).</summary>
    public ShapeInference Inferred => _inferred ??= ShapeInference.Run(this);

    private ShapeInference? _inferred;

    /// <summary>A fixed dim of a value, or null.</summary>
    public long? StaticDim(string value, int axis) =>
        Shape(value) is { } s && axis < s.Count && s[axis] is long v ? v : null;

    /// <summary>A name not used anywhere in this graph (nor in enclosing graphs), derived from <paramref name="hint"/>.</summary>
    public string UniqueName(string hint)
    {
        var name = hint;
        for (int i = 1; !_names.Add(name); i++) name = $"{hint}_{i}";
        return name;
    }

    /// <summary>Ops that only change a value's type or name, which matching looks through.</summary>
    public static IReadOnlySet<string> PassThroughOps { get; } = new HashSet<string>(["Cast", "Identity", "CastLike"], StringComparer.Ordinal);

    /// <summary>The value <paramref name="value"/> comes from, looking up through Cast/Identity/CastLike.</summary>
    public string SkipPassThroughUp(string value)
    {
        while (Producer(value) is { } p && PassThroughOps.Contains(p.OpType)) value = p.Input[0];
        return value;
    }

    /// <summary>The value <paramref name="value"/> flows into through a chain of single Cast/Identity/CastLike consumers.</summary>
    public string SkipPassThroughDown(string value)
    {
        while (Consumers(value) is [{ } c] && PassThroughOps.Contains(c.OpType)) value = c.Output[0];
        return value;
    }

    /// <summary>Every name this graph defines or sees (for nested graphs).</summary>
    public IEnumerable<string> AllNames => _names;

    /// <summary>Graph-valued attributes of a node (If/Loop/Scan bodies).</summary>
    public static IEnumerable<GraphProto> Subgraphs(NodeProto node)
    {
        foreach (var a in node.Attribute)
        {
            if (a.G is not null) yield return a.G;
            foreach (var g in a.Graphs) yield return g;
        }
    }

    /// <summary>Values a subgraph (recursively) reads from enclosing scopes.</summary>
    public static HashSet<string> ImplicitInputs(GraphProto g)
    {
        var defined = new HashSet<string>(g.Input.Select(i => i.Name).Concat(g.Initializer.Select(i => i.Name)), StringComparer.Ordinal);
        foreach (var n in g.Node) foreach (var o in n.Output) defined.Add(o);
        var used = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in g.Node)
        {
            foreach (var i in n.Input.Where(i => i.Length > 0 && !defined.Contains(i))) used.Add(i);
            foreach (var sub in Subgraphs(n))
                foreach (var i in ImplicitInputs(sub).Where(i => !defined.Contains(i))) used.Add(i);
        }
        foreach (var o in g.Output.Where(o => !defined.Contains(o.Name))) used.Add(o.Name);
        return used;
    }
}
