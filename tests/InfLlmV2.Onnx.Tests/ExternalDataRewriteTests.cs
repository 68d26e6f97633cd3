using Google.Protobuf;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.Models;

namespace InfLlmV2.Onnx.Tests;

/// <summary>`infllmv2 rewrite` of a model whose weights are spread over several external data files, some in subfolders.</summary>
public class ExternalDataRewriteTests
{
    /// <summary>
    /// Saves the tiny decoder with each initializer of at least 1 KiB in external data, the i-th of
    /// them in <c>locations[i % locations.Length]</c> (relative to the model's folder); returns the path.
    /// </summary>
    private static string SaveSplit(string path, params string[] locations)
    {
        var model = TinyDecoderGenerator.Generate(new TinyDecoderConfig { Seed = 11 });
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        var streams = new Dictionary<string, FileStream>();
        try
        {
            int i = 0;
            foreach (var t in model.Graph.Initializer.Where(t => t.RawData.Length >= 1024))
            {
                var loc = locations[i++ % locations.Length];
                if (!streams.TryGetValue(loc, out var data))
                {
                    var file = Path.Combine(dir, loc);
                    Directory.CreateDirectory(Path.GetDirectoryName(file)!);
                    streams[loc] = data = new FileStream(file, FileMode.Create, FileAccess.Write);
                }
                long offset = data.Position;
                t.RawData.WriteTo(data);
                t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = loc });
                t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = t.RawData.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                t.DataLocation = TensorProto.Types.DataLocation.External;
                t.RawData = ByteString.Empty;
            }
            Assert.True(i >= 2 * locations.Length, $"only {i} external tensors for {locations.Length} files");
        }
        finally
        {
            foreach (var s in streams.Values) s.Dispose();
        }
        OnnxModelFile.Save(model, path);
        return path;
    }

    /// <summary>Every file and folder under <paramref name="root"/>, relative, sorted ("/" after folders).</summary>
    private static string[] Listing(string root) =>
        Directory.EnumerateFileSystemEntries(root, "*", SearchOption.AllDirectories)
            .Select(p => Path.GetRelativePath(root, p) + (Directory.Exists(p) ? "/" : ""))
            .Order(StringComparer.Ordinal).ToArray();

    [Fact]
    public void SeveralDataFiles_ToOtherFolder_EachCopiedByteIdentical_AtItsRelativeLocation_AndRuns()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir["in"]);
        var input = SaveSplit(Path.Combine(dir["in"], "m.onnx"), "m.onnx.data", "weights/part2.bin", "weights/more/part3.bin");
        var output = Path.Combine(dir["out"], "rewritten.onnx");
        Directory.CreateDirectory(dir["out"]);

        var (code, stdout, err) = CliProcess.Run("rewrite", input, "-o", output);
        Assert.True(code == 0, stdout + err);

        Assert.Equal(["m.onnx.data", "rewritten.onnx", "weights/", "weights/more/", "weights/more/part3.bin", "weights/part2.bin"], Listing(dir["out"]));
        foreach (var loc in new[] { "m.onnx.data", "weights/part2.bin", "weights/more/part3.bin" })
            Assert.True(File.ReadAllBytes(Path.Combine(dir["in"], loc)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir["out"], loc))), loc);
        var locations = ModelWriter.ExternalTensors(OnnxModelFile.Load(output)).Select(t => ExternalData.Entry(t, "location")).Distinct().Order(StringComparer.Ordinal);
        Assert.Equal(["m.onnx.data", "weights/more/part3.bin", "weights/part2.bin"], locations);

        using var a = ModelRunner.Open(input);
        using var b = ModelRunner.Open(output);
        long[] ids = [5, 1, 4, 1, 5, 9, 2];
        var ra = ModelRunner.DecoderStep(a, ids, 2, 2, 32, null);
        var rb = ModelRunner.DecoderStep(b, ids, 2, 2, 32, null);
        Assert.True(ModelRunner.MaxAbsDiff(ra["logits"].Data, rb["logits"].Data) <= 1e-4f);
        Assert.Contains(ra["logits"].Data, x => x != 0f);
    }

    [Fact]
    public void SeveralDataFiles_InTheSameFolder_AreSharedUntouched()
    {
        using var dir = new TempDir();
        var input = SaveSplit(dir["m.onnx"], "m.onnx.data", "weights/part2.bin");
        var before = Listing(dir.Path).ToDictionary(f => f, f => f.EndsWith('/') ? [] : File.ReadAllBytes(dir[f]));
        var (code, stdout, err) = CliProcess.Run("rewrite", input, "-o", dir["r.onnx"]);
        Assert.True(code == 0, stdout + err);
        Assert.Equal(before.Keys.Append("r.onnx").Order(StringComparer.Ordinal), Listing(dir.Path));
        foreach (var (f, bytes) in before) Assert.Equal(bytes, f.EndsWith('/') ? [] : File.ReadAllBytes(dir[f]));
        using var b = ModelRunner.Open(dir["r.onnx"]);
        Assert.NotEmpty(ModelRunner.DecoderStep(b, [1, 2, 3], 2, 2, 32, null)["logits"].Data);
    }

    [Fact]
    public void SeveralDataFiles_ConflictOnALaterFile_LeavesNothingBehind()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir["in"]);
        // weights/part2.bin is copied first (a new folder), then m.onnx.data meets a different file.
        var input = SaveSplit(Path.Combine(dir["in"], "m.onnx"), "weights/part2.bin", "m.onnx.data", "weights/more/part3.bin");
        Directory.CreateDirectory(dir["out"]);
        File.WriteAllText(Path.Combine(dir["out"], "m.onnx.data"), "someone else's weights");

        var (code, _, err) = CliProcess.Run("rewrite", input, "-o", Path.Combine(dir["out"], "rewritten.onnx"));
        Assert.Equal(2, code);
        Assert.Contains("--force", err);
        Assert.Equal(["m.onnx.data"], Listing(dir["out"]));
        Assert.Equal("someone else's weights", File.ReadAllText(Path.Combine(dir["out"], "m.onnx.data")));
    }
}
