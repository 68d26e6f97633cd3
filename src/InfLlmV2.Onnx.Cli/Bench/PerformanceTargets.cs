using System.Diagnostics;
using System.Text.Json;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Cli.Bench;

/// <summary>One line of the bench's per-case table.</summary>
internal sealed record BenchRow(string Case, string Op, double Ms, double? RatioToGqa, long PeakExtraMb, string Note)
{
    internal static void Print(IEnumerable<BenchRow> rows)
    {
        Console.WriteLine($"{"case",-20} {"op",-12} {"ms",11} {"x GQA",8} {"peak extra MB",14}  note");
        foreach (var r in rows)
            Console.WriteLine($"{r.Case,-20} {r.Op,-12} {r.Ms,11:F3} {(r.RatioToGqa is double x ? $"{x:F2}x" : "-"),8} {r.PeakExtraMb,14}  {r.Note}");
    }
}

/// <summary>The performance targets (docs/benchmarks.md), each judged on the run's own figures.</summary>
internal static class PerformanceTargets
{
    internal sealed record Target(string Name, string Wanted, double Measured, bool Met, string Note = "");

    /// <summary>Judges and prints the targets on this run's figures (cases a --quick run lacks are left out); returns them.</summary>
    internal static List<Target> JudgeAndPrint(List<BenchRow> rows, List<Dictionary<string, object?>> roofline, List<JsonElement> stages)
    {
        var targets = new List<Target>();
        double? Ratio(string @case, string op) => rows.FirstOrDefault(r => r.Case == @case && r.Op == op)?.RatioToGqa;
        void AtMost(string name, double? value, double limit, string unit, string note = "")
        {
            if (value is double v && !double.IsNaN(v)) targets.Add(new Target(name, $"<= {limit}{unit}", v, v <= limit, note));
        }
        void AtLeast(string name, double? value, double limit, string unit)
        {
            if (value is double v && !double.IsNaN(v)) targets.Add(new Target(name, $">= {limit}{unit}", v, v >= limit));
        }
        foreach (string c in new[] { "dense prefill 1k", "dense prefill 4k", "dense decode 8k" })
            AtMost($"{c}: time / GQA's", 1 / Ratio(c, "ours dense"), 0.9, "");
        AtLeast("sparse decode 32k: speed-up over GQA", Ratio("decode 32k", "ours sparse"), 3.5, "x");
        AtLeast("sparse decode 128k: speed-up over GQA", Ratio("decode 128k", "ours sparse"), 8, "x");
        foreach (var x in roofline)
            AtLeast($"sparse decode {(int)x["context"]! / 1024}k: share of roofline", (double)x["of_roofline"]!, 0.6, "");
        AtLeast("sparse prefill 32k: speed-up over GQA", Ratio("prefill 32k", "ours sparse"), 1.8, "x");
        var dense64 = rows.FirstOrDefault(r => r.Case == "prefill 64k" && r.Op == "ours dense");
        var sparse64 = rows.FirstOrDefault(r => r.Case == "prefill 64k" && r.Op == "ours sparse");
        if (dense64 is not null && sparse64 is not null)
            AtLeast("sparse prefill 64k: speed-up over our dense mode", dense64.Ms / sparse64.Ms, 3, "x");
        // Stage-1 scoring at the FMA peak the same run measures: how close selection runs to its
        // fp32 floor (docs/benchmarks.md, "Targets missed").
        foreach (var st in stages)
            if (st.GetProperty("phase").GetString() == "decode" && st.GetProperty("length").GetInt32() is var n && n >= 32768)
                AtLeast($"sparse decode {n / 1024}k: stage-1 scoring, share of FMA peak", StageBenchmark.Stage1ShareOfFmaPeak(st), 0.8, "");
        Console.WriteLine();
        Console.WriteLine("targets (see docs/benchmarks.md), judged on this run");
        foreach (var t in targets)
            Console.WriteLine($"  {(t.Met ? "met   " : "MISSED")}  {t.Name,-52} {t.Measured,8:0.00} (wanted {t.Wanted}{(t.Note.Length > 0 ? "; " + t.Note : "")})");
        return targets;
    }
}
