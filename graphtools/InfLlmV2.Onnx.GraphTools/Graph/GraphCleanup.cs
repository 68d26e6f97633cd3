using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools;

/// <summary>Structural passes: dead-node and dead-initializer removal, topological sort, validation.</summary>
public static class GraphCleanup
{
    /// <summary>
    /// Removes nodes whose outputs nobody needs and initializers nobody reads (also from the graph
    /// inputs, where old IR versions list them). Graph outputs and values read by subgraphs count as needed.
    /// </summary>
    public static void RemoveDeadCode(GraphProto graph, IReadOnlySet<string>? neededByOuter = null)
    {
        var needed = new HashSet<string>(graph.Output.Select(o => o.Name), StringComparer.Ordinal);
        if (neededByOuter is not null) needed.UnionWith(neededByOuter);
        var live = new HashSet<NodeProto>();
        var producer = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        foreach (var n in graph.Node) foreach (var o in n.Output.Where(o => o.Length > 0)) producer[o] = n;
        var stack = new Stack<string>(needed);
        while (stack.Count > 0)
        {
            var v = stack.Pop();
            if (!producer.TryGetValue(v, out var n) || !live.Add(n)) continue;
            foreach (var i in n.Input.Where(i => i.Length > 0)) if (needed.Add(i)) stack.Push(i);
            foreach (var sub in GraphIndex.Subgraphs(n))
                foreach (var i in GraphIndex.ImplicitInputs(sub)) if (needed.Add(i)) stack.Push(i);
        }
        var keep = graph.Node.Where(live.Contains).ToList();
        graph.Node.Clear();
        graph.Node.AddRange(keep);
        var deadInits = graph.Initializer.Where(t => !needed.Contains(t.Name)).Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        if (deadInits.Count > 0)
        {
            var inits = graph.Initializer.Where(t => !deadInits.Contains(t.Name)).ToList();
            graph.Initializer.Clear();
            graph.Initializer.AddRange(inits);
            var inputs = graph.Input.Where(i => !deadInits.Contains(i.Name)).ToList();
            graph.Input.Clear();
            graph.Input.AddRange(inputs);
        }
        var vis = graph.ValueInfo.Where(v => needed.Contains(v.Name) || producer.ContainsKey(v.Name) && live.Contains(producer[v.Name])).ToList();
        graph.ValueInfo.Clear();
        graph.ValueInfo.AddRange(vis);
    }

    /// <summary>Sorts nodes topologically (stable: keeps the original order where dataflow allows).</summary>
    /// <exception cref="InvalidDataException">The graph has a cycle or reads an undefined value.</exception>
    public static void TopologicalSort(GraphProto graph, IEnumerable<string>? outerNames = null)
    {
        var available = new HashSet<string>(graph.Input.Select(i => i.Name).Concat(graph.Initializer.Select(i => i.Name)), StringComparer.Ordinal) { "" };
        if (outerNames is not null) available.UnionWith(outerNames);
        var pending = graph.Node.ToList();
        var sorted = new List<NodeProto>(pending.Count);
        while (pending.Count > 0)
        {
            int before = sorted.Count;
            var rest = new List<NodeProto>();
            foreach (var n in pending)
            {
                bool ready = n.Input.All(available.Contains) &&
                             GraphIndex.Subgraphs(n).All(g => GraphIndex.ImplicitInputs(g).All(available.Contains));
                if (ready)
                {
                    sorted.Add(n);
                    foreach (var o in n.Output) available.Add(o);
                }
                else rest.Add(n);
            }
            if (sorted.Count == before)
            {
                var n = rest[0];
                var missing = n.Input.Where(i => !available.Contains(i)).ToList();
                throw new InvalidDataException($"Graph '{graph.Name}': node '{n.Name}' ({n.OpType}) reads undefined or cyclic value(s) {string.Join(", ", missing)}");
            }
            pending = rest;
        }
        graph.Node.Clear();
        graph.Node.AddRange(sorted);
    }

    /// <summary>Checks that every node input is defined, no value is produced twice and graph outputs exist.</summary>
    public static void Validate(GraphProto graph, IEnumerable<string>? outerNames = null)
    {
        var produced = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in graph.Node)
            foreach (var o in n.Output.Where(o => o.Length > 0))
                if (!produced.Add(o)) throw new InvalidDataException($"Graph '{graph.Name}': value '{o}' is produced twice");
        TopologicalSort(graph, outerNames);
        var defined = new HashSet<string>(produced.Concat(graph.Input.Select(i => i.Name)).Concat(graph.Initializer.Select(i => i.Name)), StringComparer.Ordinal);
        if (outerNames is not null) defined.UnionWith(outerNames);
        foreach (var o in graph.Output)
            if (!defined.Contains(o.Name)) throw new InvalidDataException($"Graph '{graph.Name}': output '{o.Name}' is not produced");
    }
}
