using System.CommandLine;
using System.Diagnostics;
using InfLlmV2.Onnx.Cli.Text;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.OpContract;
using InfLlmV2.Onnx.Session;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InfLlmV2.Onnx.Cli.Commands;

/// <summary>
/// <c>infllmv2 demo</c>, the main job on the embedded default model: (1) one decode step of a
/// one-node SwitchableAttention model on a 16k-token context in dense and sparse mode, with a
/// planted "needle" block; (2) generate the default tiny GQA decoder, rewrite it, and compare
/// original vs rewritten on a short prompt (dense: must agree) and a 16k-token one (sparse).
/// </summary>
public static class DemoCommand
{
    private const int Heads = 16, KvHeads = 1, HeadSize = 64, Context = 16384, NeedleBlock = 77;

    // The one-node model sets no sparse attribute: the op runs with its defaults.
    private static readonly SparseAttentionSettings OpDefaults = SparseAttentionSettings.Defaults;

    /// <summary>Creates the command.</summary>
    public static Command Create()
    {
        var cmd = new Command("demo", "The op on a 16k context (dense vs sparse), then the default model: generate, rewrite, compare original vs rewritten");
        var longLen = new Option<int>("--long-prompt") { Description = "Length of the long (sparse) prompt", DefaultValueFactory = _ => 16384 };
        cmd.Options.Add(longLen);
        var outDir = new Option<string?>("--output-dir")
        {
            Description = "Folder for the generated and rewritten demo models (default: demo-models/ next to the program)",
        };
        cmd.Options.Add(outDir);
        var force = new Option<bool>("--force") { Description = "Replace files in --output-dir that the demo did not write (or that changed since)" };
        cmd.Options.Add(force);
        cmd.SetAction(r => CommandRunner.Guard(() =>
        {
            int n = r.GetValue(longLen);
            if (n < 64) throw new UsageException($"--long-prompt must be >= 64, got {n}");
            string? asked = r.GetValue(outDir);
            var dir = DemoFolder(asked);
            CheckTargets(dir, ownFolder: string.IsNullOrWhiteSpace(asked), r.GetValue(force));
            var sw = Stopwatch.StartNew();
            var existed = DemoFiles.Where(f => SafeFiles.Kind(Path.Combine(dir, f), followLinks: false) != FileKind.Missing).ToHashSet();
            int code;
            using (var progress = Progress.CliProgress.Start("demo", 2))
            {
                progress.Describe("1. the op on a 16k context");
                RunOpDemo(Path.Combine(dir, DemoNeedleMap.FileName));
                progress.Advance();
                progress.Describe("2. the default model: generate, rewrite, compare");
                code = RunModelDemo(n, dir, existed);
                progress.Advance();
            }
            Console.WriteLine($"demo finished in {sw.Elapsed.TotalSeconds:F1} s");
            return code;
        }));
        return cmd;
    }

    // The files the demo writes into its folder, and the record of what it wrote last (name -> SHA-256).
    private static readonly string[] DemoFiles = ["tiny-decoder.onnx", "tiny-decoder.onnx.data", "tiny-decoder.infllmv2.onnx", ModelTokenizer.JsonFile, DemoNeedleMap.FileName];
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
            sites = AttentionRewriter.Rewrite(model, new RewriteOptions { AttentionModeInput = true });
            ModelWriter.Save(model, original, rewritten, force: true);
            TinyTokenizer.Write(dir, config.Vocab);  // so `generate --prompt TEXT` works on the default model
            var manifest = DemoFiles.ToDictionary(f => f, f => Hash(Path.Combine(dir, f)));
            SafeFiles.WriteAtomically(Path.Combine(dir, Manifest), s => s.Write(System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(manifest)), "demo manifest");
        }
        catch
        {
            foreach (var f in DemoFiles.Where(f => !existed.Contains(f))) SafeFiles.TryDelete(Path.Combine(dir, f));
            throw;
        }
    }

    private static int RunModelDemo(int longPrompt, string dir, HashSet<string> existed)
    {
        Console.WriteLine();
        Console.WriteLine("== 2. default model: generate, rewrite, compare ==");
        var config = TinyDecoderConfig.Default;
        var original = Path.Combine(dir, "tiny-decoder.onnx");
        var rewritten = Path.Combine(dir, "tiny-decoder.infllmv2.onnx");
        WriteModels(dir, config, original, rewritten, existed, out var sites);
        Console.WriteLine($"model: {config.Layers} layers, H={config.NumHeads} Hkv={config.KvNumHeads} D={config.HeadSize}, vocab {config.Vocab} -> {original}");
        using var a = DecoderModel.Open(original);
        using var b = DecoderModel.Open(rewritten);
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
        var longSteps = ModelComparison.Run(a, b, CompareCommand.RandomPrompt(longPrompt, config.Vocab, 2), 4, AttentionMode.Auto);
        ModelComparison.Print(longSteps, Console.Out);
        rows.Add(("long/" + longSteps[^1].Mode.ToString().ToLowerInvariant(), longSteps));

        Console.WriteLine();
        GenerateFromText(b, rewritten);

        Console.WriteLine();
        Console.WriteLine("summary");
        Console.WriteLine($"{"case",-14} {"steps",6} {"top-1 agree",12} {"max|dlogits|",13} {"max KL",10} {"orig s",8} {"rewr s",8}");
        foreach (var (name, steps) in rows)
            Console.WriteLine($"{name,-14} {steps.Count,6} {100.0 * steps.Count(s => s.Top1Agrees) / steps.Count,11:F0}% {steps.Max(s => s.MaxAbsDiff),13:G3} {steps.Max(s => s.KlDivergence),10:G3} {steps.Sum(s => s.OriginalMs) / 1000,8:F2} {steps.Sum(s => s.RewrittenMs) / 1000,8:F2}");
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
        Console.WriteLine($"text prompt \"{prompt}\" -> {ids.Length} tokens ({tokenizer.Kind}, {tokenizer.Path}); 16 greedy tokens:");
        using var session = new DecoderSession(model, new DecoderSessionOptions { Capacity = ids.Length + 16 });
        var decoder = new StreamingDecoder(tokenizer);
        Console.Write("  ");
        foreach (var token in session.Generate(ids, new GenerationOptions { MaxNewTokens = 16 }))
            Console.Write(decoder.Add(token).ReplaceLineEndings(" "));
        Console.WriteLine(decoder.Flush().ReplaceLineEndings(" "));
        Console.WriteLine($"  (try: ./infllmv2 generate {Path.GetRelativePath(Environment.CurrentDirectory, path)} --prompt \"your text\")");
    }

    private static void RunOpDemo(string mapPath)
    {
        Console.WriteLine("== 1. SwitchableAttention, one node ==");
        var model = AttentionNodeModels.Build(new AttentionNodeConfig
        {
            NumHeads = Heads, KvNumHeads = KvHeads, WithAttentionMode = true, WithSelectedBlocks = true,
        });
        using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
        options.RegisterInfLlmV2Ops();
        using var session = new InferenceSession(OnnxModelFile.ToBytes(model), options);

        // Keys: noise; block NeedleBlock holds keys aligned with the query (the "needle").
        var rng = new Random(1234);
        int past = Context - 1;
        var pastKey = new float[KvHeads * past * HeadSize];
        var pastValue = new float[pastKey.Length];
        var direction = new float[HeadSize];
        for (int i = 0; i < HeadSize; i++) direction[i] = (float)(rng.NextDouble() * 2 - 1);
        for (int i = 0; i < pastKey.Length; i++)
        {
            pastKey[i] = (float)(rng.NextDouble() * 2 - 1);
            pastValue[i] = (float)(rng.NextDouble() * 2 - 1);
        }
        int block = (int)OpDefaults.BlockSize;
        for (int t = NeedleBlock * block; t < (NeedleBlock + 1) * block; t++)
            for (int i = 0; i < HeadSize; i++) pastKey[t * HeadSize + i] = 2.5f * direction[i];
        var query = new float[Heads * HeadSize];
        for (int h = 0; h < Heads; h++)
            for (int i = 0; i < HeadSize; i++) query[h * HeadSize + i] = direction[i] + 0.1f * (float)(rng.NextDouble() * 2 - 1);
        var key = new float[KvHeads * HeadSize];
        var value = new float[KvHeads * HeadSize];

        Console.WriteLine($"SwitchableAttention decode step: H={Heads} Hkv={KvHeads} D={HeadSize}, context {Context} tokens, needle in block {NeedleBlock}");
        Console.WriteLine($"onnxruntime {OrtEnv.Instance().GetVersionString()}, op library {NativeOpLibrary.Locate()}");
        Console.WriteLine();
        Console.WriteLine($"{"mode",-8}{"time ms",10}{"blocks",8}{"tokens",8}{"needle",8}{"max|out-dense|",16}");
        float[]? dense = null;
        foreach (var (mode, label) in new[] { (1, "dense"), (2, "sparse") })
        {
            using var q = OrtValue.CreateTensorValueFromMemory(query, [1, 1, Heads * HeadSize]);
            using var k = OrtValue.CreateTensorValueFromMemory(key, [1, 1, KvHeads * HeadSize]);
            using var v = OrtValue.CreateTensorValueFromMemory(value, [1, 1, KvHeads * HeadSize]);
            using var pk = OrtValue.CreateTensorValueFromMemory(pastKey, [1, KvHeads, past, HeadSize]);
            using var pv = OrtValue.CreateTensorValueFromMemory(pastValue, [1, KvHeads, past, HeadSize]);
            using var seqlens = OrtValue.CreateTensorValueFromMemory(new[] { Context - 1 }, [1]);
            using var total = OrtValue.CreateTensorValueFromMemory(new[] { Context }, []);
            using var modeValue = OrtValue.CreateTensorValueFromMemory(new[] { mode }, []);
            string[] names = ["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length", "attention_mode"];
            OrtValue[] values = [q, k, v, pk, pv, seqlens, total, modeValue];
            using var runOptions = new RunOptions();
            session.Run(runOptions, names, values, session.OutputNames).Dispose();  // warm-up
            var sw = Stopwatch.StartNew();
            using var results = session.Run(runOptions, names, values, session.OutputNames);
            double ms = sw.Elapsed.TotalMilliseconds;
            var output = results[0].GetTensorDataAsSpan<float>().ToArray();
            var selected = results[3].GetTensorDataAsSpan<int>().ToArray().Where(b => b >= 0).ToArray();
            int blocks = mode == 1 ? (Context + block - 1) / block : selected.Length;
            int tokens = mode == 1 ? Context : selected.Sum(b => Math.Min(block, Context - b * block));
            bool needle = mode == 1 || selected.Contains(NeedleBlock);
            dense ??= output;
            double diff = output.Zip(dense, (a, b) => Math.Abs(a - b)).Max();
            Console.WriteLine($"{label,-8}{ms,10:F2}{blocks,8}{tokens,8}{(needle ? "yes" : "NO"),8}{diff,16:G3}");
        }
        Console.WriteLine();
        var d = OpDefaults;
        long local = d.SparseWindowTokens / d.BlockSize + 1;  // the window's blocks and the query's own
        Console.WriteLine($"Sparse mode attends to the {d.InitBlocks} init block(s), the {local} local blocks and the {d.BlockBudget - d.InitBlocks - local} "
            + $"top-scored blocks ({d.BlockBudget} x {d.BlockSize} = {d.BlockBudget * d.BlockSize} tokens).");
        DemoNeedleMap.Write(session, mapPath, pastKey, pastValue, direction, Heads, HeadSize, Context, NeedleBlock, OpDefaults);
        Console.WriteLine($"selection map of the needle case (last {DemoNeedleMap.Rows} queries): {mapPath}");
    }
}
