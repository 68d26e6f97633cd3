using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.OpContract;

namespace InfLlmV2.Onnx.GraphTools;

/// <summary>
/// The checks ONNX Runtime makes when it loads a model, made before we read or write one, so that
/// <c>inspect</c> and <c>rewrite</c> refuse (exit 2) what ORT would refuse: an IR version and
/// opsets in the range ORT 1.29 loads, valid data types, dims that are not negative, data sizes
/// that match the dims, external data inside its file, and graphs whose values are each defined
/// once, before use, without cycles.
/// </summary>
public static class ModelValidator
{
    /// <summary>Oldest IR version accepted.</summary>
    public const long MinIrVersion = 3;

    /// <summary>Newest IR version ONNX Runtime 1.32 loads.</summary>
    public const long MaxIrVersion = 14;

    /// <summary>Newest default-domain (ai.onnx) opset ONNX Runtime 1.32 loads.</summary>
    public const long MaxDefaultOpset = 28;

    // Opset ranges of the domains whose versions ORT knows (others only need a positive version).
    private static readonly Dictionary<string, long> MaxOpset = new(StringComparer.Ordinal)
    {
        [""] = MaxDefaultOpset, ["ai.onnx"] = MaxDefaultOpset, ["ai.onnx.ml"] = 5, ["com.microsoft"] = 1,
        [SwitchableAttentionOp.Domain] = SwitchableAttentionOp.DomainVersion,
    };

    /// <summary>
    /// Throws an <see cref="InvalidDataException"/> naming the first problem found.
    /// <paramref name="modelDirectory"/> is the model's folder (external data is checked against it);
    /// null when the model has none (external tensors are then refused). With
    /// <paramref name="missingExternalData"/>, an external data file that is not there is added to it
    /// (its location, relative to the model's folder) instead of refused: for reading the graph
    /// alone, as <c>inspect</c> does. Every other problem of the reference still throws.
    /// </summary>
    public static void Check(ModelProto model, string? modelDirectory, ISet<string>? missingExternalData = null)
    {
        if (model.IrVersion < MinIrVersion || model.IrVersion > MaxIrVersion)
            throw new InvalidDataException($"IR version {model.IrVersion} is outside the range ONNX Runtime loads [{MinIrVersion}, {MaxIrVersion}]");
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var o in model.OpsetImport)
        {
            string domain = o.Domain == "ai.onnx" ? "" : o.Domain;
            if (!seen.Add(domain)) throw new InvalidDataException($"opset domain '{o.Domain}' is imported twice");
            long max = MaxOpset.TryGetValue(domain, out var m) ? m : long.MaxValue;
            if (o.Version < 1 || o.Version > max)
                throw new InvalidDataException($"opset {o.Version} of domain '{(o.Domain.Length == 0 ? "ai.onnx" : o.Domain)}' is outside [1, {max}]");
        }
        if (!seen.Contains("")) throw new InvalidDataException("the model imports no default (ai.onnx) opset");
        if (model.Graph is null) throw new InvalidDataException("the model has no graph");
        CheckGraph(model.Graph, new HashSet<string>(StringComparer.Ordinal), modelDirectory, missingExternalData);
    }

    /// <summary>Checks one tensor: type, dims, and that its data (inline or external) has the size they give.</summary>
    public static void CheckTensor(TensorProto t, string? modelDirectory) => CheckTensor(t, modelDirectory, null);

    private static void CheckTensor(TensorProto t, string? modelDirectory, ISet<string>? missing)
    {
        if (t.DataType == 0 || !Enum.IsDefined((TensorProto.Types.DataType)t.DataType))
            throw new InvalidDataException($"Tensor '{t.Name}': data type {t.DataType} is not a valid ONNX type");
        long count = TensorProtos.ElementCount(t);
        var type = (TensorProto.Types.DataType)t.DataType;
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
        {
            var dir = modelDirectory ?? throw new InvalidDataException($"Tensor '{t.Name}' has external data but no model folder is known");
            try
            {
                ExternalData.Check(t, dir);
            }
            catch (FileNotFoundException) when (missing is not null)
            {
                missing.Add(ExternalData.Entry(t, "location") ?? "");
            }
            return;
        }
        int size = TensorProtos.ElementSize(type);
        if (type == TensorProto.Types.DataType.String)
        {
            if (t.StringData.Count != count)
                throw new InvalidDataException($"Tensor '{t.Name}': {t.StringData.Count} strings, expected {count} for shape [{string.Join(",", t.Dims)}]");
            return;
        }
        if (size == 0) return;  // packed and 8-bit float types: sizes are ORT's to check
        if (!t.RawData.IsEmpty)
        {
            if (count > long.MaxValue / size || t.RawData.Length != count * size)
                throw new InvalidDataException($"Tensor '{t.Name}': raw_data has {t.RawData.Length} bytes, expected {count}x{size} for shape [{string.Join(",", t.Dims)}] of {type}");
        }
        else if (TensorProtos.TypedCount(t, type) != count)
        {
            throw new InvalidDataException($"Tensor '{t.Name}': {TensorProtos.TypedCount(t, type)} values, expected {count} for shape [{string.Join(",", t.Dims)}] of {type}");
        }
    }

    private static void CheckGraph(GraphProto graph, IReadOnlySet<string> outer, string? dir, ISet<string>? missing)
    {
        string where = $"Graph '{graph.Name}'";
        var initializers = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in graph.Initializer)
        {
            if (!initializers.Add(t.Name)) throw new InvalidDataException($"{where}: initializer '{t.Name}' is defined twice");
            CheckTensor(t, dir, missing);
        }
        foreach (var s in graph.SparseInitializer)
        {
            if (s.Values is null) throw new InvalidDataException($"{where}: a sparse initializer has no values");
            CheckTensor(s.Values, dir, missing);
            if (s.Indices is not null) CheckTensor(s.Indices, dir, missing);
        }
        var inputs = new HashSet<string>(StringComparer.Ordinal);
        foreach (var i in graph.Input)
            if (!inputs.Add(i.Name)) throw new InvalidDataException($"{where}: input '{i.Name}' is declared twice");

        var available = new HashSet<string>(outer, StringComparer.Ordinal) { "" };
        available.UnionWith(inputs);
        available.UnionWith(initializers);
        var produced = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in graph.Node)
            foreach (var o in n.Output.Where(o => o.Length > 0))
                if (!produced.Add(o) || inputs.Contains(o) || initializers.Contains(o))
                    throw new InvalidDataException($"{where}: value '{o}' is defined twice (node '{n.Name}')");

        // Every node's inputs must be defined by inputs, initializers, outer scopes or other nodes, without cycles.
        var pending = graph.Node.ToList();
        while (pending.Count > 0)
        {
            var rest = new List<NodeProto>();
            foreach (var n in pending)
            {
                if (n.Input.All(available.Contains)) { foreach (var o in n.Output) available.Add(o); }
                else rest.Add(n);
            }
            if (rest.Count == pending.Count)
            {
                var n = rest[0];
                var undefined = n.Input.Where(i => !available.Contains(i)).ToList();
                throw new InvalidDataException($"{where}: node '{n.Name}' ({n.OpType}) reads undefined or cyclic value(s) {string.Join(", ", undefined)}");
            }
            pending = rest;
        }
        foreach (var o in graph.Output)
            if (!available.Contains(o.Name)) throw new InvalidDataException($"{where}: output '{o.Name}' is not produced");

        foreach (var n in graph.Node)
            foreach (var a in n.Attribute)
            {
                if (a.T is not null) CheckTensor(a.T, dir, missing);
                foreach (var t in a.Tensors) CheckTensor(t, dir, missing);
                foreach (var sub in a.G is null ? a.Graphs : a.Graphs.Prepend(a.G))
                    CheckGraph(sub, available, dir, missing);
            }
    }
}
