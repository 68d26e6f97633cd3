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
        Console.WriteLine($"{"case",-36} {"op",-12} {"ms",11} {"x GQA",8} {"peak extra MB",14}  note");
        foreach (var r in rows)
            Console.WriteLine($"{r.Case,-36} {r.Op,-12} {r.Ms,11:F3} {(r.RatioToGqa is double x ? $"{x:F2}x" : "-"),8} {r.PeakExtraMb,14}  {r.Note}");
    }
}

/// <summary>The performance targets (docs/benchmarks.md), each judged on the run's own figures.</summary>
internal static class PerformanceTargets
{
    internal sealed record Target(string Name, string Wanted, double Measured, bool Met, string Note = "");

    /// <summary>Judges and prints the targets on this run's figures (cases a --quick run lacks are left out); returns them.</summary>
    internal static List<Target> JudgeAndPrint(List<BenchRow> rows, List<Dictionary<string, object?>> roofline, List<JsonElement> stages, double readGbps)
    {
        var targets = new List<Target>();
        double? Ratio(string @case, string op) => rows.FirstOrDefault(r => r.Case == @case && r.Op == op)?.RatioToGqa;
        void AtMost(string name, double? value, double limit, string unit, string note = "")
        {
            if (value is double v && !double.IsNaN(v)) targets.Add(new Target(name, $"<= {limit}{unit}", v, v <= limit, note));
        }
        void AtLeast(string name, double? value, double limit, string unit, string note = "")
        {
            if (value is double v && !double.IsNaN(v)) targets.Add(new Target(name, $">= {limit}{unit}", v, v >= limit, note));
        }
        foreach (string c in new[] { "dense prefill 1k", "dense prefill 4k", "dense decode 8k" })
            AtMost($"{c}: time / GQA's", 1 / Ratio(c, "ours dense"), 0.9, "");
        AtLeast("sparse decode 32k: speed-up over GQA", Ratio("decode 32k", "ours sparse"), 3.5, "x");
        AtLeast("sparse decode 128k: speed-up over GQA", Ratio("decode 128k", "ours sparse"), 8, "x");
        // The roofline from the measured read bandwidth (decode only reads; a copy moves each byte
        // twice, so the copy-bandwidth roofline understated the bound).
        foreach (var x in roofline.Where(x => !x.ContainsKey("shape")))
            AtLeast($"sparse decode {(int)x["context"]! / 1024}k: share of read roofline", (double)x["of_read_roofline"]!, 0.6, "");
        AtLeast("sparse prefill 32k: speed-up over GQA", Ratio("prefill 32k", "ours sparse"), 1.8, "x");
        var dense64 = rows.FirstOrDefault(r => r.Case == "prefill 64k" && r.Op == "ours dense");
        var sparse64 = rows.FirstOrDefault(r => r.Case == "prefill 64k" && r.Op == "ours sparse");
        if (dense64 is not null && sparse64 is not null)
            AtLeast("sparse prefill 64k: speed-up over our dense mode", dense64.Ms / sparse64.Ms, 3, "x");
        // Stage-1 scoring against its own roofline, max(FMA-bound, read-bound time).
        foreach (var st in stages)
            if (st.GetProperty("phase").GetString() == "decode" && st.GetProperty("length").GetInt32() is var n && n >= 32768
                && StageBenchmark.Stage1ShareOfRoofline(st, readGbps) is { } s1)
                AtLeast($"sparse decode {n / 1024}k: stage-1 scoring, share of its roofline", s1.Share, 0.8, "", $"{s1.Bound}-bound, {s1.RooflineMs:F3} ms");
        // Model shapes: per shape, dense prefill 4k where GQA runs, sparse decode 32k over GQA, and
        // sparse decode's share of the read roofline at every context measured.
        foreach (var s in ModelShape.All)
        {
            AtMost($"{s}: dense prefill 4k, time / GQA's", 1 / Ratio(ModelShapeBench.CaseName(s, "dense prefill 4k"), "ours dense"), 1.0, "");
            // The note: the speed-up a step at 100 % of its read roofline would give over this GQA time
            // (the selected blocks are a fixed budget, so at 32k a step reads only ~4-5x fewer bytes).
            var bound = roofline.FirstOrDefault(x => (string?)x.GetValueOrDefault("shape") == s.ToString() && (int)x["context"]! == 32768);
            AtLeast($"{s}: sparse decode 32k, speed-up over GQA", Ratio(ModelShapeBench.CaseName(s, "decode 32k"), "ours sparse"), 10, "x",
                bound is null ? "" : $"at most {(double)bound["speedup_bound"]!:F1}x at the read roofline");
            foreach (var x in roofline.Where(x => (string?)x.GetValueOrDefault("shape") == s.ToString()))
                AtLeast($"{s}: sparse decode {(int)x["context"]! / 1024}k, share of read roofline", (double)x["of_read_roofline"]!, 0.6, "");
        }
        foreach (var r in rows.Where(r => r.Op == "ours dense" && r.Case.StartsWith(ModelShapeBench.Prefix + "D=", StringComparison.Ordinal)))
            AtMost($"{r.Case[ModelShapeBench.Prefix.Length..]}: time / GQA's", 1 / r.RatioToGqa, 1.0, "");
        Console.WriteLine();
        Console.WriteLine("targets (see docs/benchmarks.md), judged on this run");
        foreach (var t in targets)
            Console.WriteLine($"  {(t.Met ? "met   " : "MISSED")}  {t.Name,-64} {t.Measured,8:0.00} (wanted {t.Wanted}{(t.Note.Length > 0 ? "; " + t.Note : "")})");
        return targets;
    }
}
