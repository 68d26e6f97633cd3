using ScottPlot;

namespace InfLlmV2.Onnx.Cli.Pictures;

/// <summary>Logarithmic axes for ScottPlot 5 (which plots linear coordinates): values go in as logs, ticks are labelled with the values.</summary>
internal static class LogAxis
{
    /// <summary>Ticks at every power of <paramref name="logBase"/> between <paramref name="min"/> and <paramref name="max"/> (values), labelled by <paramref name="label"/>.</summary>
    public static ScottPlot.TickGenerators.NumericManual Ticks(double min, double max, double logBase, Func<double, string> label)
    {
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        int lo = (int)Math.Floor(Math.Log(min, logBase)), hi = (int)Math.Ceiling(Math.Log(max, logBase));
        for (int e = lo; e <= hi; e++)
        {
            ticks.AddMajor(e, label(Math.Pow(logBase, e)));
            if (logBase == 10 && hi - lo <= 12)
                for (int m = 2; m <= 9; m++) ticks.AddMinor(e + Math.Log10(m));
        }
        return ticks;
    }

    /// <summary>A context length as people write it: 512, 8k, 128k, 1M.</summary>
    public static string Tokens(double n) =>
        n >= 1 << 20 ? $"{n / (1 << 20):0.##}M" : n >= 1024 ? $"{n / 1024:0.##}k" : $"{n:0}";

    /// <summary>A power of ten as 1e-6, 0.001, 1, 1000 (short).</summary>
    public static string Power10(double v) => v is >= 1e-3 and <= 1e4 ? v.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture) : v.ToString("0e0", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Sets the left axis to <paramref name="ticks"/> and the plot limits to whole decades around the data.</summary>
    public static void Apply(IAxis axis, ScottPlot.TickGenerators.NumericManual ticks) => axis.TickGenerator = ticks;
}
