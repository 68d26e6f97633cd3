using System.CommandLine;
using System.Text.Json;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Rewriting;

namespace InfLlmV2.Onnx.Cli.Commands;

/// <summary><c>infllmv2 inspect MODEL [--json]</c>: every attention site, its form, heads, head size, and whether/why it is rewritable.</summary>
public static class InspectCommand
{
    /// <summary>Creates the command.</summary>
    public static Command Create()
    {
        var model = new Argument<FileInfo>("MODEL") { Description = "ONNX model file" };
        var json = new Option<bool>("--json") { Description = "Print the sites as JSON" };
        var cmd = new Command("inspect", "List every attention site of a model and whether it can be rewritten") { model, json };
        cmd.SetAction(r => CommandRunner.Guard(() =>
        {
            var path = r.GetValue(model)!;
            var m = OnnxModelFile.Load(path.FullName);
            ModelValidator.Check(m, path.DirectoryName);
            var sites = AttentionRewriter.Inspect(m);
            if (r.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new { model = path.FullName, sites = sites.Select(SiteJson) }, JsonOptions));
                return ExitCodes.Ok;
            }
            PrintSites(path.FullName, sites);
            return ExitCodes.Ok;
        }));
        return cmd;
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
