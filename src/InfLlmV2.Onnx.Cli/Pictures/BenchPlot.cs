using System.Globalization;
using System.Text.RegularExpressions;
using InfLlmV2.Onnx.Cli.Bench;

namespace InfLlmV2.Onnx.Cli.Pictures;

/// <summary><c>bench --plot</c>: the bench's rows as <see cref="SpeedupChart"/> series (one per shape and mode) and the decode roofline as a bound.</summary>
internal static partial class BenchPlot
{
    [GeneratedRegex(@"^(?<kind>.*?)\s*(?<ctx>\d+)k(?<rest>.*)$")]
    private static partial Regex CaseWithContext();

    /// <summary>Writes the chart; <paramref name="roofline"/> holds the bench's decode roofline entries (context, roofline_ms).</summary>
    public static void Write(string path, IReadOnlyList<BenchRow> rows, IReadOnlyList<Dictionary<string, object?>> roofline, string title)
    {
        var series = new Dictionary<string, List<(int, double)>>(StringComparer.Ordinal);
        foreach (var row in rows)
        {
            if (row.Op == "GQA" || row.RatioToGqa is not double ratio || !double.IsFinite(ratio)) continue;
            // The chart is the main case's (its title's G and D); the model shapes stay in the bench's tables.
            if (row.Case.StartsWith("shape ", StringComparison.Ordinal)) continue;
            var m = CaseWithContext().Match(row.Case);
            if (!m.Success) continue;
            int context = int.Parse(m.Groups["ctx"].Value, CultureInfo.InvariantCulture) * 1024;
            string shape = (m.Groups["kind"].Value + m.Groups["rest"].Value).Trim();
            string label = $"{shape}, {row.Op}";
            if (!series.TryGetValue(label, out var points)) series[label] = points = [];
            points.Add((context, ratio));
        }
        var all = series.Select(kv => new SpeedupSeries(kv.Key, kv.Value.OrderBy(p => p.Item1).ToList())).ToList();
        // The bound: GQA's decode time over the sparse decode roofline (bytes read at the measured bandwidth, or FLOPs at the MatMul rate).
        var bound = new List<(int, double)>();
        // The main case's entries only: the model shapes' entries (with a "shape") have their own GQA rows.
        foreach (var r in roofline.Where(r => !r.ContainsKey("shape")))
        {
            int ctx = Convert.ToInt32(r["context"], CultureInfo.InvariantCulture);
            // The tighter of the bench's rooflines (copy and read bandwidth) that the entry has: the least time the step could take.
            double Ms(string key) => r.TryGetValue(key, out var v) && v is not null ? Convert.ToDouble(v, CultureInfo.InvariantCulture) : double.MaxValue;
            double rooflineMs = Math.Min(Ms("roofline_ms"), Ms("read_roofline_ms"));
            if (rooflineMs == double.MaxValue) continue;
            var gqa = rows.FirstOrDefault(x => x.Case == $"decode {ctx / 1024}k" && x.Op == "GQA");
            if (gqa is not null && rooflineMs > 0) bound.Add((ctx, gqa.Ms / rooflineMs));
        }
        if (bound.Count > 0) all.Add(new SpeedupSeries("decode, roofline bound (GQA time / least possible time)", bound, IsBound: true));
        SpeedupChart.Write(path, all, title);
    }
}
