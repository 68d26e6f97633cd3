using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.OpContract;

namespace InfLlmV2.Onnx.Tests;

/// <summary>The GraphTools package's facade (ModelRewriter): in memory, bytes, and file to file.</summary>
public class ModelRewriterTests
{
    private static readonly TinyDecoderConfig Config = new() { Layers = 2, NumHeads = 4, KvNumHeads = 2, HeadSize = 16, Seed = 3 };

    [Fact]
    public void RewriteFile_ExternalData_WritesModelAndDataAndReportsEverySite()
    {
        using var dir = new TempDir();
        var input = dir["in/model.onnx"];
        Directory.CreateDirectory(dir["in"]);
        TinyDecoderGenerator.Save(TinyDecoderGenerator.Generate(Config), input, externalData: true);
        var output = dir["out/model.infllmv2.onnx"];

        var report = ModelRewriter.RewriteFile(input, output, new RewriteOptions { Sparse = new() { DenseLen = 4096 } });

        Assert.Equal(2, report.Sites.Count);
        Assert.Equal(2, report.RewrittenCount);
        Assert.True(report.AnyRewritten);
        Assert.All(report.Lines(), l => Assert.Contains("GroupQueryAttention rewritten", l));
        Assert.Contains(output, report.WrittenFiles);
        var data = ModelWriter.CheckExternalData(OnnxModelFile.Load(input), input);
        Assert.NotEmpty(data);
        foreach (var location in data)
            Assert.Equal(File.ReadAllBytes(Path.Combine(dir["in"], location)), File.ReadAllBytes(Path.Combine(dir["out"], location)));
        var rewritten = OnnxModelFile.Load(output);
        Assert.Equal(2, rewritten.Graph.Node.Count(SwitchableAttentionOp.Is));
        Assert.All(rewritten.Graph.Node.Where(SwitchableAttentionOp.Is), n => Assert.Equal(4096, n.Attribute.Single(a => a.Name == "dense_len").I));

        // An existing output needs overwrite; the input is never a valid output.
        Assert.Throws<IOException>(() => ModelRewriter.RewriteFile(input, output));
        Assert.Equal(2, ModelRewriter.RewriteFile(input, output, overwrite: true).RewrittenCount);
        Assert.Throws<IOException>(() => ModelRewriter.RewriteFile(input, input, overwrite: true));
    }

    [Fact]
    public void RewriteFile_NothingRewritable_WritesNothingAndSaysWhy()
    {
        using var dir = new TempDir();
        var model = AttentionNodeModels.Build(new AttentionNodeConfig { Kind = AttentionOpKind.GroupQueryAttention });
        var node = model.Graph.Node.Single();
        node.Attribute.Add(GraphBuilder.Attr("smooth_softmax", 1L));
        OnnxModelFile.Save(model, dir["gqa.onnx"]);

        var report = ModelRewriter.RewriteFile(dir["gqa.onnx"], dir["out.onnx"]);

        Assert.False(report.AnyRewritten);
        Assert.Empty(report.WrittenFiles);
        Assert.False(File.Exists(dir["out.onnx"]));
        Assert.Contains("smooth_softmax", Assert.Single(report.Sites).Reason);
    }

    [Fact]
    public void Rewrite_Bytes_EqualsFileRewrite_AndBadOptionsAreRefused()
    {
        using var dir = new TempDir();
        TinyDecoderGenerator.Save(TinyDecoderGenerator.Generate(Config), dir["m.onnx"], externalData: false);
        var (bytes, report) = ModelRewriter.Rewrite(File.ReadAllBytes(dir["m.onnx"]));
        Assert.Equal(2, report.RewrittenCount);
        ModelRewriter.RewriteFile(dir["m.onnx"], dir["r.onnx"]);
        Assert.Equal(File.ReadAllBytes(dir["r.onnx"]), bytes);

        Assert.Throws<InvalidDataException>(() => ModelRewriter.Rewrite([1, 2, 3]));
        var e = Assert.Throws<ArgumentException>(() => ModelRewriter.RewriteFile(dir["m.onnx"], dir["x.onnx"], new RewriteOptions { Sparse = new() { BlockSize = 0 } }));
        Assert.Contains("block_size", e.Message);
    }
}
