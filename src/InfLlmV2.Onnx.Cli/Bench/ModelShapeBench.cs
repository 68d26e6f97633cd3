using InfLlmV2.Onnx.Models;
using Microsoft.ML.OnnxRuntime;
using static InfLlmV2.Onnx.Cli.Bench.AttentionBenchCases;

namespace InfLlmV2.Onnx.Cli.Bench;

/// <summary>The attention geometry of one layer of a real model: query heads, KV heads, head size.</summary>
internal sealed record ModelShape(string Name, int H, int Hkv, int D)
{
    internal int G => H / Hkv;

    public override string ToString() => $"{Name} {H}/{Hkv}/{D}";

    internal static readonly ModelShape[] All =
    [
        new("Llama-3-8B", 32, 8, 128),
        new("Qwen2.5-7B", 28, 4, 128),
        new("MiniCPM4-8B", 32, 2, 128),
        new("Qwen2.5-0.5B", 14, 2, 64),
        new("Phi-3-mini", 32, 32, 96),
        new("demo", 8, 2, 32),
    ];
}

/// <summary>
/// The bench's model-shape section: per shape, dense prefill at 4k against GQA, sparse decode at 32k
/// and 128k against GQA with its share of the read roofline, and batched ragged decode (B = 4, 16 at
/// 32k); small head sizes (8, 16, 32) in dense prefill on one thread and on every core. Every pair
/// is timed alternately (ours, GQA, ours, ...), so that the ratios come from one stretch of time.
/// </summary>
internal static class ModelShapeBench
{
    internal const string Prefix = "shape ";

    // Largest K/V cache pair a batched case allocates (4.3 GB: Llama-3-8B at B = 16).
    private const long MaxBatchCacheBytes = 4400L << 20;

    /// <summary>Case names of this section: "shape NAME dense prefill 4k", "shape NAME decode 32k", "shape NAME decode 32k B=4".</summary>
    internal static string CaseName(ModelShape s, string what) => $"{Prefix}{s.Name} {what}";

    internal static void Run(SessionOptions options, SessionOptions oneThread, bool quick, double readGbps, double gflops,
        List<BenchRow> rows, List<Dictionary<string, object?>> roofline)
    {
        Console.WriteLine();
        Console.WriteLine("model shapes (one attention layer, H / Hkv / D of each model; fp32; B = 1 unless stated; ours and GQA timed alternately)");
        var shapeRows = new List<BenchRow>();
        foreach (var s in ModelShape.All)
        {
            using var ours = SingleNodeSession(options, AttentionOpKind.Switchable, withState: true, hkv: s.Hkv, g: s.G);
            using var oursPrefill = SingleNodeSession(options, AttentionOpKind.Switchable, withState: false, hkv: s.Hkv, g: s.G);
            using var gqa = SingleNodeSession(options, AttentionOpKind.GroupQueryAttention, withState: false, hkv: s.Hkv, g: s.G);
            PrefillPair(shapeRows, CaseName(s, "dense prefill 4k"), oursPrefill, gqa, 4096, s, quick ? 2 : 3);
            // --quick: 128k for the shapes with the fewest KV bytes (the rest read 0.5-3 GB per step).
            bool long128 = !quick || s.Hkv * s.D <= 64 * 2;
            foreach (int ctx in long128 ? new[] { 32768, 131072 } : [32768])
            {
                var (ms, gqaMs) = DecodePair(shapeRows, CaseName(s, $"decode {ctx / 1024}k"), ours, gqa, ctx, s, 1, quick ? 7 : 15);
                double bytes = DecodeBytesRead(ctx, s.D, s.Hkv);
                double flops = 2.0 * s.G * bytes / 4;  // one multiply-add per query head and element read
                double readRooflineMs = Math.Max(bytes / (readGbps * 1e9), flops / (gflops * 1e9)) * 1e3;
                roofline.Add(new()
                {
                    ["shape"] = s.ToString(), ["context"] = ctx, ["bytes_read"] = bytes, ["flops"] = flops, ["ms"] = ms,
                    // The largest speed-up over this GQA time that a step at the full read roofline would give.
                    ["gqa_ms"] = gqaMs, ["speedup_bound"] = gqaMs / readRooflineMs,
                    ["effective_gb_per_s"] = bytes / (ms * 1e-3) / 1e9, ["read_roofline_ms"] = readRooflineMs, ["of_read_roofline"] = readRooflineMs / ms,
                });
            }
            // Batched ragged decode where the caches (B x Hkv x 32k x D x 8 bytes, one copy for both
            // ops) stay within about 4 GB; --quick: B = 4 of the shapes with the fewest KV bytes.
            foreach (int b in quick ? new[] { 4 } : [4, 16])
            {
                long cacheBytes = 8L * b * s.Hkv * 32768 * s.D;
                if (cacheBytes > MaxBatchCacheBytes || (quick && s.Hkv * s.D > 4 * 128))
                {
                    if (!quick) Console.WriteLine($"{CaseName(s, $"decode 32k B={b}")}: not run, its caches would take {cacheBytes >> 20} MB");
                    continue;
                }
                DecodePair(shapeRows, CaseName(s, $"decode 32k B={b}"), ours, gqa, 32768, s, b, quick ? 5 : 9, $"ragged: {32768 - (b - 1) * 32768 / (2 * b)}..32768 tokens");
            }
        }
        BenchRow.Print(shapeRows);
        Console.WriteLine($"{"shape",-24} {"context",8} {"MB read",9} {"GB/s eff.",10} {"read roofline ms",17} {"of it",7}");
        foreach (var x in roofline.Where(x => x.ContainsKey("shape")))
            Console.WriteLine($"{(string)x["shape"]!,-24} {x["context"],8} {(double)x["bytes_read"]! / 1e6,9:F1} {(double)x["effective_gb_per_s"]!,10:F1} "
                + $"{(double)x["read_roofline_ms"]!,17:F3} {(double)x["of_read_roofline"]!,6:P0}");
        rows.AddRange(shapeRows);

        Console.WriteLine();
        Console.WriteLine($"small head sizes: dense prefill 4k, H 8 / Hkv 2 (the demo's heads), on 1 thread and on {Environment.ProcessorCount}");
        var smallRows = new List<BenchRow>();
        foreach (int d in new[] { 8, 16, 32 })
            foreach (var (opts, threads) in new[] { (oneThread, 1), (options, Environment.ProcessorCount) })
            {
                var s = new ModelShape($"D={d}", 8, 2, d);
                using var ours = SingleNodeSession(opts, AttentionOpKind.Switchable, withState: false, hkv: s.Hkv, g: s.G);
                using var gqa = SingleNodeSession(opts, AttentionOpKind.GroupQueryAttention, withState: false, hkv: s.Hkv, g: s.G);
                PrefillPair(smallRows, $"{Prefix}D={d} dense prefill 4k {threads}t", ours, gqa, 4096, s, quick ? 3 : 5);
            }
        BenchRow.Print(smallRows);
        rows.AddRange(smallRows);
    }

    // Dense prefill of n tokens, ours and GQA alternately (a warm-up of each first); two rows.
    private static void PrefillPair(List<BenchRow> rows, string name, InferenceSession ours, InferenceSession gqa, int n, ModelShape s, int reps)
    {
        string gqaError = "";
        var t = Timing.TimeInterleaved(reps, true,
            [new PrefillRun(ours, n, 1, s.G, s.D, s.Hkv).Touched().Run, new PrefillRun(gqa, n, null, s.G, s.D, s.Hkv).Touched().Run],
            failure => gqaError = failure);
        bool gqaRan = gqaError.Length == 0;
        rows.Add(gqaRan
            ? new BenchRow(name, "GQA", t[1].Ms, 1, t[1].PeakMb, "")
            : new BenchRow(name, "GQA", double.NaN, null, 0, $"GQA failed: {gqaError}"));
        rows.Add(new BenchRow(name, "ours dense", t[0].Ms, gqaRan ? t[1].Ms / t[0].Ms : null, t[0].PeakMb, ""));
    }

    // One decode step of ours (sparse) and GQA alternately on the same inputs; two rows; both ms.
    private static (double Ours, double Gqa) DecodePair(List<BenchRow> rows, string name, InferenceSession ours, InferenceSession gqa, int ctx, ModelShape s, int batch, int reps, string note = "")
    {
        using var o = new DecodeRun(ours, ctx, 2, s.Hkv, s.G, s.D, batch);
        using var g = new DecodeRun(gqa, ctx, null, s.Hkv, s.G, s.D, batch, caches: o);
        var t = Timing.TimeInterleaved(reps, true, [o.Run, g.Run]);
        rows.Add(new BenchRow(name, "GQA", t[1].Ms, 1, t[1].PeakMb, note));
        rows.Add(new BenchRow(name, "ours sparse", t[0].Ms, t[1].Ms / t[0].Ms, t[0].PeakMb, note));
        return (t[0].Ms, t[1].Ms);
    }
}
