using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools.Rewriting;

/// <summary>
/// Inlines calls to the model-local functions (<c>ModelProto.functions</c>) that contain attention —
/// a Softmax, an attention op, or a call to such a function — so that the rules see the attention's
/// dataflow (the dynamo exporter emits <c>aten_scaled_dot_product_attention</c> as a function).
/// Each call node is replaced, where it stood, by the function's body: formal inputs and outputs
/// renamed to the call's actual values, every other value and node name prefixed with the call's
/// node name (made unique in the graph), attribute references (<c>ref_attr_name</c>) resolved from
/// the call or the function's defaults. Calls in If/Loop/Scan bodies are inlined too. A function is
/// left as it is (and named in <see cref="Result.Skipped"/>) when its body has graph attributes or imports
/// a domain at another version than the model. Functions no longer called are removed.
/// </summary>
public static class FunctionInliner
{
    private static readonly HashSet<string> AttentionOps =
        ["Softmax", "Attention", "GroupQueryAttention", "MultiHeadAttention", "SparseAttention", "PackedMultiHeadAttention"];

    /// <summary>Why a function containing attention was not inlined, per function (domain::name).</summary>
    public sealed record Result(int Inlined, IReadOnlyDictionary<string, string> Skipped);

    /// <summary>Whether the model calls a local function that contains attention.</summary>
    public static bool CallsAttentionFunction(ModelProto model)
    {
        var attention = AttentionFunctions(model);
        return attention.Count > 0 && Graphs(model.Graph).Any(g => g.Node.Any(n => attention.ContainsKey(Key(n.Domain, n.OpType))));
    }

    /// <summary>Inlines every call (nested calls included) of a local function containing attention, in place.</summary>
    public static Result Inline(ModelProto model)
    {
        var skipped = new Dictionary<string, string>(StringComparer.Ordinal);
        int inlined = 0;
        for (int pass = 0; pass < 16; pass++)
        {
            var attention = AttentionFunctions(model);
            foreach (var (key, f) in attention)
                if (!skipped.ContainsKey(key) && CannotInline(model, f) is { } why) skipped[key] = why;
            int before = inlined;
            foreach (var g in Graphs(model.Graph).ToList())
            {
                var index = new GraphIndex(g);
                foreach (var call in g.Node.ToList())
                {
                    var key = Key(call.Domain, call.OpType);
                    if (!attention.TryGetValue(key, out var f) || skipped.ContainsKey(key)) continue;
                    InlineCall(model, g, index, call, f);
                    inlined++;
                }
            }
            if (inlined == before) break;
        }
        // Drop the functions nothing calls any more.
        var called = new HashSet<string>(Graphs(model.Graph).SelectMany(g => g.Node).Concat(model.Functions.SelectMany(f => f.Node))
            .Select(n => Key(n.Domain, n.OpType)), StringComparer.Ordinal);
        foreach (var f in model.Functions.ToList())
            if (!called.Contains(Key(f.Domain, f.Name)) && AttentionFunctions(model).ContainsKey(Key(f.Domain, f.Name))) model.Functions.Remove(f);
        return new Result(inlined, skipped);
    }

    private static string Key(string domain, string name) => $"{domain}::{name}";

    // Local functions that contain attention, directly or through calls.
    private static Dictionary<string, FunctionProto> AttentionFunctions(ModelProto model)
    {
        var byKey = model.Functions.GroupBy(f => Key(f.Domain, f.Name)).ToDictionary(x => x.Key, x => x.First(), StringComparer.Ordinal);
        var result = new Dictionary<string, FunctionProto>(StringComparer.Ordinal);
        bool changed = true;
        while (changed)
        {
            changed = false;
            foreach (var (key, f) in byKey)
                if (!result.ContainsKey(key) && f.Node.Any(n => AttentionOps.Contains(n.OpType) || result.ContainsKey(Key(n.Domain, n.OpType))))
                {
                    result[key] = f;
                    changed = true;
                }
        }
        return result;
    }

    private static string? CannotInline(ModelProto model, FunctionProto f)
    {
        if (f.Node.Any(n => n.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0)))
            return "its body has subgraph attributes (If/Loop/Scan), which inlining does not rename";
        foreach (var o in f.OpsetImport)
            if (model.OpsetImport.FirstOrDefault(m => m.Domain == o.Domain) is { } m && m.Version != o.Version)
                return $"it imports domain '{(o.Domain.Length == 0 ? "ai.onnx" : o.Domain)}' at version {o.Version}, the model at {m.Version}";
        return null;
    }

    private static void InlineCall(ModelProto model, GraphProto g, GraphIndex index, NodeProto call, FunctionProto f)
    {
        foreach (var o in f.OpsetImport)
            if (!model.OpsetImport.Any(m => m.Domain == o.Domain)) model.OpsetImport.Add(o.Clone());
        string prefix = call.Name.Length > 0 ? call.Name : $"{f.Name}_{call.Output.FirstOrDefault()}";
        var rename = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < f.Input.Count; i++) rename[f.Input[i]] = i < call.Input.Count ? call.Input[i] : "";
        for (int i = 0; i < f.Output.Count; i++) rename[f.Output[i]] = i < call.Output.Count ? call.Output[i] : "";
        string Name(string v)
        {
            if (v.Length == 0) return v;
            if (!rename.TryGetValue(v, out var r)) rename[v] = r = index.UniqueName($"{prefix}/{v}");
            return r;
        }
        var body = new List<NodeProto>();
        foreach (var n in f.Node)
        {
            var c = n.Clone();
            c.Name = index.UniqueName($"{prefix}/{(n.Name.Length > 0 ? n.Name : n.OpType)}");
            for (int i = 0; i < c.Input.Count; i++) c.Input[i] = Name(c.Input[i]);
            for (int i = 0; i < c.Output.Count; i++)
            {
                // An unused formal output maps to ""; the node still needs a name for its value.
                var mapped = Name(c.Output[i]);
                c.Output[i] = mapped.Length == 0 && n.Output[i].Length > 0 ? index.UniqueName($"{prefix}/{n.Output[i]}") : mapped;
            }
            c.Attribute.Clear();
            foreach (var a in n.Attribute)
            {
                if (a.RefAttrName.Length == 0) { c.Attribute.Add(a.Clone()); continue; }
                var actual = call.Attribute.FirstOrDefault(x => x.Name == a.RefAttrName)
                    ?? f.AttributeProto.FirstOrDefault(x => x.Name == a.RefAttrName);
                if (actual is null) continue;  // an optional attribute the call does not set
                var copy = actual.Clone();
                copy.Name = a.Name;
                c.Attribute.Add(copy);
            }
            body.Add(c);
        }
        int at = g.Node.IndexOf(call);
        g.Node.RemoveAt(at);
        for (int i = 0; i < body.Count; i++) g.Node.Insert(at + i, body[i]);
    }

    private static IEnumerable<GraphProto> Graphs(GraphProto g) =>
        new[] { g }.Concat(g.Node.SelectMany(GraphIndex.Subgraphs).SelectMany(Graphs));
}
