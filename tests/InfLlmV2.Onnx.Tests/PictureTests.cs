using InfLlmV2.Onnx.Cli;
using InfLlmV2.Onnx.Cli.Pictures;
using SkiaSharp;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// The pictures (src/InfLlmV2.Onnx.Cli/Pictures): they decode as PNG of the stated size, SVG is SVG,
/// a crafted selection puts each category's colour in the expected cells (pixels read back), and the
/// file rules hold (unknown extension, inputs, non-pictures never overwritten).
/// </summary>
public sealed class PictureTests
{
    // Blocks of 4 tokens, 1 init block, 2 local blocks before the query's own.
    private static readonly SelectionGeometry Geometry = new(BlockSize: 4, InitBlocks: 1, LocalBlocks: 2);

    // Positions 0..39 (blocks 0..9): prefill rows 0..35 run sparse with a known selection, decode rows 36..39;
    // position 20 ran dense (all −1).
    private static SelectionPanel CraftedPanel(int layer)
    {
        var rows = new List<SelectionRow>();
        for (int p = 0; p < 40; p++)
        {
            int qb = p / 4;
            var chosen = new SortedSet<int> { 0 };
            for (int b = Math.Max(0, qb - 2); b <= qb; b++) chosen.Add(b);
            if (qb >= 5) chosen.Add(qb >= 8 ? 4 : 1);  // one scored block
            int[] row = p == 20 ? [-1, -1, -1, -1, -1, -1] : [.. chosen, .. Enumerable.Repeat(-1, 6 - chosen.Count)];
            rows.Add(new SelectionRow(p, p >= 36, row));
        }
        return new SelectionPanel(layer, rows);
    }

    private static SKColor PixelAt(SKBitmap bitmap, ScottPlot.Plot plot, double x, double y)
    {
        var px = plot.GetPixel(new ScottPlot.Coordinates(x, y));
        return bitmap.GetPixel((int)Math.Round(px.X), (int)Math.Round(px.Y));
    }

    [Fact]
    public void SelectionMapColoursEachCellByWhyItWasAttended()
    {
        using var dir = new TempDir();
        var path = dir["map.png"];
        var plots = SelectionMap.Write(path, [CraftedPanel(0), CraftedPanel(1)], Geometry, "crafted", markedBlock: null);
        using var bitmap = SKBitmap.Decode(path);
        Assert.NotNull(bitmap);
        var (w, h) = SelectionMap.SizeFor(2);
        Assert.Equal((w, h), (bitmap.Width, bitmap.Height));
        foreach (var plot in plots)
        {
            // (block, position) -> expected use
            var expected = new (int Block, int Position, BlockUse Use)[]
            {
                (0, 39, BlockUse.Init), (4, 39, BlockUse.TopK), (7, 39, BlockUse.Local), (9, 39, BlockUse.Local),
                (5, 39, BlockUse.NotAttended), (1, 39, BlockUse.NotAttended),
                (1, 25, BlockUse.TopK), (2, 25, BlockUse.NotAttended), (5, 25, BlockUse.Local), (6, 25, BlockUse.Local),
                (7, 25, BlockUse.Future), (9, 10, BlockUse.Future), (0, 2, BlockUse.Init),
                (3, 20, BlockUse.Dense), (6, 20, BlockUse.Future),
            };
            foreach (var (block, position, use) in expected)
                Assert.True(PixelAt(bitmap, plot, block + 0.5, position + 0.5) == SelectionMap.Colors[use],
                    $"block {block} at position {position}: expected {use} {SelectionMap.Colors[use]}, got {PixelAt(bitmap, plot, block + 0.5, position + 0.5)}");
        }
    }

    [Fact]
    public void ClassifyFollowsTheOpSpec()
    {
        // docs/op-spec.md worked example: p = 6400 (qb 100), defaults (block 64, 1 init, 32 local).
        var g = new SelectionGeometry(64, 1, 32);
        int[] row = [0, 5, 68, 100];
        Assert.Equal(BlockUse.Init, SelectionMap.Classify(6400, 0, row, g));
        Assert.Equal(BlockUse.TopK, SelectionMap.Classify(6400, 5, row, g));
        Assert.Equal(BlockUse.Local, SelectionMap.Classify(6400, 68, row, g));
        Assert.Equal(BlockUse.NotAttended, SelectionMap.Classify(6400, 6, row, g));
        Assert.Equal(BlockUse.Future, SelectionMap.Classify(6400, 101, row, g));
        Assert.Equal(BlockUse.Dense, SelectionMap.Classify(6400, 50, [-1, -1], g));
    }

    [Fact]
    public void ChartsDecodeAsPngOfTheirSizeAndSvgIsSvg()
    {
        using var dir = new TempDir();
        SpeedupChart.Write(dir["speed.png"],
        [
            new SpeedupSeries("decode fp32, sparse", [(8192, 12.0), (32768, 47.0), (131072, 110.0)]),
            new SpeedupSeries("prefill fp32, sparse", [(4096, 1.2), (16384, 2.4)]),
            new SpeedupSeries("decode roofline bound", [(8192, 30.0), (32768, 90.0), (131072, 300.0)], IsBound: true),
        ], "speed-up");
        DriftChart.Write(dir["drift.png"],
        [
            new DriftPoint(0, false, true, 0.02, 1e-5), new DriftPoint(1, true, true, 0.03, 2e-5), new DriftPoint(2, true, false, 0, 0),
        ], "drift");
        SelectionMap.Write(dir["map.svg"], [CraftedPanel(0)], Geometry, "crafted", markedBlock: 3, markedLabel: "needle");
        foreach (var (name, w, h) in new[] { ("speed.png", SpeedupChart.Width, SpeedupChart.Height), ("drift.png", DriftChart.Width, DriftChart.Height) })
        {
            using var codec = SKCodec.Create(dir[name]);
            Assert.NotNull(codec);
            Assert.Equal(SKEncodedImageFormat.Png, codec.EncodedFormat);
            Assert.Equal((w, h), (codec.Info.Width, codec.Info.Height));
        }
        var svg = File.ReadAllText(dir["map.svg"]);
        Assert.Contains("<svg", svg);
        Assert.EndsWith("</svg>", svg.TrimEnd());
        Assert.Empty(Directory.GetFiles(dir.Path, ".*.tmp"));  // written atomically: no temporary left
    }

    [Fact]
    public void PictureFileRulesAreOneLineUsageErrors()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<UsageException>(() => PictureFile.Check(new FileInfo(dir["map.jpg"]), "--plot"));
        Assert.Contains("unknown picture format '.jpg'; use .png or .svg", e.Message);
        File.WriteAllText(dir["model.onnx.png"], "not a picture");
        e = Assert.Throws<UsageException>(() => PictureFile.Check(new FileInfo(dir["model.onnx.png"]), "--plot"));
        Assert.Contains("is not a PNG picture; refusing to overwrite it", e.Message);
        File.WriteAllBytes(dir["in.png"], [0x89, (byte)'P', (byte)'N', (byte)'G', 13, 10, 26, 10]);
        e = Assert.Throws<UsageException>(() => PictureFile.Check(new FileInfo(dir["in.png"]), "--plot", dir["in.png"]));
        Assert.Contains("is an input of this command", e.Message);
        e = Assert.Throws<UsageException>(() => PictureFile.Check(new FileInfo(dir["missing/x.png"]), "--plot"));
        Assert.Contains("does not exist", e.Message);
        Assert.Equal(PictureFormat.Svg, PictureFile.Check(new FileInfo(dir["new.SVG"]), "--plot"));
        // Never written through a link or into a device.
        File.CreateSymbolicLink(dir["link.png"], dir["in.png"]);
        e = Assert.Throws<UsageException>(() => PictureFile.Check(new FileInfo(dir["link.png"]), "--plot"));
        Assert.Contains("pictures are written only to regular files", e.Message);
        e = Assert.Throws<UsageException>(() => PictureFile.Check(new FileInfo("/dev/null"), "--plot"));
        Assert.Contains("unknown picture format", e.Message);
        Directory.CreateDirectory(dir["folder.png"]);
        e = Assert.Throws<UsageException>(() => PictureFile.Check(new FileInfo(dir["folder.png"]), "--plot"));
        Assert.Contains("is a folder", e.Message);
    }
}

/// <summary><c>bench --plot</c>'s series from the bench's rows (the bench itself takes minutes; its rows are crafted here).</summary>
public sealed class BenchPlotTests
{
    [Fact]
    public void BenchRowsBecomeOneSeriesPerShapeAndModeWithTheRooflineBound()
    {
        using var dir = new TempDir();
        InfLlmV2.Onnx.Cli.Bench.BenchRow Row(string c, string op, double ms, double? ratio) => new(c, op, ms, ratio, 0, "");
        var rows = new[]
        {
            Row("decode 8k", "GQA", 10, 1), Row("decode 8k", "ours sparse", 1, 10), Row("decode 32k", "GQA", 40, 1), Row("decode 32k", "ours sparse", 1, 40),
            Row("prefill 4k", "ours sparse", 100, 1.5), Row("prefill 4k", "GQA", 150, 1), Row("prefill 16k", "GQA", double.NaN, null),
            Row("shape Llama-3-8B decode 32k", "GQA", 40, 1), Row("shape Llama-3-8B decode 32k", "ours sparse", 4, 10),
        };
        var roofline = new List<Dictionary<string, object?>>
        {
            new() { ["context"] = 8192, ["roofline_ms"] = 0.5, ["read_roofline_ms"] = 0.4 },
            new() { ["context"] = 32768, ["roofline_ms"] = 0.8, ["read_roofline_ms"] = 1.0 },
            // A model shape's entry, as the bench writes it: a read roofline only.
            new() { ["shape"] = "Llama-3-8B 32/8/128", ["context"] = 32768, ["read_roofline_ms"] = 2.0 },
        };
        InfLlmV2.Onnx.Cli.Pictures.BenchPlot.Write(dir["speedup.png"], rows, roofline, "crafted");
        using var codec = SKCodec.Create(dir["speedup.png"]);
        Assert.Equal((SpeedupChart.Width, SpeedupChart.Height), (codec.Info.Width, codec.Info.Height));
        var e = Assert.Throws<UsageException>(() => PictureFile.Check(new FileInfo(dir["speedup.pdf"]), "--plot"));
        Assert.Contains("unknown picture format '.pdf'", e.Message);
    }
}
