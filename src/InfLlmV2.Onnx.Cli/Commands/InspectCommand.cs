using System.CommandLine;
using System.Text.Json;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.OpContract;

namespace InfLlmV2.Onnx.Cli.Commands;

/// <summary>
/// <c>infllmv2 inspect MODEL [--json]</c>: every attention site, its form, heads, head size, and
/// whether/why it is rewritable; in a rewritten model also the SwitchableAttention nodes grouped by
/// their sparse attributes and the preset (<see cref="SparsePresets"/>) each group matches, or "custom".
/// </summary>
public static class InspectCommand
{
    /// <summary>Creates the command.</summary>
    public static Command Create()
    {
        // Zero or one, so that `inspect --json MODEL` (the model taken as the option's value) can be
        // read as the user meant it instead of failing to parse.
        var model = new Argument<FileInfo?>("MODEL") { Description = "ONNX model file, or a model folder (genai folder, or a folder with one .onnx model)", Arity = ArgumentArity.ZeroOrOne };
        // --json alone prints to stdout (as before), --json - too, --json FILE writes the file.
        var json = new Option<FileInfo?>("--json") { Description = "Write the sites as JSON to this file (- or no value: stdout)", Arity = ArgumentArity.ZeroOrOne };
        var cmd = new Command("inspect", "List every attention site of a model and whether it can be rewritten") { model, json };
        cmd.SetAction(r => CommandRunner.Guard(() =>
        {
            var jsonTarget = r.GetResult(json) is null ? null : r.GetValue(json) ?? new FileInfo(ReportFile.StdoutName);
            var modelArg = r.GetValue(model);
            if (modelArg is null)
            {
                // `inspect --json MODEL`: the option took the model as its file; an existing model
                // (a .onnx file or a folder) is meant as MODEL, with the JSON on stdout.
                if (jsonTarget is not null && LooksLikeModel(jsonTarget))
                    (modelArg, jsonTarget) = (jsonTarget, new FileInfo(ReportFile.StdoutName));
                else
                    throw new UsageException("MODEL is missing: infllmv2 inspect MODEL [--json [FILE]] (try 'infllmv2 --help')");
            }
            var path = new FileInfo(CompareCommand.Existing(modelArg));
            if (jsonTarget is not null) ReportFile.Check(jsonTarget, "--json", path.FullName);
            var m = OnnxModelFile.Load(path.FullName);
            // The sites come from the graph alone: weights whose external data file is not here are
            // named in a note instead of refused (rewrite and run still need them).
            var missing = new SortedSet<string>(StringComparer.Ordinal);
            ModelValidator.Check(m, path.DirectoryName, missing);
            var sites = AttentionRewriter.Inspect(m);
            var groups = SwitchableGroups(m.Graph);
            if (jsonTarget is not null)
            {
                ReportFile.Write(jsonTarget, JsonSerializer.Serialize(new
                {
                    schema_version = ReportFile.SchemaVersion,
                    model = path.FullName, missing_external_data = missing, sites = sites.Select(SiteJson),
                    switchable_attention = groups.Select(g => new
                    {
                        nodes = g.Nodes, preset = g.Preset, attributes = g.Settings.Attributes().ToDictionary(a => a.Name, a => a.Value),
                        op_refuses = g.Settings.Validate(), ignored_attributes = g.Ignored,
                    }),
                }, JsonOptions));
                return ExitCodes.Ok;
            }
            PrintSites(path.FullName, sites);
            if (missing.Count > 0)
                Console.WriteLine($"  note: external data not here ({string.Join(", ", missing.Select(x => $"'{x}'"))}): the sites above come from the graph alone; rewrite and run need the file(s)");
            foreach (var g in groups)
            {
                Console.WriteLine($"  SwitchableAttention  {g.Nodes.Count} node(s): {SparsePresets.Describe(g.Settings)} -> "
                                  + (g.Settings.Validate() is { } why ? $"the op will REFUSE these nodes: {why}" : $"preset: {g.Preset}"));
                if (g.Ignored.Count > 0)
                    Console.WriteLine($"    ignored by the op (not INT, its default is used): {string.Join(", ", g.Ignored)}");
            }
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    /// <summary>
    /// The SwitchableAttention nodes of <paramref name="graph"/> and its subgraphs, grouped by the sparse
    /// attributes the op will run with (its defaults where absent or not INT), with the preset they
    /// match ("refused by the op" when the op's attribute check fails) and the attributes the op ignores.
    /// </summary>
    internal static List<(SparseAttentionSettings Settings, List<string> Nodes, string Preset, List<string> Ignored)> SwitchableGroups(GraphProto graph)
    {
        static IEnumerable<NodeProto> AllNodes(GraphProto g)
        {
            foreach (var n in g.Node)
            {
                yield return n;
                foreach (var a in n.Attribute)
                {
                    if (a.G is not null) foreach (var x in AllNodes(a.G)) yield return x;
                    foreach (var sub in a.Graphs) foreach (var x in AllNodes(sub)) yield return x;
                }
            }
        }
        return AllNodes(graph).Where(SwitchableAttentionOp.Is).GroupBy(SparseAttentionSettings.Of)
            .Select(g =>
            {
                string preset = g.Key.Validate() is not null ? "refused by the op" : SparsePresets.Matching(g.Key)?.Name ?? CustomLabel(g.Key);
                return (g.Key, g.Select(n => n.Name).ToList(), preset, g.SelectMany(SparseAttentionSettings.IgnoredAttributes).Distinct().ToList());
            }).ToList();
    }

    private static bool LooksLikeModel(FileInfo f) =>
        Directory.Exists(f.FullName) || (f.Exists && f.Extension.Equals(".onnx", StringComparison.OrdinalIgnoreCase));

    private static string CustomLabel(SparseAttentionSettings s)
    {
        var (closest, differences) = SparsePresets.Closest(s);
        return $"custom (closest: {closest.Name}, differs in {string.Join(" ", differences)})";
    }

    internal static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true };

    internal static object SiteJson(AttentionSite s) => new
    {
        graph = s.Graph, node = s.Node, form = s.Form.ToString(), num_heads = s.NumHeads, kv_num_heads = s.KvNumHeads,
        head_size = s.HeadSize, rewritable = s.Rewritable, reason = s.Reason, rewritten = s.Rewritten, note = s.Note,
        shapes = s.Shapes.Select(x => new { value = x.Value, shape = x.Shape }),
    };

    internal static void PrintSites(string model, IReadOnlyList<AttentionSite> sites)
    {
        Console.WriteLine($"{model}: {sites.Count} attention site(s), {sites.Count(s => s.Rewritable)} rewritable");
        foreach (var s in sites)
        {
            string heads = $"H={s.NumHeads?.ToString() ?? "?"} Hkv={s.KvNumHeads?.ToString() ?? "?"} D={s.HeadSize?.ToString() ?? "?"}";
            string verdict = s.Rewritten ? "rewritten" : s.Rewritable ? "rewritable" : $"not rewritable: {s.Reason}";
            if (s.Note is not null) verdict += $" ({s.Note})";
            Console.WriteLine($"  {s.Form,-20} {heads,-20} {s.Node}  -> {verdict}");
            if (s.Shapes.Count > 0) Console.WriteLine($"    shapes: {string.Join(", ", s.Shapes.Select(x => $"{x.Value} {x.Shape}"))}");
        }
    }
}
