using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using InfLlmV2.Onnx.Cli.Bench;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.Models;
using Microsoft.ML.OnnxRuntime;
using static InfLlmV2.Onnx.Cli.Bench.AttentionBenchCases;
using static InfLlmV2.Onnx.Cli.Bench.MachineProbes;
using static InfLlmV2.Onnx.Cli.Bench.StageBenchmark;
using static InfLlmV2.Onnx.Cli.Bench.Timing;

namespace InfLlmV2.Onnx.Cli.Commands;

/// <summary>
/// <c>infllmv2 bench [--quick] [--json FILE]</c>: times single-node models of SwitchableAttention
/// (dense and sparse) and ORT's GroupQueryAttention on identical inputs in one process (warm,
/// median of repeats), with ratios to GQA, the machine's copy bandwidth and matmul throughput, the
/// decode roofline, the stage split (from the native stage benchmark) and peak extra memory; fp32,
/// plus fp16 decode rows; then real models' head geometries (ModelShapeBench); ends with the
/// performance targets judged on the run's own figures.
/// </summary>
public static class BenchCommand
{

    /// <summary>Creates the command.</summary>
    public static Command Create()
    {
        var quick = new Option<bool>("--quick") { Description = "Smaller case list (under 2 minutes)" };
        var json = new Option<FileInfo?>("--json") { Description = "Write every measurement as JSON" };
        var device = DeviceOption.Create();
        var plot = new Option<FileInfo?>("--plot") { Description = "Write a speed-up chart (.png or .svg): speed-up over GQA against context length, per shape and mode, with the roofline bound" };
        var cmd = new Command("bench", "Benchmark SwitchableAttention against ORT GroupQueryAttention on this CPU") { quick, json, device, plot };
        cmd.SetAction(r => CommandRunner.Guard(() =>
        {
            if (r.GetValue(plot) is { } chart) Pictures.PictureFile.Check(chart, "--plot");
            return Run(r.GetValue(quick), r.GetValue(json), DeviceOption.Check(r.GetValue(device)!), r.GetValue(plot));
        }));
        return cmd;
    }


    private static int Run(bool quick, FileInfo? json, ExecutionDevice device, FileInfo? plotFile = null)
    {
        if (json is not null) ReportFile.Check(json, "--json");
        var total = Stopwatch.StartNew();
        var rows = new List<BenchRow>();
        var extra = new Dictionary<string, object?> { ["schema_version"] = ReportFile.SchemaVersion };
        // Ours and GQA on one shared pool of every core, as the layers of one model run (before any
        // other ORT call: the pool belongs to the process's ORT environment); per-session pools that
        // stop spinning after each Run where the environment already exists.
        bool sharedPool = SideBySideSessions.TryShareOnePool(Environment.ProcessorCount);
        using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL, IntraOpNumThreads = Environment.ProcessorCount };
        if (sharedPool) options.DisablePerSessionThreads();
        else options.TakingTurns();
        options.UseDevice(device);
        options.RegisterInfLlmV2Ops();
        using var oneThread = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL, IntraOpNumThreads = 1 };
        oneThread.TakingTurns().UseDevice(device);
        oneThread.RegisterInfLlmV2Ops();
        Console.WriteLine($"infllmv2 bench: G={G}, D={D}, Hkv={Hkv}, B=1, fp32, device {device.ToString().ToLowerInvariant()}, {Environment.ProcessorCount} threads (ORT intra-op = ours; {(sharedPool ? "one pool shared by every session, as in one model" : "a pool per session, its spinning stopped after each Run")}), onnxruntime {OrtEnv.Instance().GetVersionString()}");

        double copyGbps = CopyBandwidth();
        double readGbps = ReadBandwidth();
        double matmulGflops = MatMulThroughput(options);
        // The rooflines' compute rate: the fp32 FMA peak the stage benchmark measures (register-only
        // FMAs on every thread) where it runs, ORT's MatMul rate where that is higher. MatMul alone
        // understated the bound in slow minutes (130 against 190 GFLOP/s), so shares went above 1.
        double fmaPeak = StageBenchmark.StageSplit("decode", 8192) is { } probe && probe.TryGetProperty("fma_peak_gflops", out var fp) ? fp.GetDouble() : 0;
        double gflops = Math.Max(matmulGflops, fmaPeak);
        Console.WriteLine($"machine: copy bandwidth {copyGbps:F1} GB/s (bytes copied per second, {Environment.ProcessorCount} threads), "
            + $"read bandwidth {readGbps:F1} GB/s (bytes summed per second), ORT MatMul 1024^3 {matmulGflops:F1} GFLOP/s, "
            + (fmaPeak > 0 ? $"fp32 FMA peak {fmaPeak:F1} GFLOP/s" : "fp32 FMA peak not measured (no stage benchmark)")
            + $"; rooflines compute at {gflops:F1} GFLOP/s");
        extra["copy_gb_per_s"] = copyGbps;
        extra["read_gb_per_s"] = readGbps;
        extra["matmul_gflops"] = matmulGflops;
        extra["fma_peak_gflops"] = fmaPeak;
        extra["roofline_gflops"] = gflops;

        using var ours = SingleNodeSession(options, AttentionOpKind.Switchable, withState: true);
        using var oursPrefill = SingleNodeSession(options, AttentionOpKind.Switchable, withState: false);
        using var gqa = SingleNodeSession(options, AttentionOpKind.GroupQueryAttention, withState: false);

        // Progress (stderr): one step per section of cases.
        using var progress = Progress.CliProgress.Start("bench", quick ? 6 : 7);
        progress.Describe("decode");
        int[] decodeContexts = quick ? [8192, 32768] : [8192, 32768, 65536, 131072];
        int reps = quick ? 10 : 30;
        Console.WriteLine();
        Console.WriteLine("decode (one token, shared KV buffers, compressed state)");
        // One decode step of GQA and of our sparse mode on the given sessions: two rows (GQA's, then
        // ours with the ratio); returns both times.
        (double GqaMs, double SparseMs) DecodePair(InferenceSession g, InferenceSession o, int ctx, string label,
                                                    string note = "", int hkv = Hkv, bool cold = false, bool fp16 = false)
        {
            var (gqaMs, gqaMem) = Decode(g, ctx, null, reps, hkv, cold, fp16);
            var (sparseMs, sparseMem) = Decode(o, ctx, 2, reps, hkv, cold, fp16);
            rows.Add(new BenchRow(label, "GQA", gqaMs, 1, gqaMem, note));
            rows.Add(new BenchRow(label, "ours sparse", sparseMs, gqaMs / sparseMs, sparseMem, note));
            return (gqaMs, sparseMs);
        }
        var roofline = new List<Dictionary<string, object?>>();
        foreach (int ctx in decodeContexts)
        {
            var (gqaMs, sparseMs) = DecodePair(gqa, ours, ctx, $"decode {ctx / 1024}k");
            if (ctx == 8192)
            {
                var (denseMs, denseMem) = Decode(ours, ctx, 1, reps);
                rows.Add(new BenchRow($"decode {ctx / 1024}k", "ours dense", denseMs, gqaMs / denseMs, denseMem, ""));
            }
            // Roofline of sparse decode, from what the kernel reads and computes: the selected K/V rows
            // and every level-1 compressed key once (level-2 scores are derived from level-1 ones), and
            // the dot products of both (the stage-1 score rows, 1/D of that, stay in cache).
            double bytes = DecodeBytesRead(ctx);
            double flops = 2.0 * G * bytes / 4;  // one multiply-add per head and element read
            double rooflineMs = Math.Max(bytes / (copyGbps * 1e9), flops / (gflops * 1e9)) * 1e3;
            // The same with the read-only stream bandwidth: decode only reads, and a copy moves each
            // byte twice, so the copy-bandwidth roofline is the looser of the two.
            double readRooflineMs = Math.Max(bytes / (readGbps * 1e9), flops / (gflops * 1e9)) * 1e3;
            roofline.Add(new()
            {
                ["context"] = ctx, ["bytes_read"] = bytes, ["flops"] = flops, ["ms"] = sparseMs, ["effective_gb_per_s"] = bytes / (sparseMs * 1e-3) / 1e9,
                ["roofline_ms"] = rooflineMs, ["of_roofline"] = rooflineMs / sparseMs,
                ["read_roofline_ms"] = readRooflineMs, ["of_read_roofline"] = readRooflineMs / sparseMs,
            });
        }
        // Cold caches: before each timed step the bench reads 128 MiB, so the step's K/V rows and
        // compressed keys come from DRAM, as in a model whose other layers ran in between (the
        // steps above repeat on data that stays in the L3).
        progress.Advance();
        progress.Describe("decode, cold caches");
        var cold = new List<Dictionary<string, object?>>();
        foreach (int ctx in quick ? [32768] : new[] { 32768, 131072 })
        {
            var (_, sparseMs) = DecodePair(gqa, ours, ctx, $"decode {ctx / 1024}k cold", "caches evicted before each step", cold: true);
            double bytes = DecodeBytesRead(ctx);
            double gbps = bytes / (sparseMs * 1e-3) / 1e9;
            cold.Add(new() { ["context"] = ctx, ["bytes_read"] = bytes, ["ms"] = sparseMs, ["effective_gb_per_s"] = gbps, ["of_read_bandwidth"] = gbps / readGbps });
        }
        extra["decode_cold"] = cold;
        progress.Advance();
        if (!quick)
        {
            progress.Describe("decode, Hkv=2");
            progress.Advance();
            // Two KV heads (32 query heads), as MiniCPM4 has per layer: the same kernels over
            // twice the heads, every thread still busy.
            using var ours2 = SingleNodeSession(options, AttentionOpKind.Switchable, withState: true, hkv: 2);
            using var gqa2 = SingleNodeSession(options, AttentionOpKind.GroupQueryAttention, withState: false, hkv: 2);
            foreach (int ctx in new[] { 32768, 131072 })
                DecodePair(gqa2, ours2, ctx, $"decode {ctx / 1024}k Hkv=2", hkv: 2);
        }
        progress.Describe("decode, fp16");
        {
            // fp16 models (K/V cache and compressed keys in fp16; arithmetic in fp32 in both ops).
            using var ours16 = SingleNodeSession(options, AttentionOpKind.Switchable, withState: true, fp16: true);
            using var gqa16 = SingleNodeSession(options, AttentionOpKind.GroupQueryAttention, withState: false, fp16: true);
            foreach (int ctx in quick ? [32768] : new[] { 32768, 131072 })
                DecodePair(gqa16, ours16, ctx, $"decode {ctx / 1024}k fp16", fp16: true);
        }
        BenchRow.Print(rows.Where(r => r.Case.StartsWith("decode", StringComparison.Ordinal)));
        Console.WriteLine($"{"context",8} {"MB read",9} {"GB/s eff.",10} {"copy-bw roofline ms",20} {"of it",7} {"read-bw roofline ms",20} {"of it",7}");
        foreach (var x in roofline)
            Console.WriteLine($"{x["context"],8} {(double)x["bytes_read"]! / 1e6,9:F1} {(double)x["effective_gb_per_s"]!,10:F1} {(double)x["roofline_ms"]!,20:F3} "
                + $"{(double)x["of_roofline"]!,6:P0} {(double)x["read_roofline_ms"]!,20:F3} {(double)x["of_read_roofline"]!,6:P0}");
        extra["decode_roofline"] = roofline;
        foreach (var x in cold)
            Console.WriteLine($"cold {(int)x["context"]! / 1024}k: {(double)x["bytes_read"]! / 1e6:F1} MB read from DRAM at {(double)x["effective_gb_per_s"]!:F1} GB/s "
                + $"= {(double)x["of_read_bandwidth"]!:P0} of the measured read bandwidth");

        Console.WriteLine();
        Console.WriteLine("prefill (causal, no past)");
        progress.Advance();
        progress.Describe("prefill");
        int[] prefill = quick ? [4096, 16384] : [4096, 16384, 32768, 65536];
        foreach (int n in prefill)
        {
            // ORT's CPU GQA needs no S x T score buffer, so it runs unchunked at every length;
            // should it fail (memory), the row says so.
            // From 64k on, our dense mode runs too, for the sparse/dense ratio.
            var runs = new List<Action> { new PrefillRun(oursPrefill, n, 2).Touched().Run, new PrefillRun(gqa, n, null).Touched().Run };
            if (n >= 65536) runs.Add(new PrefillRun(oursPrefill, n, 1).Touched().Run);
            string gqaError = "";
            var times = TimeInterleaved(n <= 4096 ? 5 : 1, n <= 4096, [.. runs], failure => gqaError = failure);
            var (s, g) = (times[0], times[1]);
            bool gqaRan = gqaError.Length == 0;
            rows.Add(new BenchRow($"prefill {n / 1024}k", "ours sparse", s.Ms, gqaRan ? g.Ms / s.Ms : null, s.PeakMb, ""));
            rows.Add(gqaRan
                ? new BenchRow($"prefill {n / 1024}k", "GQA", g.Ms, 1, g.PeakMb, "")
                : new BenchRow($"prefill {n / 1024}k", "GQA", double.NaN, null, 0, $"GQA failed: {gqaError}"));
            if (n >= 65536)
                rows.Add(new BenchRow($"prefill {n / 1024}k", "ours dense", times[2].Ms, gqaRan ? g.Ms / times[2].Ms : null, times[2].PeakMb, $"sparse/dense = {times[2].Ms / s.Ms:F2}x"));
        }
        BenchRow.Print(rows.Where(r => r.Case.StartsWith("prefill", StringComparison.Ordinal)));

        Console.WriteLine();
        Console.WriteLine("dense mode where dense is what runs");
        progress.Advance();
        progress.Describe("dense mode");
        var denseRows = new List<BenchRow>();
        foreach (int n in new[] { 1024, 4096 })
        {
            var t = TimeInterleaved(n <= 1024 ? 9 : 5, true, [new PrefillRun(gqa, n, null).Touched().Run, new PrefillRun(oursPrefill, n, 1).Touched().Run]);
            var (g, o) = (t[0], t[1]);
            denseRows.Add(new BenchRow($"dense prefill {n / 1024}k", "GQA", g.Ms, 1, g.PeakMb, ""));
            denseRows.Add(new BenchRow($"dense prefill {n / 1024}k", "ours dense", o.Ms, g.Ms / o.Ms, o.PeakMb, ""));
        }
        {
            var (g, gm) = Decode(gqa, 8192, null, reps);
            var (o, om) = Decode(ours, 8192, 1, reps);
            denseRows.Add(new BenchRow("dense decode 8k", "GQA", g, 1, gm, ""));
            denseRows.Add(new BenchRow("dense decode 8k", "ours dense", o, g / o, om, ""));
        }
        BenchRow.Print(denseRows);
        rows.AddRange(denseRows);

        ModelShapeBench.Run(options, oneThread, quick, readGbps, gflops, rows, roofline);

        Console.WriteLine();
        Console.WriteLine("stage split of sparse calls (native stage benchmark, same kernel, same shapes)");
        progress.Advance();
        progress.Describe("stage split");
        var stages = new List<JsonElement>();
        foreach (var (phase, n) in decodeContexts.Select(c => ("decode", c)).Concat(prefill.Where(p => p <= 16384).Select(p => ("prefill", p))))
        {
            if (StageSplit(phase, n) is { } st)
            {
                stages.Add(st);
                double tot = st.GetProperty("total_ms").GetDouble();
                double sel = st.GetProperty("select_ms").GetDouble() + st.GetProperty("compress_ms").GetDouble();
                double Ms(string stage) => st.GetProperty(stage).GetDouble();
                Console.WriteLine($"{phase,-8} {n / 1024,4}k  compression {Ms("compress_ms"),9:F3} ms  selection {Ms("select_ms"),9:F3} ms  attention {Ms("attend_ms"),9:F3} ms  "
                    + $"(selection+compression {sel / tot:P0} of {tot:F3} ms, isa {st.GetProperty("isa").GetString()})");
                if (phase == "decode" && st.TryGetProperty("select_parts_ms", out var parts))
                    Console.WriteLine($"{"",15}selection parts: scoring {parts.GetProperty("score").GetDouble():F3} ms, normalizers {parts.GetProperty("lse").GetDouble():F3} ms, "
                        + $"group sum {parts.GetProperty("group_sum").GetDouble():F3} ms, pooling + top-k {parts.GetProperty("topk").GetDouble():F3} ms");
                if (SelectionFloor(st) is { } floor)
                    Console.WriteLine($"{"",15}selection floor: {st.GetProperty("stage1_madds").GetDouble() / 1e6:F1} M stage-1 multiply-adds at the measured fp32 FMA peak "
                        + $"({st.GetProperty("fma_peak_gflops").GetDouble():F0} GFLOP/s) take {floor.Ms:F3} ms; with the rest of the step as measured, selection would be {floor.Share:P0} of it");
                if (phase == "decode" && Stage1ShareOfRoofline(st, readGbps) is { } s1)
                    Console.WriteLine($"{"",15}stage-1 scoring: {s1.RooflineMs:F3} ms roofline (max of FMA-bound and read-bound at {readGbps:F1} GB/s; {s1.Bound}-bound), "
                        + $"scoring runs at {s1.Share:P0} of it");
            }
        }
        extra["stage_split"] = stages;
        extra["targets"] = PerformanceTargets.JudgeAndPrint(rows, roofline, stages, readGbps).Select(t => new { name = t.Name, wanted = t.Wanted, measured = t.Measured, met = t.Met, note = t.Note });
        if (plotFile is not null)
        {
            Pictures.BenchPlot.Write(plotFile.FullName, rows, roofline, $"SwitchableAttention vs ORT GroupQueryAttention{(quick ? " (--quick)" : "")}: G={G}, D={D}, {device.ToString().ToLowerInvariant()}, {Environment.ProcessorCount} threads");
            Console.Error.WriteLine($"speed-up chart: {plotFile.FullName}");
        }
        Console.WriteLine();
        Console.WriteLine($"bench finished in {total.Elapsed.TotalSeconds:F0} s");
        if (json is not null)
        {
            extra["rows"] = rows.Select(r => new { @case = r.Case, op = r.Op, ms = r.Ms, ratio_to_gqa = r.RatioToGqa, peak_extra_mb = r.PeakExtraMb, note = r.Note });
            extra["quick"] = quick;
            ReportFile.Write(json, JsonSerializer.Serialize(extra, InspectCommand.JsonOptions));
        }
        return ExitCodes.Ok;
    }
}
