using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting.Rules;
using InfLlmV2.Onnx.OpContract;

namespace InfLlmV2.Onnx.GraphTools.Rewriting;

/// <summary>
/// Finds every attention of a model (main graph, If/Loop/Scan bodies and the decoder graphs of
/// BeamSearch/GreedySearch, and model-local functions, which <see cref="FunctionInliner"/> inlines), reports each with its
/// form and whether/why it can be rewritten, and (in <see cref="Rewrite"/>) swaps the accepted ones
/// for SwitchableAttention, then removes dead code, sorts, validates and imports the op's domain.
/// </summary>
public static class AttentionRewriter
{
    /// <summary>The rules, in the order they are tried.</summary>
    public static IReadOnlyList<IAttentionRule> Rules { get; } =
        [new GroupQueryAttentionRule(), new StaticCacheAttentionRule(), new OnnxAttentionRule(), new DecomposedAttentionRule(), new MultiHeadAttentionRule(),
            new LegacyAttentionRule(), new UnrecognizedAttentionRule()];

    /// <summary>Every attention site and the rules' verdicts; the model is not modified.</summary>
    public static List<AttentionSite> Inspect(ModelProto model, RewriteOptions? options = null) =>
        Run(model, options ?? new RewriteOptions(), rewrite: false, progress: null);

    /// <summary>Rewrites every accepted site in place and returns all sites (with <c>Rewritten</c> set).</summary>
    /// <exception cref="ArgumentException">The options are inconsistent.</exception>
    public static List<AttentionSite> Rewrite(ModelProto model, RewriteOptions options, Action<string>? progress = null)
    {
        if (options.Validate() is { } why) throw new ArgumentException(why);
        return Run(model, options, rewrite: true, progress);
    }

    private static List<AttentionSite> Run(ModelProto model, RewriteOptions options, bool rewrite, Action<string>? progress, bool inlineFunctions = true)
    {
        if (model.Graph is null) throw new InvalidDataException("The model has no graph");
        // Attention inside model-local functions: inline those functions in a copy, and keep the copy
        // only when something was rewritten (the model is modified only then).
        if (inlineFunctions && FunctionInliner.CallsAttentionFunction(model))
        {
            var work = model.Clone();
            var inlined = FunctionInliner.Inline(work);
            var found = Run(work, options, rewrite, progress, inlineFunctions: false);
            foreach (var (function, why) in inlined.Skipped)
                found.Add(new AttentionSite(model.Graph.Name, function, AttentionForm.Decomposed, null, null, null, false,
                    $"attention inside model-local function '{function}', not inlined: {why}", Rewritten: false, null));
            if (rewrite && found.Any(s => s.Rewritten))
            {
                model.Graph = work.Graph;
                model.Functions.Clear();
                model.Functions.AddRange(work.Functions);
                model.OpsetImport.Clear();
                model.OpsetImport.AddRange(work.OpsetImport);
            }
            return found;
        }
        var sites = new List<AttentionSite>();
        bool any = VisitGraph(model, model.Graph, [], null, isMain: true, options, rewrite, sites, progress);
        if (rewrite && any && !model.OpsetImport.Any(o => o.Domain == SwitchableAttentionOp.Domain))
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = SwitchableAttentionOp.Domain, Version = SwitchableAttentionOp.DomainVersion });
        if (rewrite && any && options.ExposeSelection) ExposeSelection(model.Graph);
        return sites;
    }

    /// <summary>
    /// Makes output 4 (<c>selected_blocks</c>) of every main-graph SwitchableAttention node a graph
    /// output named <see cref="RewriteOptions.SelectedBlocksOutputFormat"/> with the node's index in
    /// graph order (the rewritten graph is topologically sorted: layer order).
    /// </summary>
    private static void ExposeSelection(GraphProto graph)
    {
        int layer = 0;
        var taken = graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var node in graph.Node.Where(SwitchableAttentionOp.Is))
        {
            var name = string.Format(System.Globalization.CultureInfo.InvariantCulture, RewriteOptions.SelectedBlocksOutputFormat, layer++);
            if (taken.Contains(name)) throw new InvalidDataException($"--expose-selection: the model already has an output named '{name}'");
            while (node.Output.Count <= SwitchableAttentionOp.Outputs.SelectedBlocks) node.Output.Add("");
            if (node.Output[SwitchableAttentionOp.Outputs.SelectedBlocks].Length > 0) continue;  // already an output of this node
            node.Output[SwitchableAttentionOp.Outputs.SelectedBlocks] = name;
            var settings = SparseAttentionSettings.Of(node);
            long? kvHeads = node.Attribute.FirstOrDefault(a => a.Name == SwitchableAttentionOp.Attributes.KvNumHeads)?.I;
            graph.Output.Add(GraphBuilder.Tensor(name, TensorProto.Types.DataType.Int32, null, kvHeads, null, settings.BlockBudget));
        }
    }

    private static bool VisitGraph(ModelProto model, GraphProto graph, IReadOnlyCollection<string> outer, GraphIndex? parent, bool isMain,
        RewriteOptions options, bool rewrite, List<AttentionSite> sites, Action<string>? progress)
    {
        // A body sees its enclosing graphs' values (an If branch of a merged decoder reads the main graph's inputs and weights).
        var index = new GraphIndex(graph, outer, parent);
        var accepted = new List<(IAttentionRule Rule, AttentionMatch Match, int SiteIndex)>();
        var functions = model.Functions.Select(f => (f.Domain, f.Name)).ToHashSet();
        foreach (var node in graph.Node.ToList())
        {
            // A call of a model-local function is not an op: its body is inlined or reported (FunctionInliner).
            if (functions.Contains((node.Domain, node.OpType))) continue;
            // A Softmax is attention's only between Q·Kᵀ and P·V (not over a router's or a head's projection).
            if (node.OpType == "Softmax" && !UnrecognizedAttentionRule.IsAttentionSoftmax(index, node)) continue;
            foreach (var rule in Rules)
            {
                if (!rule.Match(index, node)) continue;
                var check = AttentionDiagnosis.Review(index, node, rule.Check(index, node, options));
                if (check.Match is not null && !isMain && (options.AttentionModeInput || options.CompressedState))
                    check = RuleCheck.Refuse("inside a subgraph: graph inputs for attention_mode/compressed state cannot be added", check.NumHeads, check.KvNumHeads, check.HeadSize);
                sites.Add(new AttentionSite(graph.Name, node.Name, rule.Form, check.NumHeads, check.KvNumHeads, check.HeadSize,
                    check.Match is not null, check.Reason, Rewritten: false, check.Match?.Note)
                {
                    Shapes = (check.Operands ?? node.Input.Where(i => i.Length > 0).ToList())
                        .Select(v => new SiteShape(v, ShapeInference.Format(index.Shape(v)))).ToList(),
                });
                if (check.Match is not null) accepted.Add((rule, check.Match, sites.Count - 1));
                break;
            }
        }
        bool any = false;
        if (rewrite && accepted.Count > 0)
        {
            var context = new RewriteContext(graph, index, options, isMain, model.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx")?.Version ?? 21);
            foreach (var (rule, match, at) in accepted)
            {
                progress?.Invoke($"{graph.Name}/{match.Node.Name}");
                rule.Rewrite(context, match);
                sites[at] = sites[at] with { Rewritten = true };
            }
            GraphCleanup.RemoveDeadCode(graph, isMain ? null : GraphIndex.ImplicitInputs(graph));
            GraphCleanup.Validate(graph, outer);
            any = true;
        }
        // Subgraphs see this graph's values.
        var visible = new HashSet<string>(outer, StringComparer.Ordinal);
        var after = new GraphIndex(graph, outer, parent);
        visible.UnionWith(after.AllNames);
        foreach (var node in graph.Node)
            foreach (var sub in GraphIndex.Subgraphs(node))
                any |= VisitGraph(model, sub, visible, after, isMain: false, options, rewrite, sites, progress);
        return any;
    }
}
