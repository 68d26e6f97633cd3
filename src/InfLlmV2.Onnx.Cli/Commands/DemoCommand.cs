using System.CommandLine;
using System.Diagnostics;
using InfLlmV2.Onnx.Cli.Text;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.OpContract;
using InfLlmV2.Onnx.Session;
using InfLlmV2.Onnx.Text;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InfLlmV2.Onnx.Cli.Commands;

/// <summary>
/// <c>infllmv2 demo</c>, the main job on the embedded default model: (1) one decode step of a
/// one-node SwitchableAttention model on 16k-, 64k- and 128k-token contexts in dense and sparse
/// mode, with a planted "needle" block; (2) generate the default tiny GQA decoder, rewrite it, and
/// compare original vs rewritten on a short prompt (dense: must agree) and a 32k-token one
/// (sparse), timing both; the summary prints the speed-ups measured.
/// </summary>
public static class DemoCommand
{
    private const int Heads = 16, KvHeads = 1, HeadSize = 64;
    private static readonly int[] Contexts = [16384, 65536, 131072];

    // The one-node model sets no sparse attribute: the op runs with its defaults.
    private static readonly SparseAttentionSettings OpDefaults = SparseAttentionSettings.Defaults;

    // The model's position table grows with the long prompt: 256k tokens at most.
    private const int MaxLongPrompt = 1 << 18;

    /// <summary>Creates the command.</summary>
    public static Command Create()
    {
        var cmd = new Command("demo", "The op at 16k, 64k and 128k (dense vs sparse), then the default model: generate, rewrite, compare original vs rewritten");
        var longLen = new Option<int>("--long-prompt") { Description = "Length of the long (sparse) prompt", DefaultValueFactory = _ => 32768 };
        cmd.Options.Add(longLen);
        var threads = ThreadsOption.Create();
        cmd.Options.Add(threads);
        var outDir = new Option<string?>("--output-dir")
        {
            Description = "Folder for the generated and rewritten demo models (default: demo-models/ next to the program)",
        };
        cmd.Options.Add(outDir);
        var force = new Option<bool>("--force") { Description = "Replace files in --output-dir that the demo did not write (or that changed since)" };
        cmd.Options.Add(force);
        cmd.SetAction(r => CommandRunner.Guard(() =>
        {
            int n = (int)CommandRunner.InRange("--long-prompt", r.GetValue(longLen), 64, MaxLongPrompt);
            int threadCount = ThreadsOption.Value(r.GetValue(threads));
            string? asked = r.GetValue(outDir);
            var dir = DemoFolder(asked);
            CheckTargets(dir, ownFolder: string.IsNullOrWhiteSpace(asked), r.GetValue(force));
            var sw = Stopwatch.StartNew();
            var existed = DemoFiles.Where(f => SafeFiles.Kind(Path.Combine(dir, f), followLinks: false) != FileKind.Missing).ToHashSet();
            int code;
            using (var progress = Progress.CliProgress.Start("demo", 2))
            {
                progress.Describe("1. the op at 16k, 64k and 128k");
                var opRows = RunOpDemo(threadCount, Path.Combine(dir, DemoNeedleMap.FileName));
                progress.Advance();
                progress.Describe("2. the default model: generate, rewrite, compare");
                code = RunModelDemo(n, dir, threadCount, opRows, existed);
                progress.Advance();
            }
            Console.WriteLine($"demo finished in {sw.Elapsed.TotalSeconds:F1} s");
            return code;
        }));
        return cmd;
    }

    // The files the demo writes into its folder, and the record of what it wrote last (name -> SHA-256).
    private static readonly string[] DemoFiles = ["tiny-decoder.onnx", "tiny-decoder.onnx.data", "tiny-decoder.infllmv2.onnx", ModelTokenizer.JsonFile, ModelFolder.TokenizerConfigFile, DemoNeedleMap.FileName];
    private const string Manifest = ".infllmv2-demo.json";

    // The demo's model folder: the one asked for, else demo-models/ next to the program. Refused
    // (exit 2) before any work when it is not a folder or cannot be created or written.
    private static string DemoFolder(string? asked)
    {
        var dir = Path.GetFullPath(string.IsNullOrWhiteSpace(asked) ? Path.Combine(AppContext.BaseDirectory, "demo-models") : asked);
        var kind = SafeFiles.Kind(dir, followLinks: true);
        if (kind is not (FileKind.Missing or FileKind.Directory))
            throw new UsageException($"--output-dir {dir} is {(kind == FileKind.Regular ? "a file" : SafeFiles.Describe(kind))}, not a folder");
        if (kind == FileKind.Missing && SafeFiles.Kind(dir, followLinks: false) == FileKind.SymbolicLink)
            throw new UsageException($"--output-dir {dir} is a dangling symbolic link");
        try
        {
            Directory.CreateDirectory(dir);
            var probe = Path.Combine(dir, $".write-probe-{Environment.ProcessId}");
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write)) { }  // O_EXCL: never through a link
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"cannot write the demo models to {dir} ({e.Message}); choose a folder with --output-dir");
        }
        return dir;
    }

    /// <summary>
    /// Before any work: every file the demo will write must be missing or a regular file reached
    /// through no link (never written through, whatever --force says); in a folder given with
    /// --output-dir an existing one is replaced only when the demo wrote it and it is unchanged
    /// since (its SHA-256 in the folder's manifest), or with --force. Its own default folder is its own.
    /// </summary>
    private static void CheckTargets(string dir, bool ownFolder, bool force)
    {
        var written = ReadManifest(dir);
        foreach (var name in DemoFiles.Append(Manifest))
        {
            var path = Path.Combine(dir, name);
            try
            {
                SafeFiles.CheckNoLinkBelow(dir, path, "demo output");
                SafeFiles.CheckWritableTarget(path, "demo output");
            }
            catch (IOException e)
            {
                throw new UsageException(e.Message);
            }
            if (ownFolder || force || name == Manifest || SafeFiles.Kind(path, followLinks: false) == FileKind.Missing) continue;
            if (!written.TryGetValue(name, out var hash) || hash != Hash(path))
                throw new UsageException($"--output-dir: {path} exists and was not written by the demo (or changed since); pass --force to replace it, or choose another folder");
        }
    }

    private static Dictionary<string, string> ReadManifest(string dir)
    {
        var path = Path.Combine(dir, Manifest);
        try
        {
            if (SafeFiles.Kind(path, followLinks: false) != FileKind.Regular) return [];
            var doc = System.Text.Json.JsonSerializer.Deserialize<Dictionary<string, string>>(SafeFiles.ReadBounded(path, "demo manifest", 1 << 16));
            return doc ?? [];
        }
        catch (Exception e) when (e is IOException or InvalidDataException or System.Text.Json.JsonException or NotSupportedException)
        {
            return [];  // an unreadable manifest vouches for nothing
        }
    }

    private static string Hash(string path)
    {
        using var stream = SafeFiles.OpenRegular(path, "demo output", long.MaxValue);
        return Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(stream));
    }

    // Writes the demo's models and tokenizer; on a failure (a full disk) every file this run created is removed again.
    // existed: the demo's files present before this run (the needle map is written before the models).
    private static void WriteModels(string dir, TinyDecoderConfig config, string original, string rewritten, HashSet<string> existed, out List<AttentionSite> sites)
    {
        try
        {
            TinyDecoderGenerator.Save(TinyDecoderGenerator.Generate(config), original, externalData: true);
            var model = OnnxModelFile.Load(original);
            sites = AttentionRewriter.Rewrite(model, new RewriteOptions { AttentionModeInput = true, CompressedState = true });
            ModelWriter.Save(model, original, rewritten, force: true);
            TinyTokenizer.Write(dir, config.Vocab);  // so `generate --prompt TEXT` works on the default model
            TinyTokenizer.WriteConfig(dir);  // and `generate --chat TEXT` (its chat template)
            var manifest = DemoFiles.ToDictionary(f => f, f => Hash(Path.Combine(dir, f)));
            SafeFiles.WriteAtomically(Path.Combine(dir, Manifest), s => s.Write(System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(manifest)), "demo manifest");
        }
        catch
        {
            foreach (var f in DemoFiles.Where(f => !existed.Contains(f))) SafeFiles.TryDelete(Path.Combine(dir, f));
            throw;
        }
    }

    private static int RunModelDemo(int longPrompt, string dir, int threads, List<OpRow> opRows, HashSet<string> existed)
    {
        Console.WriteLine();
        Console.WriteLine("== 2. default model: generate, rewrite, compare ==");
        // Positions for the long prompt and its decode steps (the default table holds 32k).
        var config = TinyDecoderConfig.Default with { MaxPositions = Math.Max(TinyDecoderConfig.Default.MaxPositions, (longPrompt + 64 + 1023) / 1024 * 1024) };
        var original = Path.Combine(dir, "tiny-decoder.onnx");
        var rewritten = Path.Combine(dir, "tiny-decoder.infllmv2.onnx");
        WriteModels(dir, config, original, rewritten, existed, out var sites);
        Console.WriteLine($"model: {config.Layers} layers, H={config.NumHeads} Hkv={config.KvNumHeads} D={config.HeadSize}, vocab {config.Vocab} -> {original}");
        // The two models take turns step by step: each pool stops spinning when its Run returns.
        using var optionsA = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL }.TakingTurns();
        using var optionsB = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL }.TakingTurns();
        using var a = DecoderModel.Open(original, optionsA, threads: threads);
        using var b = DecoderModel.Open(rewritten, optionsB, threads: threads);
        Console.WriteLine($"sessions: {threads} intra-op thread(s) each (--threads)");
        var settings = b.SwitchableNodes.Distinct().ToList();
        Console.WriteLine($"rewritten: {sites.Count(s => s.Rewritten)}/{sites.Count} attention sites -> {rewritten} ("
            + string.Join("; ", settings.Select(s => $"dense_len {s.DenseLen}, budget {s.BlockBudget} blocks of {s.BlockSize} tokens")) + ")");
        var rows = new List<(string Name, List<ComparisonStep> Steps)>();
        Console.WriteLine();
        Console.WriteLine("short prompt (128 tokens, auto -> dense):");
        var shortSteps = ModelComparison.Run(a, b, CompareCommand.RandomPrompt(128, config.Vocab, 1), 8, AttentionMode.Auto);
        ModelComparison.Print(shortSteps, Console.Out);
        rows.Add(("short/dense", shortSteps));
        Console.WriteLine();
        Console.WriteLine($"long prompt ({longPrompt} tokens, auto -> sparse from {string.Join("/", settings.Select(s => s.DenseLen).Distinct())} tokens):");
        var longSteps = ModelComparison.Run(a, b, CompareCommand.RandomPrompt(longPrompt, config.Vocab, 2), 8, AttentionMode.Auto);
        ModelComparison.Print(longSteps, Console.Out);
        rows.Add(("long/" + longSteps[^1].Mode.ToString().ToLowerInvariant(), longSteps));

        Console.WriteLine();
        GenerateFromText(b, rewritten);

        Console.WriteLine();
        Console.WriteLine("summary");
        Console.WriteLine($"{"case",-14} {"steps",6} {"top-1 agree",12} {"max|dlogits|",13} {"max KL",10} {"orig s",8} {"rewr s",8}");
        foreach (var (name, steps) in rows)
            Console.WriteLine($"{name,-14} {steps.Count,6} {100.0 * steps.Count(s => s.Top1Agrees) / steps.Count,11:F0}% {steps.Max(s => s.MaxAbsDiff),13:G3} {steps.Max(s => s.KlDivergence),10:G3} {steps.Sum(s => s.OriginalMs) / 1000,8:F2} {steps.Sum(s => s.RewrittenMs) / 1000,8:F2}");
        Console.WriteLine();
        Console.WriteLine("speed-ups measured in this run");
        foreach (var o in opRows)
            Console.WriteLine($"  op decode step at {o.Context / 1024}k: sparse {o.SparseMs:F2} ms vs dense {o.DenseMs:F2} ms = {o.DenseMs / o.SparseMs:F1}x "
                + $"(needle block {o.NeedleBlock} {(o.NeedleFound ? "found" : "NOT found")})");
        var (prefillA, prefillB) = (longSteps[0].OriginalMs, longSteps[0].RewrittenMs);
        var decodes = longSteps.Skip(1).ToList();
        Console.WriteLine($"  model prefill of {longPrompt} tokens: rewritten {prefillB / 1000:F2} s vs original {prefillA / 1000:F2} s = {prefillA / prefillB:F2}x");
        if (decodes.Count > 0)
        {
            // Median of the decode steps (the first after a prefill can be slower).
            static double Median(IEnumerable<double> x) => x.Order().ElementAt(x.Count() / 2);
            double da = Median(decodes.Select(s => s.OriginalMs)), db = Median(decodes.Select(s => s.RewrittenMs));
            Console.WriteLine($"  model decode step at {longPrompt / 1024}k (median of {decodes.Count}): rewritten {db:F1} ms vs original {da:F1} ms = {da / db:F2}x");
        }
        bool denseAgrees = shortSteps.All(s => s.Top1Agrees && s.MaxAbsDiff <= 1e-3);
        Console.WriteLine(denseAgrees ? "dense mode agrees with the original model." : "ERROR: dense mode disagrees with the original model.");
        return denseAgrees ? ExitCodes.Ok : ExitCodes.Mismatch;
    }

    // Text in, text out on the rewritten model with the folder's tiny tokenizer (random weights: the text means nothing).
    private static void GenerateFromText(DecoderModel model, string path)
    {
        const string prompt = "The sparse mode keeps the first block";
        var tokenizer = ModelTokenizer.ForModel(path);
        var ids = tokenizer.Encode(prompt);
        Console.WriteLine($"text prompt \"{prompt}\" -> {ids.Length} tokens ({tokenizer.Kind} via {tokenizer.Engine}, {tokenizer.Path}); 16 greedy tokens:");
        using var session = new DecoderSession(model, new DecoderSessionOptions { Capacity = ids.Length + 16 });
        var decoder = new StreamingDecoder(tokenizer);
        Console.Write("  ");
        foreach (var token in session.Generate(ids, new GenerationOptions { MaxNewTokens = 16 }))
            Console.Write(decoder.Add(token).ReplaceLineEndings(" "));
        Console.WriteLine(decoder.Flush().ReplaceLineEndings(" "));
        Console.WriteLine($"  (try: ./infllmv2 generate {Path.GetRelativePath(Environment.CurrentDirectory, path)} --prompt \"your text\")");
    }

    // One decode step of the one-node model at each context, dense then sparse: median ms of
    // OpRepeats timed steps after a warm-up, whether sparse mode selected the needle block, and the
    // largest difference of its output from dense mode's.
    private sealed record OpRow(int Context, int NeedleBlock, double DenseMs, double SparseMs, int SparseBlocks, int SparseTokens, bool NeedleFound, double MaxDiff);

    private const int OpRepeats = 5;

    private static List<OpRow> RunOpDemo(int threads, string mapPath)
    {
        Console.WriteLine("== 1. SwitchableAttention, one node ==");
        var model = AttentionNodeModels.Build(new AttentionNodeConfig
        {
            NumHeads = Heads, KvNumHeads = KvHeads, WithAttentionMode = true, WithSelectedBlocks = true, WithCompressedState = true,
        });
        using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL, IntraOpNumThreads = threads };
        options.RegisterInfLlmV2Ops();
        using var session = new InferenceSession(OnnxModelFile.ToBytes(model), options);
        Console.WriteLine($"SwitchableAttention decode step: H={Heads} Hkv={KvHeads} D={HeadSize}, {threads} thread(s); a needle block planted 3/8 into each context");
        Console.WriteLine($"onnxruntime {OrtEnv.Instance().GetVersionString()}, op library {NativeOpLibrary.Locate()}");
        Console.WriteLine();
        Console.WriteLine($"{"context",8} {"mode",-7}{"time ms",10}{"blocks",8}{"tokens",8}{"needle",8}{"max|out-dense|",16}{"speed-up",10}");
        var rows = new List<OpRow>();
        foreach (int context in Contexts)
        {
            var row = OpDecodeRow(session, context);
            rows.Add(row);
            int blocks = (context + (int)OpDefaults.BlockSize - 1) / (int)OpDefaults.BlockSize;
            Console.WriteLine($"{context,8} {"dense",-7}{row.DenseMs,10:F2}{blocks,8}{context,8}{"yes",8}{0.0,16:G3}{"",10}");
            Console.WriteLine($"{context,8} {"sparse",-7}{row.SparseMs,10:F2}{row.SparseBlocks,8}{row.SparseTokens,8}{(row.NeedleFound ? "yes" : "NO"),8}{row.MaxDiff,16:G3}{row.DenseMs / row.SparseMs,9:F1}x");
        }
        Console.WriteLine();
        var d = OpDefaults;
        long local = d.SparseWindowTokens / d.BlockSize + 1;  // the window's blocks and the query's own
        Console.WriteLine($"Sparse mode attends to the {d.InitBlocks} init block(s), the {local} local blocks and the {d.BlockBudget - d.InitBlocks - local} "
            + $"top-scored blocks ({d.BlockBudget} x {d.BlockSize} = {d.BlockBudget * d.BlockSize} tokens), whatever the context.");

        // The first context's needle case as a selection map (a chunk of its last queries; no compressed-state input).
        var mapModel = AttentionNodeModels.Build(new AttentionNodeConfig
        {
            NumHeads = Heads, KvNumHeads = KvHeads, WithAttentionMode = true, WithSelectedBlocks = true,
        });
        using var mapSession = new InferenceSession(OnnxModelFile.ToBytes(mapModel), options);
        var (mapKey, mapValue, mapDirection, mapNeedle, _) = NeedleCase(Contexts[0]);
        DemoNeedleMap.Write(mapSession, mapPath, mapKey, mapValue, mapDirection, Heads, HeadSize, Contexts[0], mapNeedle, OpDefaults);
        Console.WriteLine($"selection map of the {Contexts[0] / 1024}k needle case (last {DemoNeedleMap.Rows} queries): {mapPath}");
        return rows;
    }

    // The needle case at `context`: K/V caches of `context` rows (the last one empty), noise except
    // block `needle`, whose keys are aligned with `direction` (the queries' direction).
    private static (float[] Key, float[] Value, float[] Direction, int Needle, Random Rng) NeedleCase(int context)
    {
        var rng = new Random(1234 + context);
        int past = context - 1, block = (int)OpDefaults.BlockSize, needle = context / block * 3 / 8;
        var cacheKey = new float[KvHeads * context * HeadSize];
        var cacheValue = new float[cacheKey.Length];
        var direction = new float[HeadSize];
        for (int i = 0; i < HeadSize; i++) direction[i] = (float)(rng.NextDouble() * 2 - 1);
        for (int i = 0; i < KvHeads * past * HeadSize; i++)
        {
            cacheKey[i] = (float)(rng.NextDouble() * 2 - 1);
            cacheValue[i] = (float)(rng.NextDouble() * 2 - 1);
        }
        for (int t = needle * block; t < (needle + 1) * block; t++)
            for (int i = 0; i < HeadSize; i++) cacheKey[t * HeadSize + i] = 2.5f * direction[i];
        return (cacheKey, cacheValue, direction, needle, rng);
    }

    // As a session runs a decode step: past and present bound to one K and one V buffer of
    // `context` rows, and the compressed-key state (the level-1 window means of the past keys) to
    // one buffer, so that the step reads what it needs and copies nothing.
    private static OpRow OpDecodeRow(InferenceSession session, int context)
    {
        var (cacheKey, cacheValue, direction, needle, rng) = NeedleCase(context);
        int past = context - 1, block = (int)OpDefaults.BlockSize;
        var query = new float[Heads * HeadSize];
        for (int h = 0; h < Heads; h++)
            for (int i = 0; i < HeadSize; i++) query[h * HeadSize + i] = direction[i] + 0.1f * (float)(rng.NextDouble() * 2 - 1);
        int kernel = (int)OpDefaults.CompressKernel, stride = (int)OpDefaults.CompressStride, budget = (int)OpDefaults.BlockBudget;
        int Windows(int tokens) => (int)OpDefaults.CompressedKeys(tokens);
        var state = new float[KvHeads * Windows(context) * HeadSize];
        for (int j = 0; j < Windows(past); j++)
            for (int t = 0; t < kernel; t++)
                for (int i = 0; i < HeadSize; i++)
                    state[j * HeadSize + i] += cacheKey[(j * stride + t) * HeadSize + i] / kernel;
        var key = new float[KvHeads * HeadSize];
        var value = new float[KvHeads * HeadSize];
        var output = new float[Heads * HeadSize];
        var selectedBuffer = new int[KvHeads * budget];
        using var q = OrtValue.CreateTensorValueFromMemory(query, [1, 1, Heads * HeadSize]);
        using var k = OrtValue.CreateTensorValueFromMemory(key, [1, 1, KvHeads * HeadSize]);
        using var v = OrtValue.CreateTensorValueFromMemory(value, [1, 1, KvHeads * HeadSize]);
        using var ck = OrtValue.CreateTensorValueFromMemory(cacheKey, [1, KvHeads, context, HeadSize]);
        using var cv = OrtValue.CreateTensorValueFromMemory(cacheValue, [1, KvHeads, context, HeadSize]);
        using var comp = OrtValue.CreateTensorValueFromMemory(state, [1, KvHeads, Windows(context), HeadSize]);
        using var seqlens = OrtValue.CreateTensorValueFromMemory(new[] { context - 1 }, [1]);
        using var total = OrtValue.CreateTensorValueFromMemory(new[] { context }, []);
        using var outV = OrtValue.CreateTensorValueFromMemory(output, [1, 1, Heads * HeadSize]);
        using var sel = OrtValue.CreateTensorValueFromMemory(selectedBuffer, [1, KvHeads, 1, budget]);
        float[]? dense = null;
        var (denseMs, sparseMs, maxDiff) = (0.0, 0.0, 0.0);
        int[] selected = [];
        foreach (int mode in new[] { 1, 2 })
        {
            using var modeValue = OrtValue.CreateTensorValueFromMemory(new[] { mode }, []);
            string[] names = ["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length", "attention_mode", "past_compressed_key"];
            OrtValue[] values = [q, k, v, ck, cv, seqlens, total, modeValue, comp];
            string[] outNames = ["output", "present_key", "present_value", "present_compressed_key", "selected_blocks"];
            OrtValue[] outValues = [outV, ck, cv, comp, sel];
            using var runOptions = new RunOptions();
            session.Run(runOptions, names, values, outNames, outValues);  // warm-up
            var first = output.ToArray();
            if (mode == 2) selected = selectedBuffer.Where(b => b >= 0).ToArray();
            var times = new List<double>();
            for (int r = 0; r < OpRepeats; r++)
            {
                var sw = Stopwatch.StartNew();
                session.Run(runOptions, names, values, outNames, outValues);
                times.Add(sw.Elapsed.TotalMilliseconds);
            }
            times.Sort();
            if (mode == 1) denseMs = times[times.Count / 2];
            else sparseMs = times[times.Count / 2];
            dense ??= first;
            maxDiff = first.Zip(dense, (a, b) => Math.Abs(a - b)).Max();
        }
        int tokens = selected.Sum(b => Math.Min(block, context - b * block));
        return new OpRow(context, needle, denseMs, sparseMs, selected.Length, tokens, selected.Contains(needle), maxDiff);
    }
}
