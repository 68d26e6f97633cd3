using ScottPlot;
using SkiaSharp;

namespace InfLlmV2.Onnx.Cli.Pictures;

/// <summary>Why a key block was (or was not) attended by a query, as a selection map colours it.</summary>
public enum BlockUse
{
    /// <summary>After the query's own block: causal attention never looks there.</summary>
    Future = 0,

    /// <summary>A past block sparse mode skipped.</summary>
    NotAttended = 1,

    /// <summary>One of the <c>init_blocks</c> leading blocks, always attended.</summary>
    Init = 2,

    /// <summary>A block of the local window (the query's own block and the <c>window_size / block_size</c> before it).</summary>
    Local = 3,

    /// <summary>A block chosen by its stage-1 score (top-k).</summary>
    TopK = 4,

    /// <summary>A step that ran dense: every block up to the query's own is attended.</summary>
    Dense = 5,
}

/// <summary>The sparse attributes that decide a block's <see cref="BlockUse"/> (docs/op-spec.md, "Sparse mode").</summary>
/// <param name="BlockSize"><c>block_size</c>: tokens per key block.</param>
/// <param name="InitBlocks"><c>init_blocks</c>.</param>
/// <param name="LocalBlocks"><c>window_size / block_size</c>: local blocks before the query's own.</param>
public sealed record SelectionGeometry(int BlockSize, int InitBlocks, int LocalBlocks);

/// <summary>One query row of a layer's selection: its absolute position and the blocks selected for it.</summary>
/// <param name="Position">Absolute token position p of the query.</param>
/// <param name="Decode">Whether the row is a decode step (else a prefill row).</param>
/// <param name="Blocks">The row of <c>selected_blocks</c> (−1-padded); all −1 or empty when the step ran dense.</param>
public sealed record SelectionRow(int Position, bool Decode, int[] Blocks);

/// <summary>The rows of one layer's selection for one kv head, in position order.</summary>
/// <param name="Layer">Layer index.</param>
/// <param name="Rows">Query rows.</param>
public sealed record SelectionPanel(int Layer, IReadOnlyList<SelectionRow> Rows);

/// <summary>
/// A selection map: query position (prefill rows, then decode steps) × key block, one panel per
/// layer for one kv head, each cell coloured by why the block was attended (<see cref="BlockUse"/>),
/// with a legend, an optional marked block (the demo's needle) and a line where decoding starts.
/// </summary>
public static class SelectionMap
{
    /// <summary>The colour of each <see cref="BlockUse"/> (distinct for colour-blind readers too: purple, blue, orange, two greys, green).</summary>
    public static IReadOnlyDictionary<BlockUse, SKColor> Colors { get; } = new Dictionary<BlockUse, SKColor>
    {
        [BlockUse.Future] = new SKColor(0xFF, 0xFF, 0xFF),
        [BlockUse.NotAttended] = new SKColor(0xD9, 0xD9, 0xD9),
        [BlockUse.Init] = new SKColor(0x6A, 0x3D, 0x9A),
        [BlockUse.Local] = new SKColor(0x1F, 0x78, 0xB4),
        [BlockUse.TopK] = new SKColor(0xFF, 0x7F, 0x00),
        [BlockUse.Dense] = new SKColor(0x8F, 0xD1, 0x75),
    };

    /// <summary>What the legend says of each <see cref="BlockUse"/>.</summary>
    public static string Describe(BlockUse use) => use switch
    {
        BlockUse.Init => "init block",
        BlockUse.Local => "local window",
        BlockUse.TopK => "top-k (scored)",
        BlockUse.NotAttended => "not attended",
        BlockUse.Dense => "dense step (all past)",
        _ => "after the query (causal)",
    };

    /// <summary>Why block <paramref name="block"/> was attended by the query at <paramref name="position"/> given its selection row.</summary>
    public static BlockUse Classify(int position, int block, int[] selected, SelectionGeometry g)
    {
        int qb = position / g.BlockSize;
        if (block > qb) return BlockUse.Future;
        bool anyValid = false;
        bool chosen = false;
        foreach (var b in selected)
        {
            if (b < 0) continue;
            anyValid = true;
            if (b == block) chosen = true;
        }
        if (!anyValid) return BlockUse.Dense;
        if (!chosen) return BlockUse.NotAttended;
        if (block < g.InitBlocks) return BlockUse.Init;
        if (block >= qb - g.LocalBlocks) return BlockUse.Local;
        return BlockUse.TopK;
    }

    /// <summary>Panel size in pixels (each layer; a single panel is wider, <see cref="MinWidth"/>).</summary>
    public const int PanelWidth = 460, PanelHeight = 420;

    /// <summary>Height of the strip above the panels with the title and the legend.</summary>
    public const int HeaderHeight = 90;

    /// <summary>Panels per row of the picture.</summary>
    public const int Columns = 4;

    /// <summary>Narrowest picture: the title and the legend need this much.</summary>
    public const int MinWidth = 920;

    /// <summary>The picture's size for <paramref name="panels"/> panels.</summary>
    public static (int Width, int Height) SizeFor(int panels)
    {
        int cols = Math.Clamp(panels, 1, Columns);
        int rows = (Math.Max(panels, 1) + cols - 1) / cols;
        return (cols * PanelWidthFor(panels), HeaderHeight + rows * PanelHeight);
    }

    private static int PanelWidthFor(int panels) => Math.Max(PanelWidth, MinWidth / Math.Clamp(panels, 1, Columns));

    /// <summary>
    /// Writes the map of <paramref name="panels"/> to <paramref name="path"/> (.png or .svg), atomically.
    /// <paramref name="markedBlock"/> outlines one key block column (labelled <paramref name="markedLabel"/>).
    /// Returns the plots of the panels, laid out as drawn (for tests: <see cref="Plot.GetPixel(Coordinates)"/>).
    /// </summary>
    public static IReadOnlyList<Plot> Write(string path, IReadOnlyList<SelectionPanel> panels, SelectionGeometry geometry, string title,
        int? markedBlock = null, string markedLabel = "marked block")
    {
        PictureFonts.Ensure();  // before any Plot exists: a plot takes the default font when it is created
        if (panels.Count == 0) throw new ArgumentException("a selection map needs at least one layer");
        var (width, height) = SizeFor(panels.Count);
        var used = new HashSet<BlockUse>();
        var plots = panels.Select(p => Panel(p, geometry, markedBlock, used)).ToList();
        var header = Header(title, used, markedBlock is null ? null : markedLabel, panels.Any(p => p.Rows.Any(r => r.Decode) && p.Rows.Any(r => !r.Decode)));
        PictureFile.Write(path, width, height, canvas =>
        {
            PictureFile.RenderInto(canvas, header, new PixelRect(0, width, HeaderHeight, 0));
            int cols = Math.Clamp(panels.Count, 1, Columns);
            for (int i = 0; i < plots.Count; i++)
            {
                int panelWidth = PanelWidthFor(panels.Count);
                float left = i % cols * panelWidth, top = HeaderHeight + i / cols * PanelHeight;
                PictureFile.RenderInto(canvas, plots[i], new PixelRect(left, left + panelWidth, top + PanelHeight, top));
            }
        });
        return plots;
    }

    private static Plot Panel(SelectionPanel panel, SelectionGeometry g, int? markedBlock, HashSet<BlockUse> used)
    {
        var rows = panel.Rows.OrderBy(r => r.Position).ToList();
        if (rows.Count == 0) throw new ArgumentException($"layer {panel.Layer}: no query rows");
        int first = rows[0].Position, last = rows[^1].Position;
        int span = last - first + 1;
        int blocks = last / g.BlockSize + 1;
        if (markedBlock is int mb) blocks = Math.Max(blocks, mb + 1);
        // Row 0 of a heatmap is drawn at the top: the last position goes there, so positions grow upwards.
        var cells = new double[span, blocks];
        for (int r = 0; r < span; r++)
            for (int b = 0; b < blocks; b++) cells[r, b] = double.NaN;  // a position without a row (not run) stays blank
        foreach (var row in rows)
            for (int b = 0; b < blocks; b++)
            {
                var use = Classify(row.Position, b, row.Blocks, g);
                used.Add(use);
                cells[last - row.Position, b] = (int)use;
            }
        var plot = new Plot();
        var map = plot.Add.Heatmap(Enlarged(cells));
        map.Colormap = new CategoryColormap();
        map.ManualRange = new ScottPlot.Range(0, CategoryColormap.Count - 1);
        map.NaNCellColor = ScottPlot.Colors.White;
        map.Rectangle = new CoordinateRect(0, blocks, first, last + 1);  // the cells' edges: block b spans [b, b + 1)
        int decodeFrom = rows.FirstOrDefault(r => r.Decode)?.Position ?? -1;
        if (decodeFrom > first)
        {
            plot.Add.HorizontalLine(decodeFrom, 1.5f, ScottPlot.Colors.Black, LinePattern.Dashed);
        }
        if (markedBlock is int m)
        {
            var box = plot.Add.Rectangle(m, m + 1, first, last + 1);
            box.FillColor = ScottPlot.Colors.Transparent;
            box.LineColor = ScottPlot.Colors.Red;
            box.LineWidth = 2;
        }
        plot.Title($"layer {panel.Layer}");
        plot.XLabel($"key block ({g.BlockSize} tokens each)");
        plot.YLabel("query position (token)");
        plot.Axes.SetLimits(0, blocks, first, last + 1);
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };  // blocks are whole
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };  // so are positions
        plot.Grid.IsVisible = false;
        return plot;
    }

    // Each cell repeated to about 400 pixels a side (at most): SVG viewers scale an embedded bitmap
    // smoothly, which would blur a few large cells into gradients; PNG is drawn without smoothing anyway.
    private static double[,] Enlarged(double[,] cells)
    {
        int rows = cells.GetLength(0), cols = cells.GetLength(1);
        int fy = Math.Max(1, 400 / rows), fx = Math.Max(1, 400 / cols);
        if (fx == 1 && fy == 1) return cells;
        var big = new double[rows * fy, cols * fx];
        for (int r = 0; r < rows * fy; r++)
            for (int c = 0; c < cols * fx; c++) big[r, c] = cells[r / fy, c / fx];
        return big;
    }

    private static Plot Header(string title, HashSet<BlockUse> used, string? markedLabel, bool decodeLine)
    {
        var plot = new Plot();
        plot.Layout.Frameless();
        plot.Axes.Frameless();
        plot.Grid.IsVisible = false;
        plot.Title(title);
        var items = new List<LegendItem>();
        // The categories that occur (the legend names nothing the picture does not show).
        foreach (var use in new[] { BlockUse.Init, BlockUse.Local, BlockUse.TopK, BlockUse.NotAttended, BlockUse.Dense, BlockUse.Future }.Where(used.Contains))
            items.Add(new LegendItem { LabelText = Describe(use), FillColor = ToColor(Colors[use]), OutlineColor = ScottPlot.Colors.Gray, OutlineWidth = 1 });
        if (markedLabel is not null)
            items.Add(new LegendItem { LabelText = markedLabel, FillColor = ScottPlot.Colors.Transparent, OutlineColor = ScottPlot.Colors.Red, OutlineWidth = 2 });
        if (decodeLine)
            items.Add(new LegendItem { LabelText = "decode steps above", LineColor = ScottPlot.Colors.Black, LineWidth = 1.5f, LinePattern = LinePattern.Dashed });
        plot.ShowLegend(items, Alignment.LowerCenter);
        plot.Legend.Orientation = Orientation.Horizontal;
        plot.Legend.OutlineColor = ScottPlot.Colors.Transparent;
        plot.Legend.ShadowColor = ScottPlot.Colors.Transparent;
        return plot;
    }

    internal static ScottPlot.Color ToColor(SKColor c) => new(c.Red, c.Green, c.Blue, c.Alpha);

    // Category k of BlockUse as the colour of intensity k (ManualRange 0..Count-1 makes it k / (Count - 1)).
    private sealed class CategoryColormap : IColormap
    {
        public static int Count => Enum.GetValues<BlockUse>().Length;

        public string Name => "block use";

        public ScottPlot.Color GetColor(double normalizedIntensity)
        {
            if (double.IsNaN(normalizedIntensity)) return ScottPlot.Colors.White;
            int k = (int)Math.Round(Math.Clamp(normalizedIntensity, 0, 1) * (Count - 1));
            return ToColor(Colors[(BlockUse)k]);
        }
    }
}
