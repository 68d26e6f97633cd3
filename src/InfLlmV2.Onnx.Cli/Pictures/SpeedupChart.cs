using ScottPlot;

namespace InfLlmV2.Onnx.Cli.Pictures;

/// <summary>One line of a speed-up chart: a shape and mode measured at several context lengths.</summary>
/// <param name="Label">Legend text, e.g. "decode fp32, Hkv=1, sparse".</param>
/// <param name="Points">(context length in tokens, speed-up over ORT GroupQueryAttention = GQA time / ours).</param>
/// <param name="IsBound">Whether the line is a bound (drawn dashed, no markers) rather than a measurement.</param>
public sealed record SpeedupSeries(string Label, IReadOnlyList<(int Context, double Speedup)> Points, bool IsBound = false);

/// <summary>
/// <c>bench --plot</c>: speed-up over ORT GroupQueryAttention against context length, log-log (x in
/// powers of two), one line per shape and mode, the roofline bound dashed, parity (1×) marked.
/// </summary>
public static class SpeedupChart
{
    /// <summary>The picture's size in pixels.</summary>
    public const int Width = 900, Height = 600;

    /// <summary>Writes the chart to <paramref name="path"/> (.png or .svg), atomically; returns the plot as drawn.</summary>
    public static Plot Write(string path, IReadOnlyList<SpeedupSeries> series, string title)
    {
        PictureFonts.Ensure();  // before any Plot exists: a plot takes the default font when it is created
        var usable = series.Select(s => s with { Points = s.Points.Where(p => p.Context > 0 && double.IsFinite(p.Speedup) && p.Speedup > 0).ToList() })
            .Where(s => s.Points.Count > 0).ToList();
        if (usable.Count == 0) throw new ArgumentException("a speed-up chart needs at least one measured point");
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        int i = 0;
        foreach (var s in usable)
        {
            double[] xs = s.Points.Select(p => Math.Log2(p.Context)).ToArray();
            double[] ys = s.Points.Select(p => Math.Log10(p.Speedup)).ToArray();
            var line = plot.Add.Scatter(xs, ys);
            line.LegendText = s.Label;
            if (s.IsBound)
            {
                line.Color = ScottPlot.Colors.Black;
                line.LinePattern = LinePattern.Dashed;
                line.LineWidth = 1.5f;
                line.MarkerSize = 0;
            }
            else
            {
                line.Color = palette.GetColor(i++);
                line.LineWidth = 2;
                line.MarkerSize = 8;
            }
        }
        var parity = plot.Add.HorizontalLine(0, 1, ScottPlot.Colors.Gray, LinePattern.Dotted);
        parity.LegendText = "parity with GQA (1x)";
        var contexts = usable.SelectMany(s => s.Points.Select(p => p.Context)).ToList();
        var speedups = usable.SelectMany(s => s.Points.Select(p => p.Speedup)).Append(1.0).ToList();
        plot.Axes.Bottom.TickGenerator = LogAxis.Ticks(contexts.Min(), contexts.Max(), 2, LogAxis.Tokens);
        plot.Axes.Left.TickGenerator = LogAxis.Ticks(speedups.Min(), speedups.Max(), 10, v => LogAxis.Power10(v) + "x");
        double xPad = 0.3;
        plot.Axes.SetLimitsX(Math.Log2(contexts.Min()) - xPad, Math.Log2(contexts.Max()) + xPad);
        plot.Axes.SetLimitsY(Math.Floor(Math.Log10(speedups.Min())), Math.Ceiling(Math.Log10(speedups.Max()) + 0.05));
        plot.Title(title);
        plot.XLabel("context length (tokens, log scale)");
        plot.YLabel("speed-up over ORT GQA (GQA time / ours, log)");
        plot.ShowLegend(Alignment.UpperLeft);
        PictureFile.Write(path, Width, Height, canvas => PictureFile.RenderInto(canvas, plot, new PixelRect(0, Width, Height, 0)));
        return plot;
    }
}
