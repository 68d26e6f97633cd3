using ScottPlot;

namespace InfLlmV2.Onnx.Cli.Pictures;

/// <summary>One step of a drift chart (original vs rewritten model).</summary>
/// <param name="Step">0 = the prefill, then decode steps 1, 2, ...</param>
/// <param name="Decode">Whether the step is a decode step (else the prefill).</param>
/// <param name="Sparse">Whether the rewritten model ran the step sparse (else dense).</param>
/// <param name="MaxAbsDiff">max |Δlogits| of the step's last token.</param>
/// <param name="Kl">KL(original ‖ rewritten) of the step's last token, in nats.</param>
public sealed record DriftPoint(int Step, bool Decode, bool Sparse, double MaxAbsDiff, double Kl);

/// <summary>
/// <c>compare --plot</c>: max |Δlogits| and KL per step on a log y axis; sparse steps shaded, the
/// prefill/decode boundary marked, values below the floor (exact agreement included) drawn at it (and said so).
/// </summary>
public static class DriftChart
{
    /// <summary>The picture's size in pixels.</summary>
    public const int Width = 900, Height = 550;

    /// <summary>Smallest value drawn: exact agreement (0) is shown at this floor.</summary>
    public const double Floor = 1e-12;

    /// <summary>Writes the chart to <paramref name="path"/> (.png or .svg), atomically; returns the plot as drawn.</summary>
    public static Plot Write(string path, IReadOnlyList<DriftPoint> steps, string title)
    {
        PictureFonts.Ensure();  // before any Plot exists: a plot takes the default font when it is created
        if (steps.Count == 0) throw new ArgumentException("a drift chart needs at least one step");
        var plot = new Plot();
        double Y(double v) => Math.Log10(Math.Max(Floor, double.IsFinite(v) ? v : Floor));
        // Shading first (behind the lines): one span per run of sparse steps, one per run of dense steps.
        bool sparseShown = false, denseShown = false;
        foreach (var run in Runs(steps))
        {
            var span = plot.Add.HorizontalSpan(run.From - 0.5, run.To + 0.5);
            span.FillColor = (run.Sparse ? ScottPlot.Colors.Orange : ScottPlot.Colors.Green).WithAlpha(0.12);
            span.LineWidth = 0;
            if (run.Sparse && !sparseShown) { span.LegendText = "sparse steps (shaded orange)"; sparseShown = true; }
            if (!run.Sparse && !denseShown) { span.LegendText = "dense steps (shaded green)"; denseShown = true; }
        }
        double[] xs = steps.Select(s => (double)s.Step).ToArray();
        var diff = plot.Add.Scatter(xs, steps.Select(s => Y(s.MaxAbsDiff)).ToArray());
        diff.LegendText = "max |Δlogits|";
        diff.Color = ScottPlot.Colors.Blue;
        diff.LineWidth = 2;
        diff.MarkerSize = 7;
        var kl = plot.Add.Scatter(xs, steps.Select(s => Y(s.Kl)).ToArray());
        kl.LegendText = "KL(original ‖ rewritten), nats";
        kl.Color = ScottPlot.Colors.Red;
        kl.LineWidth = 2;
        kl.MarkerSize = 7;
        kl.MarkerShape = MarkerShape.FilledSquare;
        var decodeFrom = steps.FirstOrDefault(s => s.Decode);
        if (decodeFrom is not null && steps.Any(s => !s.Decode))
        {
            var line = plot.Add.VerticalLine(decodeFrom.Step - 0.5, 1.5f, ScottPlot.Colors.Black, LinePattern.Dashed);
            line.LegendText = "prefill | decode";
        }
        var values = steps.SelectMany(s => new[] { s.MaxAbsDiff, s.Kl }).Select(v => Math.Max(Floor, double.IsFinite(v) ? v : Floor)).ToList();
        double lo = Math.Floor(Math.Log10(values.Min())), hi = Math.Ceiling(Math.Log10(values.Max()) + 0.05);
        if (hi <= lo) hi = lo + 1;
        plot.Axes.Left.TickGenerator = LogAxis.Ticks(Math.Pow(10, lo), Math.Pow(10, hi), 10, LogAxis.Power10);
        var xticks = new ScottPlot.TickGenerators.NumericManual();
        foreach (var s in steps) xticks.AddMajor(s.Step, s.Decode ? s.Step.ToString(System.Globalization.CultureInfo.InvariantCulture) : "prefill");
        if (steps.Count <= 40) plot.Axes.Bottom.TickGenerator = xticks;
        plot.Axes.SetLimits(steps.Min(s => s.Step) - 0.6, steps.Max(s => s.Step) + 0.6, lo, hi + 0.6);
        plot.Title(title);
        plot.XLabel("step (prefill = the prompt's last token, then one decode step per token)");
        plot.YLabel($"difference (log scale; below {Floor:0e0} drawn at it)");
        plot.ShowLegend(Alignment.LowerRight);  // drift grows upwards: the lower right is the emptiest corner
        PictureFile.Write(path, Width, Height, canvas => PictureFile.RenderInto(canvas, plot, new PixelRect(0, Width, Height, 0)));
        return plot;
    }

    /// <summary>The points of a <c>compare</c> run's steps.</summary>
    public static List<DriftPoint> Of(IEnumerable<Commands.ComparisonStep> steps) =>
        steps.Select(s => new DriftPoint(s.Step, s.Phase == "decode", s.Mode == OpContract.AttentionMode.Sparse, s.MaxAbsDiff, s.KlDivergence)).ToList();

    private static IEnumerable<(int From, int To, bool Sparse)> Runs(IReadOnlyList<DriftPoint> steps)
    {
        int start = 0;
        for (int i = 1; i <= steps.Count; i++)
            if (i == steps.Count || steps[i].Sparse != steps[start].Sparse)
            {
                yield return (steps[start].Step, steps[i - 1].Step, steps[start].Sparse);
                start = i;
            }
    }
}
