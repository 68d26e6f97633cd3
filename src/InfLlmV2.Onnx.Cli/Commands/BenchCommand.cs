using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Cli.Commands;

/// <summary>
/// <c>infllmv2 bench [--quick] [--json FILE]</c>: times single-node models of SwitchableAttention
/// (dense and sparse) and ORT's GroupQueryAttention on identical inputs in one process (warm,
/// median of repeats), with ratios to GQA, the machine's copy bandwidth and matmul throughput, the
/// decode roofline, the stage split (from the native stage benchmark) and peak extra memory; fp32,
/// plus fp16 decode rows; ends with the performance targets judged on the run's own figures.
/// </summary>
public static class BenchCommand
{
    private const int G = 16, D = 128, Hkv = 1;

    /// <summary>Creates the command.</summary>
    public static Command Create()
    {
        var quick = new Option<bool>("--quick") { Description = "Smaller case list (under 2 minutes)" };
        var json = new Option<FileInfo?>("--json") { Description = "Write every measurement as JSON" };
        var cmd = new Command("bench", "Benchmark SwitchableAttention against ORT GroupQueryAttention on this CPU") { quick, json };
        cmd.SetAction(r => CommandRunner.Guard(() => Run(r.GetValue(quick), r.GetValue(json))));
        return cmd;
    }

    private sealed record Row(string Case, string Op, double Ms, double? RatioToGqa, long PeakExtraMb, string Note);

    private static int Run(bool quick, FileInfo? json)
    {
        if (json is not null) ReportFile.Check(json, "--json");
        var total = Stopwatch.StartNew();
        var rows = new List<Row>();
        var extra = new Dictionary<string, object?>();
        using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL, IntraOpNumThreads = Environment.ProcessorCount };
        options.RegisterInfLlmV2Ops();
        Console.WriteLine($"infllmv2 bench: G={G}, D={D}, Hkv={Hkv}, B=1, fp32, {Environment.ProcessorCount} threads (ORT intra-op = ours), onnxruntime {OrtEnv.Instance().GetVersionString()}");

        double copyGbps = CopyBandwidth();
        double readGbps = ReadBandwidth();
        double gflops = MatMulThroughput(options);
        Console.WriteLine($"machine: copy bandwidth {copyGbps:F1} GB/s (bytes copied per second, {Environment.ProcessorCount} threads), read bandwidth {readGbps:F1} GB/s (bytes summed per second), ORT MatMul 1024^3 {gflops:F1} GFLOP/s");
        extra["copy_gb_per_s"] = copyGbps;
        extra["read_gb_per_s"] = readGbps;
        extra["matmul_gflops"] = gflops;

        using var ours = Session(options, AttentionOpKind.Switchable, withState: true);
        using var oursPrefill = Session(options, AttentionOpKind.Switchable, withState: false);
        using var gqa = Session(options, AttentionOpKind.GroupQueryAttention, withState: false);

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
            rows.Add(new Row(label, "GQA", gqaMs, 1, gqaMem, note));
            rows.Add(new Row(label, "ours sparse", sparseMs, gqaMs / sparseMs, sparseMem, note));
            return (gqaMs, sparseMs);
        }
        var roofline = new List<Dictionary<string, object?>>();
        foreach (int ctx in decodeContexts)
        {
            var (gqaMs, sparseMs) = DecodePair(gqa, ours, ctx, $"decode {ctx / 1024}k");
            if (ctx == 8192)
            {
                var (denseMs, denseMem) = Decode(ours, ctx, 1, reps);
                rows.Add(new Row($"decode {ctx / 1024}k", "ours dense", denseMs, gqaMs / denseMs, denseMem, ""));
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
            roofline.Add(new() { ["context"] = ctx, ["bytes_read"] = bytes, ["flops"] = flops, ["ms"] = sparseMs, ["effective_gb_per_s"] = bytes / (sparseMs * 1e-3) / 1e9, ["roofline_ms"] = rooflineMs, ["of_roofline"] = rooflineMs / sparseMs, ["read_roofline_ms"] = readRooflineMs, ["of_read_roofline"] = readRooflineMs / sparseMs });
        }
        // Cold caches: before each timed step the bench reads 128 MiB, so the step's K/V rows and
        // compressed keys come from DRAM, as in a model whose other layers ran in between (the
        // steps above repeat on data that stays in the L3).
        var cold = new List<Dictionary<string, object?>>();
        foreach (int ctx in quick ? [32768] : new[] { 32768, 131072 })
        {
            var (_, sparseMs) = DecodePair(gqa, ours, ctx, $"decode {ctx / 1024}k cold", "caches evicted before each step", cold: true);
            double bytes = DecodeBytesRead(ctx);
            cold.Add(new() { ["context"] = ctx, ["bytes_read"] = bytes, ["ms"] = sparseMs, ["effective_gb_per_s"] = bytes / (sparseMs * 1e-3) / 1e9, ["of_read_bandwidth"] = bytes / (sparseMs * 1e-3) / 1e9 / readGbps });
        }
        extra["decode_cold"] = cold;
        if (!quick)
        {
            // Two KV heads (32 query heads), as MiniCPM4 has per layer: the same kernels over
            // twice the heads, every thread still busy.
            using var ours2 = Session(options, AttentionOpKind.Switchable, withState: true, hkv: 2);
            using var gqa2 = Session(options, AttentionOpKind.GroupQueryAttention, withState: false, hkv: 2);
            foreach (int ctx in new[] { 32768, 131072 })
                DecodePair(gqa2, ours2, ctx, $"decode {ctx / 1024}k Hkv=2", hkv: 2);
        }
        {
            // fp16 models (K/V cache and compressed keys in fp16; arithmetic in fp32 in both ops).
            using var ours16 = Session(options, AttentionOpKind.Switchable, withState: true, fp16: true);
            using var gqa16 = Session(options, AttentionOpKind.GroupQueryAttention, withState: false, fp16: true);
            foreach (int ctx in quick ? [32768] : new[] { 32768, 131072 })
                DecodePair(gqa16, ours16, ctx, $"decode {ctx / 1024}k fp16", fp16: true);
        }
        PrintRows(rows.Where(r => r.Case.StartsWith("decode", StringComparison.Ordinal)));
        Console.WriteLine($"{"context",8} {"MB read",9} {"GB/s eff.",10} {"roofline ms",12} {"of roofline",12} {"read-bw roofline ms",20} {"of it",7}");
        foreach (var x in roofline)
            Console.WriteLine($"{x["context"],8} {(double)x["bytes_read"]! / 1e6,9:F1} {(double)x["effective_gb_per_s"]!,10:F1} {(double)x["roofline_ms"]!,12:F3} {(double)x["of_roofline"]!,11:P0} {(double)x["read_roofline_ms"]!,20:F3} {(double)x["of_read_roofline"]!,6:P0}");
        extra["decode_roofline"] = roofline;
        foreach (var x in cold)
            Console.WriteLine($"cold {(int)x["context"]! / 1024}k: {(double)x["bytes_read"]! / 1e6:F1} MB read from DRAM at {(double)x["effective_gb_per_s"]!:F1} GB/s = {(double)x["of_read_bandwidth"]!:P0} of the measured read bandwidth");

        Console.WriteLine();
        Console.WriteLine("prefill (causal, no past)");
        int[] prefill = quick ? [4096, 16384] : [4096, 16384, 32768, 65536];
        foreach (int n in prefill)
        {
            // ORT 1.29's CPU GQA needs no S x T score buffer (measured peak extra memory 1.2 GB at
            // 64k), so it runs unchunked at every length; should it fail (memory), the row says so.
            // From 64k on, our dense mode runs too, for the sparse/dense ratio.
            var runs = new List<Action> { new PrefillRun(oursPrefill, n, 2).Touched().Run, new PrefillRun(gqa, n, null).Touched().Run };
            if (n >= 65536) runs.Add(new PrefillRun(oursPrefill, n, 1).Touched().Run);
            string gqaError = "";
            var times = TimeInterleaved(n <= 4096 ? 5 : 1, n <= 4096, [.. runs], failure => gqaError = failure);
            var (s, g) = (times[0], times[1]);
            bool gqaRan = gqaError.Length == 0;
            rows.Add(new Row($"prefill {n / 1024}k", "ours sparse", s.Ms, gqaRan ? g.Ms / s.Ms : null, s.PeakMb, ""));
            rows.Add(gqaRan
                ? new Row($"prefill {n / 1024}k", "GQA", g.Ms, 1, g.PeakMb, "")
                : new Row($"prefill {n / 1024}k", "GQA", double.NaN, null, 0, $"GQA failed: {gqaError}"));
            if (n >= 65536)
                rows.Add(new Row($"prefill {n / 1024}k", "ours dense", times[2].Ms, gqaRan ? g.Ms / times[2].Ms : null, times[2].PeakMb, $"sparse/dense = {times[2].Ms / s.Ms:F2}x"));
        }
        PrintRows(rows.Where(r => r.Case.StartsWith("prefill", StringComparison.Ordinal)));

        Console.WriteLine();
        Console.WriteLine("dense mode where dense is what runs");
        var denseRows = new List<Row>();
        foreach (int n in new[] { 1024, 4096 })
        {
            var t = TimeInterleaved(n <= 1024 ? 9 : 5, true, [new PrefillRun(gqa, n, null).Touched().Run, new PrefillRun(oursPrefill, n, 1).Touched().Run]);
            var (g, o) = (t[0], t[1]);
            denseRows.Add(new Row($"dense prefill {n / 1024}k", "GQA", g.Ms, 1, g.PeakMb, ""));
            denseRows.Add(new Row($"dense prefill {n / 1024}k", "ours dense", o.Ms, g.Ms / o.Ms, o.PeakMb, ""));
        }
        {
            var (g, gm) = Decode(gqa, 8192, null, reps);
            var (o, om) = Decode(ours, 8192, 1, reps);
            denseRows.Add(new Row("dense decode 8k", "GQA", g, 1, gm, ""));
            denseRows.Add(new Row("dense decode 8k", "ours dense", o, g / o, om, ""));
        }
        PrintRows(denseRows);
        rows.AddRange(denseRows);

        Console.WriteLine();
        Console.WriteLine("stage split of sparse calls (native stage benchmark, same kernel, same shapes)");
        var stages = new List<JsonElement>();
        foreach (var (phase, n) in decodeContexts.Select(c => ("decode", c)).Concat(prefill.Where(p => p <= 16384).Select(p => ("prefill", p))))
        {
            if (StageSplit(phase, n) is { } st)
            {
                stages.Add(st);
                double tot = st.GetProperty("total_ms").GetDouble();
                double sel = st.GetProperty("select_ms").GetDouble() + st.GetProperty("compress_ms").GetDouble();
                Console.WriteLine($"{phase,-8} {n / 1024,4}k  compression {st.GetProperty("compress_ms").GetDouble(),9:F3} ms  selection {st.GetProperty("select_ms").GetDouble(),9:F3} ms  attention {st.GetProperty("attend_ms").GetDouble(),9:F3} ms  (selection+compression {sel / tot:P0} of {tot:F3} ms, isa {st.GetProperty("isa").GetString()})");
                if (phase == "decode" && st.TryGetProperty("select_parts_ms", out var parts))
                    Console.WriteLine($"{"",15}selection parts: scoring {parts.GetProperty("score").GetDouble():F3} ms, normalizers {parts.GetProperty("lse").GetDouble():F3} ms, group sum {parts.GetProperty("group_sum").GetDouble():F3} ms, pooling + top-k {parts.GetProperty("topk").GetDouble():F3} ms");
                if (SelectionFloor(st) is { } floor)
                    Console.WriteLine($"{"",15}selection floor: {st.GetProperty("stage1_madds").GetDouble() / 1e6:F1} M stage-1 multiply-adds at the measured fp32 FMA peak ({st.GetProperty("fma_peak_gflops").GetDouble():F0} GFLOP/s) take {floor.Ms:F3} ms (scoring runs at {floor.Ms / st.GetProperty("select_parts_ms").GetProperty("score").GetDouble():P0} of it); with the rest of the step as measured, selection would be {floor.Share:P0} of it");
            }
        }
        extra["stage_split"] = stages;
        extra["targets"] = PrintTargets(rows, roofline, stages).Select(t => new { name = t.Name, wanted = t.Wanted, measured = t.Measured, met = t.Met, note = t.Note });
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

    private sealed record Target(string Name, string Wanted, double Measured, bool Met, string Note = "");

    // The least time the selection of a decode step can take in fp32: stage 1's multiply-adds at
    // the FMA peak measured in the same process (the stage benchmark reports both), and the share
    // of the step it would then have with everything else as measured. Null where not measured.
    private static (double Ms, double Share)? SelectionFloor(JsonElement st)
    {
        if (!st.TryGetProperty("select_floor_ms", out var f) || f.GetDouble() <= 0) return null;
        double floorMs = f.GetDouble();
        double rest = st.GetProperty("total_ms").GetDouble() - st.GetProperty("select_ms").GetDouble();
        return (floorMs, floorMs / (floorMs + rest));
    }

    // The issue's targets, each judged on this run's figures (cases a --quick run lacks are left out).
    private static List<Target> PrintTargets(List<Row> rows, List<Dictionary<string, object?>> roofline, List<JsonElement> stages)
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
        foreach (var st in stages)
            if (st.GetProperty("phase").GetString() == "decode" && st.GetProperty("length").GetInt32() == 131072)
                AtMost("sparse decode 128k: selection's share of the step", st.GetProperty("select_ms").GetDouble() / st.GetProperty("total_ms").GetDouble(), 0.25, "",
                       SelectionFloor(st) is { } floor ? $"fp32 floor {floor.Share:0.00}: stage 1 at the FMA peak, the rest as measured" : "");
        Console.WriteLine();
        Console.WriteLine("targets (see docs/benchmarks.md), judged on this run");
        foreach (var t in targets)
            Console.WriteLine($"  {(t.Met ? "met   " : "MISSED")}  {t.Name,-52} {t.Measured,8:0.00} (wanted {t.Wanted}{(t.Note.Length > 0 ? "; " + t.Note : "")})");
        return targets;
    }

    // Complete level-1 windows (32 tokens, stride 16) of a context: the compressed-key rows.
    private static long Windows(int ctx) => (ctx - 32) / 16 + 1;

    // Bytes a sparse decode step reads at least: the selected K/V rows (96 blocks of 64) and every
    // level-1 compressed key once (level-2 scores are derived from level-1 ones), fp32.
    private static double DecodeBytesRead(int ctx) => 4.0 * D * (2 * Math.Min(ctx, 96 * 64) + Windows(ctx));

    private static void PrintRows(IEnumerable<Row> rows)
    {
        Console.WriteLine($"{"case",-20} {"op",-12} {"ms",11} {"x GQA",8} {"peak extra MB",14}  note");
        foreach (var r in rows)
            Console.WriteLine($"{r.Case,-20} {r.Op,-12} {r.Ms,11:F3} {(r.RatioToGqa is double x ? $"{x:F2}x" : "-"),8} {r.PeakExtraMb,14}  {r.Note}");
    }

    private static InferenceSession Session(SessionOptions options, AttentionOpKind kind, bool withState, int hkv = Hkv, bool fp16 = false)
    {
        var model = AttentionNodeModels.Build(new AttentionNodeConfig
        {
            Kind = kind, NumHeads = G * hkv, KvNumHeads = hkv, WithPast = true,
            ElementType = fp16 ? TensorProto.Types.DataType.Float16 : TensorProto.Types.DataType.Float,
            WithAttentionMode = kind == AttentionOpKind.Switchable, WithCompressedState = withState && kind == AttentionOpKind.Switchable,
        });
        return new InferenceSession(OnnxModelFile.ToBytes(model), options);
    }

    private static float[] Random(int n, int seed)
    {
        var rng = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
        return a;
    }

    /// <summary>
    /// One decode step at context <paramref name="ctx"/> with shared KV (and compressed-key)
    /// buffers, <paramref name="hkv"/> KV heads of G query heads each; median ms and peak extra MB.
    /// </summary>
    private static (double Ms, long PeakMb) Decode(InferenceSession s, int ctx, int? mode, int reps, int hkv = Hkv, bool cold = false, bool fp16 = false)
    {
        // Tensors of the session's element type (fp16 models: the same values rounded to fp16).
        OrtValue Tensor(float[] data, long[] shape) => fp16
            ? OrtValue.CreateTensorValueFromMemory(data.Select(x => (Float16)x).ToArray(), shape)
            : OrtValue.CreateTensorValueFromMemory(data, shape);
        var key = Random(ctx * D * hkv, 1);
        var value = Random(ctx * D * hkv, 2);
        var q = Random(G * hkv * D, 3);
        var k = Random(hkv * D, 4);
        var v = Random(hkv * D, 5);
        var output = new float[G * hkv * D];
        using var qv = Tensor(q, [1, 1, G * hkv * D]);
        using var kv = Tensor(k, [1, 1, hkv * D]);
        using var vv = Tensor(v, [1, 1, hkv * D]);
        using var cacheK = Tensor(key, [1, hkv, ctx, D]);
        using var cacheV = Tensor(value, [1, hkv, ctx, D]);
        using var seq = OrtValue.CreateTensorValueFromMemory(new[] { ctx - 1 }, [1]);
        using var total = OrtValue.CreateTensorValueFromMemory(new[] { ctx }, []);
        using var modeV = OrtValue.CreateTensorValueFromMemory(new[] { mode ?? 0 }, []);
        using var outV = Tensor(output, [1, 1, G * hkv * D]);
        var names = new List<string> { "query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length" };
        var values = new List<OrtValue> { qv, kv, vv, cacheK, cacheV, seq, total };
        var outNames = new List<string> { "output", "present_key", "present_value" };
        var outValues = new List<OrtValue> { outV, cacheK, cacheV };
        OrtValue? comp = null;
        if (mode is not null)
        {
            names.Add("attention_mode"); values.Add(modeV);
            if (s.InputNames.Contains("past_compressed_key"))
            {
                long windows = Windows(ctx);
                // The state a session carries: the mean of every complete 32-token window (stride 16).
                var state = new float[windows * D * hkv];
                for (long h = 0; h < hkv; h++)
                    for (long j = 0; j < windows; j++)
                        for (int t = 0; t < 32; t++)
                            for (int d = 0; d < D; d++) state[(h * windows + j) * D + d] += key[(h * ctx + j * 16 + t) * D + d] / 32f;
                comp = Tensor(state, [1, hkv, windows, D]);
                names.Add("past_compressed_key"); values.Add(comp);
                outNames.Add("present_compressed_key"); outValues.Add(comp);
            }
        }
        try
        {
            return Time(() =>
            {
                using var ro = new RunOptions();
                s.Run(ro, names, values, outNames, outValues);
            }, reps, beforeEach: cold ? EvictCaches : null);
        }
        finally
        {
            comp?.Dispose();
        }
    }

    /// <summary>A causal prefill of <c>n</c> tokens through one session, with its inputs made once.</summary>
    private sealed class PrefillRun(InferenceSession s, int n, int? mode)
    {
        private readonly float[] q = Random(n * G * D, 6), k = Random(n * Hkv * D, 7), v = Random(n * Hkv * D, 8);
        private readonly float[] cacheK = new float[n * Hkv * D], cacheV = new float[n * Hkv * D];
        private readonly float[] output = new float[n * G * D];

        // Outputs are made and touched once (every page written), so that a run's peak extra
        // memory counts what the op allocates, not the first write of the bench's own buffers.
        public PrefillRun Touched()
        {
            Array.Fill(output, 1f);
            Array.Fill(cacheK, 1f);
            Array.Fill(cacheV, 1f);
            return this;
        }

        public void Run()
        {
            using var ck = OrtValue.CreateTensorValueFromMemory(cacheK, [1, Hkv, n, D]);
            using var cv = OrtValue.CreateTensorValueFromMemory(cacheV, [1, Hkv, n, D]);
            using var qv = OrtValue.CreateTensorValueFromMemory(q, [1, n, G * D]);
            using var kv = OrtValue.CreateTensorValueFromMemory(k, [1, n, Hkv * D]);
            using var vv = OrtValue.CreateTensorValueFromMemory(v, [1, n, Hkv * D]);
            using var seq = OrtValue.CreateTensorValueFromMemory(new[] { n - 1 }, [1]);
            using var total = OrtValue.CreateTensorValueFromMemory(new[] { n }, []);
            using var modeV = OrtValue.CreateTensorValueFromMemory(new[] { mode ?? 0 }, []);
            using var outV = OrtValue.CreateTensorValueFromMemory(output, [1, n, G * D]);
            var names = new List<string> { "query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length" };
            var values = new List<OrtValue> { qv, kv, vv, ck, cv, seq, total };
            if (mode is not null) { names.Add("attention_mode"); values.Add(modeV); }
            using var ro = new RunOptions();
            s.Run(ro, names, values, ["output", "present_key", "present_value"], [outV, ck, cv]);
        }
    }

    /// <summary>
    /// Times runs alternately (a, b, a, b, ...; after one warm-up of each when asked): a drift in
    /// the shared machine's speed during the measurement then hits all alike, where timing all of
    /// one before all of the other let it decide ratios near a target (dense prefill 4k measured
    /// 0.84 and 0.93 of GQA in two back-to-back runs). Median ms and peak extra MB of each. When
    /// <paramref name="onFailure"/> is given, an ORT error of run 1 (GQA) is passed to it and that
    /// run is dropped from the rest of the measurement.
    /// </summary>
    private static (double Ms, long PeakMb)[] TimeInterleaved(int reps, bool warmup, Action[] runs, Action<string>? onFailure = null)
    {
        var failed = new bool[runs.Length];
        bool Try(int i, Action body)
        {
            if (failed[i]) return false;
            try { body(); return true; }
            catch (OnnxRuntimeException e) when (i == 1 && onFailure is not null)
            {
                failed[i] = true;
                onFailure(e.Message.Split('\n')[0]);
                return false;
            }
        }
        if (warmup)
            for (int i = 0; i < runs.Length; i++) Try(i, runs[i]);
        var times = runs.Select(_ => new List<double>()).ToArray();
        var peaks = new long[runs.Length];
        for (int r = 0; r < reps; r++)
            for (int i = 0; i < runs.Length; i++)
                Try(i, () => peaks[i] = Math.Max(peaks[i], Measure(runs[i], times[i])));
        return [.. times.Select((t, i) => t.Count == 0 ? (double.NaN, 0L) : (Median(t), Math.Max(0, peaks[i]) / (1 << 20)))];
    }

    // Runs once, appends the time in ms, returns the growth of the peak RSS in bytes.
    private static long Measure(Action run, List<double> times)
    {
        long before = ResetPeak();
        var sw = Stopwatch.StartNew();
        run();
        times.Add(sw.Elapsed.TotalMilliseconds);
        return PeakRss() - before;
    }

    private static double Median(List<double> times)
    {
        times.Sort();
        return times[times.Count / 2];
    }

    private static (double Ms, long PeakMb) Time(Action run, int reps, bool warmup = true, Action? beforeEach = null)
    {
        if (warmup) run();
        long peak = 0;
        var times = new List<double>();
        for (int i = 0; i < reps; i++)
        {
            beforeEach?.Invoke();
            peak = Math.Max(peak, Measure(run, times));
        }
        return (Median(times), Math.Max(0, peak) / (1 << 20));
    }

    // Reads 128 MiB (four times the 32 MB L3) so that the next step finds none of its data in the
    // caches, as in a model whose other layers ran in between. The buffer is written once first: an
    // untouched one maps every page to the kernel's single zero page, whose reads evict nothing.
    private static float[]? evictor;

    private static void EvictCaches()
    {
        if (evictor is null)
        {
            evictor = new float[32 << 20];
            Array.Fill(evictor, 1f);
        }
        if (!(SumOf(evictor) > 0)) throw new InvalidOperationException("cache eviction: the buffer was not read");
    }

    // Linux: writing 5 to /proc/self/clear_refs resets the peak RSS (VmHWM) to the current RSS.
    private static long ResetPeak()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        return StatusKb("VmRSS:") * 1024;
    }

    private static long PeakRss() => StatusKb("VmHWM:") * 1024;

    private static long StatusKb(string key)
    {
        try
        {
            var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith(key, StringComparison.Ordinal));
            return line is null ? 0 : long.Parse(line[key.Length..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (IOException) { return 0; }
    }

    private static double CopyBandwidth()
    {
        const int size = 256 << 20;
        var src = new byte[size];
        var dst = new byte[size];
        new Random(1).NextBytes(src.AsSpan(0, 4096));
        int parts = Environment.ProcessorCount;
        var (ms, _) = Time(() => Parallel.For(0, parts, i => src.AsSpan(size / parts * i, size / parts).CopyTo(dst.AsSpan(size / parts * i))), 6, warmup: false);
        return size / (ms * 1e-3) / 1e9;
    }

    // Bytes per second of summing a 256 MiB fp32 array (far beyond the last-level cache) on every
    // core, four independent vector sums per thread; median of 6.
    private static double ReadBandwidth()
    {
        const int count = 64 << 20;
        var data = new float[count];
        Array.Fill(data, 1.0f);  // touch every page before timing
        int parts = Environment.ProcessorCount;
        var sums = new float[parts];
        var (ms, _) = Time(() => Parallel.For(0, parts, i => sums[i] = SumOf(data.AsSpan(count / parts * i, count / parts))), 6, warmup: false);
        if (sums.Any(x => x <= 0)) throw new InvalidOperationException("read bandwidth: the sums were not computed");
        return 4.0 * count / (ms * 1e-3) / 1e9;
    }

    private static float SumOf(ReadOnlySpan<float> x)
    {
        var v = System.Runtime.InteropServices.MemoryMarshal.Cast<float, System.Numerics.Vector<float>>(x);
        System.Numerics.Vector<float> a = default, b = default, c = default, d = default;
        int i = 0;
        for (; i + 4 <= v.Length; i += 4)
        {
            a += v[i];
            b += v[i + 1];
            c += v[i + 2];
            d += v[i + 3];
        }
        for (; i < v.Length; i++) a += v[i];
        return System.Numerics.Vector.Sum(a + b + c + d);
    }

    private static double MatMulThroughput(SessionOptions options)
    {
        const int n = 1024;
        var g = new GraphProto { Name = "matmul" };
        g.Input.Add(GraphBuilder.Tensor("a", TensorProto.Types.DataType.Float, n, n));
        g.Input.Add(GraphBuilder.Tensor("b", TensorProto.Types.DataType.Float, n, n));
        g.Output.Add(GraphBuilder.Tensor("c", TensorProto.Types.DataType.Float, n, n));
        g.Node.Add(GraphBuilder.Node("MatMul", "", ["a", "b"], ["c"]));
        using var s = new InferenceSession(OnnxModelFile.ToBytes(GraphBuilder.Model(g, ("", 17))), options);
        using var a = OrtValue.CreateTensorValueFromMemory(Random(n * n, 9), [n, n]);
        using var b = OrtValue.CreateTensorValueFromMemory(Random(n * n, 10), [n, n]);
        var (ms, _) = Time(() =>
        {
            using var ro = new RunOptions();
            using var r = s.Run(ro, ["a", "b"], [a, b], ["c"]);
        }, 7);
        return 2.0 * n * n * n / (ms * 1e-3) / 1e9;
    }

    private static JsonElement? StageSplit(string phase, int n)
    {
        var exe = Path.Combine(AppContext.BaseDirectory, "infllmv2_stage_bench");
        if (!File.Exists(exe)) { Console.WriteLine($"(stage benchmark not found at {exe})"); return null; }
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in new[] { phase, n.ToString(System.Globalization.CultureInfo.InvariantCulture), "--repeat", phase == "decode" ? "10" : "1" })
            psi.ArgumentList.Add(arg);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return p.ExitCode == 0 ? JsonDocument.Parse(stdout).RootElement.Clone() : null;
    }
}
