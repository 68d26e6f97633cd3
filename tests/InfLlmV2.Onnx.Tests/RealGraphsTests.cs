using System.Globalization;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using Xunit.Abstractions;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// The shared real exporter graphs (../shared/fixtures/real-graphs), read in place: every attention
/// site is rewritten or refused with a reason, never a crash and never silence. Graphs without their
/// weights get zero-filled sparse data files in a temporary folder beside a link to the model.
/// </summary>
public class RealGraphsTests(ITestOutputHelper output)
{
    /// <summary>
    /// A temporary folder holding a symbolic link to the shared model and, for each external data
    /// location it names, a sparse file as long as the farthest <c>offset + length</c> (nothing is written).
    /// </summary>
    public static string WithSparseData(TempDir dir, string model)
    {
        var proto = OnnxModelFile.Load(model);
        var link = dir[Path.GetFileName(model)];
        File.CreateSymbolicLink(link, model);
        var extents = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var t in ModelWriter.ExternalTensors(proto))
        {
            var location = ExternalData.Entry(t, "location")!;
            long offset = long.Parse(ExternalData.Entry(t, "offset") ?? "0", CultureInfo.InvariantCulture);
            long end = offset + (ExternalData.Entry(t, "length") is { } l ? long.Parse(l, CultureInfo.InvariantCulture) : TensorProtos.ByteLength(t));
            extents[location] = Math.Max(extents.GetValueOrDefault(location), end);
        }
        foreach (var (location, length) in extents)
        {
            var path = dir[location];
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            using var f = new FileStream(path, FileMode.CreateNew, FileAccess.Write);
            f.SetLength(length);
        }
        return link;
    }

    [Theory]
    [InlineData("ortopt_gpt2_contrib_attention", "past.onnx", 5, 5)]
    [InlineData("onnxcommunity_gemma3_gqa_q4", "decoder_model_merged_q4.onnx", 34, -1)]
    [InlineData("custom_exporter_phi35_decomposed", "model.onnx", -1, -1)]
    public void EverySite_RewrittenOrRefusedWithAReason(string folder, string file, int sites, int rewritten)
    {
        using var dir = new TempDir();
        var model = WithSparseData(dir, LegacyAttentionRuleTests.RealGraph(folder, file));
        var report = ModelRewriter.RewriteFile(model, dir["rewritten.onnx"]);
        foreach (var line in report.Lines()) output.WriteLine(line);
        Assert.NotEmpty(report.Sites);
        if (sites >= 0) Assert.Equal(sites, report.Sites.Count);
        if (rewritten >= 0) Assert.Equal(rewritten, report.RewrittenCount);
        Assert.All(report.Sites, s => Assert.True(s.Rewritten || s.Reason is { Length: > 0 }, $"{s.Node}: refused without a reason"));
        Assert.Equal(report.AnyRewritten, File.Exists(dir["rewritten.onnx"]));
    }
}
