using InfLlmV2.Onnx.Cli.Pictures;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.OpContract;
using InfLlmV2.Onnx.Session;
using SkiaSharp;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// <c>rewrite --expose-selection</c> (graph outputs <c>selected_blocks.N</c>), the session's
/// <see cref="DecoderSessionOptions.OnSelection"/>, and <c>generate</c>/<c>compare --selection-map</c>, <c>compare --plot</c>.
/// </summary>
public sealed class SelectionExposureTests : IDisposable
{
    private static readonly TinyDecoderConfig Config = DecoderModels.Config;
    private static readonly SparseAttentionSettings Sparse = new() { TopKBlocks = 2, SparseWindowTokens = 64, DenseLen = 256 };
    private readonly TempDir _dir = new();

    public SelectionExposureTests()
    {
        var model = TinyDecoderGenerator.Generate(Config);
        TinyDecoderGenerator.Save(model, _dir["original.onnx"], externalData: true);
        var exposed = model.Clone();
        AttentionRewriter.Rewrite(exposed, new RewriteOptions { Sparse = Sparse, AttentionModeInput = true, ExposeSelection = true });
        OnnxModelFile.Save(exposed, _dir["exposed.onnx"]);
        var plain = model.Clone();
        AttentionRewriter.Rewrite(plain, new RewriteOptions { Sparse = Sparse, AttentionModeInput = true });
        OnnxModelFile.Save(plain, _dir["plain.onnx"]);
    }

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void ExposeSelectionAddsOneInt32OutputPerLayerAndIsOffByDefault()
    {
        var exposed = OnnxModelFile.Load(_dir["exposed.onnx"]).Graph;
        for (int l = 0; l < Config.Layers; l++)
        {
            var output = Assert.Single(exposed.Output, o => o.Name == $"selected_blocks.{l}");
            Assert.Equal((int)TensorProto.Types.DataType.Int32, output.Type.TensorType.ElemType);
            var dims = output.Type.TensorType.Shape.Dim;
            Assert.Equal(4, dims.Count);
            Assert.Equal(Config.KvNumHeads, dims[1].DimValue);
            Assert.Equal(Sparse.BlockBudget, dims[3].DimValue);
            var node = exposed.Node.Where(SwitchableAttentionOp.Is).ElementAt(l);
            Assert.Equal($"selected_blocks.{l}", node.Output[SwitchableAttentionOp.Outputs.SelectedBlocks]);
        }
        Assert.DoesNotContain(OnnxModelFile.Load(_dir["plain.onnx"]).Graph.Output, o => o.Name.StartsWith("selected_blocks", StringComparison.Ordinal));
        using var plain = DecoderModel.Open(_dir["plain.onnx"]);
        Assert.Equal(0, plain.SelectionLayers);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void SessionReportsEachStepsSelectionPerLayer(bool shared)
    {
        using var model = DecoderModel.Open(_dir["exposed.onnx"]);
        Assert.Equal(Config.Layers, model.SelectionLayers);
        var steps = new List<StepSelection>();
        int prompt = 300;  // ≥ dense_len 256: sparse; 5 blocks of 64, budget 3
        using var session = new DecoderSession(model, new DecoderSessionOptions { Capacity = 320, ChunkSize = 128, SharedBuffers = shared, OnSelection = steps.Add });
        session.AppendTokens(Enumerable.Range(0, prompt).Select(i => i % Config.Vocab).ToArray());
        session.NextToken(5);
        Assert.Equal([0, 128, 256, 300], steps.Select(s => s.PastLengths[0]));  // three prefill chunks, one decode step
        var decode = steps[^1];
        Assert.Equal(AttentionMode.Sparse, decode.Modes[0]);
        for (int l = 0; l < Config.Layers; l++)
            for (int h = 0; h < Config.KvNumHeads; h++)
            {
                // p = 300, qb = 4: init block 0, local blocks 3..4 (window 64 = 1 block + own), budget 3.
                var row = decode.Row(l, 0, h, 0).ToArray();
                Assert.Equal([0, 3, 4], row);
            }
        // The first chunk ran dense (total 128 < dense_len): all −1.
        Assert.All(steps[0].Layers, layer => Assert.All(layer, b => Assert.Equal(-1, b)));
    }

    [Fact]
    public void GenerateAndCompareDrawTheirPictures()
    {
        var ids = string.Join(",", Enumerable.Range(0, 300).Select(i => i % Config.Vocab));
        var (code, _, err) = CliProcess.Run("generate", _dir["exposed.onnx"], "--prompt-ids", ids, "--max-new-tokens", "4", "--selection-map", _dir["gen.png"]);
        Assert.True(code == 0, err);
        Assert.Contains($"selection map: {_dir["gen.png"]}", err);
        AssertPng(_dir["gen.png"], SelectionMap.SizeFor(Config.Layers));

        (code, var stdout, err) = CliProcess.Run("compare", _dir["original.onnx"], _dir["exposed.onnx"], "--prompt-len", "300", "--decode-steps", "3",
            "--selection-map", _dir["cmp.svg"], "--kv-head", "1", "--plot", _dir["drift.png"]);
        Assert.True(code == 0, stdout + err);
        Assert.StartsWith("<?xml", File.ReadAllText(_dir["cmp.svg"]));
        AssertPng(_dir["drift.png"], (DriftChart.Width, DriftChart.Height));
    }

    [Fact]
    public void SelectionMapErrorsAreOneLine()
    {
        var cases = new (string[] Args, string Message)[]
        {
            (["generate", _dir["plain.onnx"], "--prompt-ids", "1,2", "--selection-map", _dir["m.png"]], "exposes no selection"),
            (["generate", _dir["exposed.onnx"], "--prompt-ids", "1,2", "--selection-map", _dir["m.gif"]], "unknown picture format '.gif'; use .png or .svg"),
            (["generate", _dir["exposed.onnx"], "--prompt-ids", "1,2", "--kv-head", "1"], "--kv-head applies with --selection-map only"),
            (["generate", _dir["exposed.onnx"], "--prompt-ids", "1,2", "--selection-map", _dir["m.png"], "--kv-head", "7"], "--kv-head 7"),
            (["compare", _dir["original.onnx"], _dir["exposed.onnx"], "--plot", _dir["exposed.onnx"]], "unknown picture format '.onnx'"),
            (["compare", _dir["original.onnx"], _dir["exposed.onnx"], "--plot", _dir["a.png"], "--selection-map", _dir["a.png"]], "name the same file"),
        };
        foreach (var (args, message) in cases)
        {
            var (code, _, err) = CliProcess.Run(args);
            Assert.True(code == 2, $"{string.Join(" ", args)}: exit {code}\n{err}");
            Assert.Contains(message, err);
            Assert.Single(err.TrimEnd().Split('\n'));
        }
        Assert.False(File.Exists(_dir["m.png"]));
    }

    [Fact]
    public void DemoWritesTheNeedleSelectionMapAndPrintsItsPath()
    {
        var (code, stdout, err) = CliProcess.Run("demo", "--output-dir", _dir["demo"], "--long-prompt", "64");
        Assert.True(code == 0, stdout + err);
        var map = Path.Combine(_dir["demo"], "needle-selection.png");
        Assert.Contains($"selection map of the 16k needle case (last 1024 queries): {map}", stdout);
        AssertPng(map, SelectionMap.SizeFor(1));
        // The needle's column (block 96, 3/8 into the 16k context) is attended by every drawn query: top-k orange under the red outline.
        using var bitmap = SKBitmap.Decode(map);
        Assert.Contains(Enumerable.Range(0, bitmap.Width).Select(x => bitmap.GetPixel(x, bitmap.Height / 2)), c => c == SelectionMap.Colors[BlockUse.TopK]);
    }

    private static void AssertPng(string path, (int Width, int Height) size)
    {
        using var codec = SKCodec.Create(path);
        Assert.NotNull(codec);
        Assert.Equal(SKEncodedImageFormat.Png, codec.EncodedFormat);
        Assert.Equal(size, (codec.Info.Width, codec.Info.Height));
    }
}
