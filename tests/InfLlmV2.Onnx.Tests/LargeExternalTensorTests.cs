using System.Globalization;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// Tensors larger than 2 GB live in external data (a protobuf message cannot hold them): the
/// rewriter checks their range against the data file and leaves them where they are, never reading them.
/// </summary>
public class LargeExternalTensorTests
{
    // An untied lm_head of Gemma-3-4B: [2560, 262208] fp32 = 2.68 GB.
    private static readonly long[] BigDims = [2560, 262208];

    /// <summary>
    /// The tiny decoder plus a [2560, 262208] fp32 initializer in a sparse data file (its length set,
    /// nothing written), read by a Gather whose result is a graph output.
    /// </summary>
    private static (string Model, string Data, long Bytes) SaveWithBigTensor(TempDir dir, long offset = 4096)
    {
        var model = TinyDecoderGenerator.Generate(new TinyDecoderConfig { Seed = 5 });
        long bytes = BigDims[0] * BigDims[1] * 4;
        Assert.True(bytes > int.MaxValue);
        var data = dir["big.data"];
        using (var f = new FileStream(data, FileMode.CreateNew, FileAccess.Write)) f.SetLength(offset + bytes);  // sparse: no block written
        var big = new TensorProto { Name = "lm_head.big_weight", DataType = (int)TensorProto.Types.DataType.Float, DataLocation = TensorProto.Types.DataLocation.External };
        big.Dims.AddRange(BigDims);
        big.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "big.data" });
        big.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(CultureInfo.InvariantCulture) });
        big.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = bytes.ToString(CultureInfo.InvariantCulture) });
        model.Graph.Initializer.Add(big);
        model.Graph.Initializer.Add(TensorProtos.Int64("big_row_index", [1], [7]));
        model.Graph.Node.Add(Node("Gather", "", ["lm_head.big_weight", "big_row_index"], ["big_row"], [Attr("axis", 0L)], "BigGather"));
        model.Graph.Output.Add(Tensor("big_row", TensorProto.Types.DataType.Float, 1, BigDims[1]));
        var path = dir["model.onnx"];
        OnnxModelFile.Save(model, path);
        return (path, data, bytes);
    }

    [Fact]
    public void TensorOver2GB_InExternalData_IsRewrittenAround_KeptExternal_AndNeverRead()
    {
        using var dir = new TempDir();
        var (input, data, bytes) = SaveWithBigTensor(dir);
        var before = File.GetLastWriteTimeUtc(data);

        var report = ModelRewriter.RewriteFile(input, dir["model.rewritten.onnx"]);

        Assert.Equal(2, report.RewrittenCount);
        var written = OnnxModelFile.Load(dir["model.rewritten.onnx"]);
        var big = Assert.Single(written.Graph.Initializer, t => t.Name == "lm_head.big_weight");
        Assert.Equal(TensorProto.Types.DataLocation.External, big.DataLocation);
        Assert.Equal(BigDims, big.Dims);
        Assert.Equal(bytes.ToString(CultureInfo.InvariantCulture), ExternalData.Entry(big, "length"));
        Assert.Equal("4096", ExternalData.Entry(big, "offset"));
        Assert.Equal("big.data", ExternalData.Entry(big, "location"));
        Assert.Contains(written.Graph.Node, n => n.OpType == "Gather" && n.Input[0] == "lm_head.big_weight");
        // Same folder: the data file is shared as it is, not rewritten or copied.
        Assert.Equal(4096 + bytes, new FileInfo(data).Length);
        Assert.Equal(before, File.GetLastWriteTimeUtc(data));
        Assert.Equal(["big.data", "model.onnx", "model.rewritten.onnx"], Directory.GetFiles(dir.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Cli_RewriteAndInspect_TensorOver2GB()
    {
        using var dir = new TempDir();
        var (input, data, bytes) = SaveWithBigTensor(dir);
        var inspect = CliProcess.Run("inspect", input);
        Assert.True(inspect.ExitCode == 0, inspect.StdOut + inspect.StdErr);
        var rewrite = CliProcess.Run("rewrite", input, "-o", dir["out.onnx"]);
        Assert.True(rewrite.ExitCode == 0, rewrite.StdOut + rewrite.StdErr);
        Assert.Equal(4096 + bytes, new FileInfo(data).Length);
        Assert.Equal(TensorProto.Types.DataLocation.External, OnnxModelFile.Load(dir["out.onnx"]).Graph.Initializer.Single(t => t.Name == "lm_head.big_weight").DataLocation);
    }

    [Fact]
    public void TensorOver2GB_RangePastTheFile_IsStillRefused()
    {
        using var dir = new TempDir();
        var (input, data, bytes) = SaveWithBigTensor(dir);
        using (var f = new FileStream(data, FileMode.Open, FileAccess.Write)) f.SetLength(4096 + bytes - 1);
        var e = Assert.Throws<InvalidDataException>(() => ModelRewriter.RewriteFile(input, dir["out.onnx"]));
        Assert.Contains("is outside 'big.data'", e.Message);
        Assert.False(File.Exists(dir["out.onnx"]));
    }

    [Fact]
    public void TensorOver2GB_ReadIntoMemory_IsRefusedWithItsSize()
    {
        using var dir = new TempDir();
        var (input, _, bytes) = SaveWithBigTensor(dir);
        var big = OnnxModelFile.Load(input).Graph.Initializer.Single(t => t.Name == "lm_head.big_weight");
        var e = Assert.Throws<InvalidDataException>(() => TensorProtos.GetBytes(big, dir.Path));
        Assert.Contains($"is {bytes} bytes, more than {TensorProtos.MaxTensorBytes} can be read into memory", e.Message);
    }
}
