using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// The exporter graphs in ../shared/fixtures/real-graphs, read in place (never copied into the repo).
/// Their weights are absent: <see cref="Load"/> creates each missing data file in a temp folder as a
/// zero-filled sparse file of the size its initializers' offset + length require.
/// </summary>
public static class RealGraphs
{
    /// <summary>The fixture folder, or null where this checkout has no ../shared.</summary>
    public static string? Folder()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "..", "shared", "fixtures", "real-graphs");
            if (Directory.Exists(candidate)) return Path.GetFullPath(candidate);
        }
        return null;
    }

    /// <summary>The model at <paramref name="relative"/> and a folder holding sparse stand-ins for its data files.</summary>
    public static ModelProto Load(string relative, TempDir data)
    {
        var folder = Folder() ?? throw new InvalidOperationException("../shared/fixtures/real-graphs is missing");
        var model = OnnxModelFile.Load(Path.Combine(folder, relative));
        var sizes = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var t in AllInitializers(model.Graph))
        {
            if (ExternalData.Entry(t, "location") is not { } location) continue;
            long offset = long.Parse(ExternalData.Entry(t, "offset") ?? "0");
            long length = long.Parse(ExternalData.Entry(t, "length") ?? TensorProtos.ByteLength(t).ToString());
            sizes[location] = Math.Max(sizes.GetValueOrDefault(location), offset + length);
        }
        foreach (var (location, size) in sizes)
        {
            using var f = new FileStream(data[location], FileMode.Create);
            f.SetLength(size);
        }
        ModelValidator.Check(model, data.Path);
        return model;
    }

    private static IEnumerable<TensorProto> AllInitializers(GraphProto g) =>
        g.Initializer.Concat(g.Node.SelectMany(GraphIndex.Subgraphs).SelectMany(AllInitializers));
}
