using System.CommandLine;
using System.Text.Json;
using InfLlmV2.Onnx.Cli.Pictures;
using InfLlmV2.Onnx.Cli.Text;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.OpContract;
using InfLlmV2.Onnx.Session;
using InfLlmV2.Onnx.Text;

namespace InfLlmV2.Onnx.Cli.Commands;

/// <summary>
/// <c>infllmv2 compare ORIGINAL REWRITTEN [--prompt-len N] [--decode-steps M] [--mode auto|dense|sparse] [--seed S] [--json FILE]</c>:
/// drives both through the session wrapper (decoders with past/present caches and an attention_mask);
/// <c>--inputs DIR [--atol X]</c> instead runs both on an ONNX test-data folder and diffs every output
/// of the original against the rewritten (any model, e.g. a static-cache one; exit 1 beyond atol).
/// </summary>
public static class CompareCommand
{
    /// <summary>Creates the command.</summary>
    public static Command Create()
    {
        var original = new Argument<FileInfo>("ORIGINAL") { Description = "The original model (file or folder)" };
        var rewritten = new Argument<FileInfo>("REWRITTEN") { Description = "The rewritten model (file or folder)" };
        var promptLen = new Option<int>("--prompt-len") { Description = "Random prompt length", DefaultValueFactory = _ => 64 };
        var promptIds = new Option<string?>("--prompt-ids") { Description = "Comma-separated prompt token ids (instead of a random prompt)" };
        var steps = new Option<int>("--decode-steps") { Description = "Decode steps after the prefill", DefaultValueFactory = _ => 8 };
        var mode = new Option<string>("--mode") { Description = "Routing of the rewritten model: auto, dense or sparse", DefaultValueFactory = _ => "auto" };
        mode.AcceptOnlyFromAmong("auto", "dense", "sparse");
        var seed = new Option<int>("--seed") { Description = "Seed of the random prompt", DefaultValueFactory = _ => 1 };
        var json = new Option<FileInfo?>("--json") { Description = "Write the steps as JSON to this file (- for stdout)" };
        var inputs = new Option<DirectoryInfo?>("--inputs") { Description = "Instead of decoding: run both models on this test-data folder (input_N.pb) and compare every output" };
        var atol = new Option<double>("--atol") { Description = "With --inputs: max abs difference allowed per output", DefaultValueFactory = _ => 1e-4 };
        var promptFile = new Option<FileInfo?>("--prompt-file") { Description = "File whose text (UTF-8) is the prompt, tokenized with the original model folder's tokenizer" };
        var device = DeviceOption.Create();
        var threads = ThreadsOption.Create();
        var cmd = new Command("compare", "Drive an original and a rewritten model through the same prefill and decode steps, or run both on a test-data folder")
        {
            original, rewritten, promptLen, promptIds, steps, mode, seed, json, inputs, atol, promptFile, device, threads,
        };
        var selectionMap = new SelectionMapOptions();
        selectionMap.AddTo(cmd);
        var plot = new Option<FileInfo?>("--plot") { Description = "Write a drift chart (.png or .svg): max |dlogits| and KL per step, log scale, dense/sparse steps marked" };
        cmd.Options.Add(plot);
        cmd.SetAction(r => CommandRunner.Guard(() =>
        {
            var onDevice = DeviceOption.Check(r.GetValue(device)!);
            int threadCount = ThreadsOption.Value(r.GetValue(threads));
            if (r.GetValue(inputs) is { } dir)
            {
                foreach (var decodeOnly in new[] { "--prompt-len", "--prompt-ids", "--decode-steps", "--mode", "--seed", "--json", "--prompt-file", "--selection-map", "--kv-head", "--plot" })
                    if (r.Tokens.Any(t => t.Value == decodeOnly)) throw new UsageException($"{decodeOnly} does not apply with --inputs");
                return OnTestData(Existing(r.GetValue(original)!), Existing(r.GetValue(rewritten)!), dir, r.GetValue(atol), onDevice, threadCount);
            }
            var textFile = r.GetValue(promptFile);
            PromptOptions.CheckOne(required: false, ("--prompt-ids", r.GetValue(promptIds) is not null), ("--prompt-file", textFile is not null));
            if (textFile is not null && r.Tokens.Any(t => t.Value == "--prompt-len")) throw new UsageException("--prompt-len does not apply with --prompt-file");
            int n = (int)CommandRunner.InRange("--prompt-len", r.GetValue(promptLen), 1, CommandRunner.MaxTokens);
            int m = (int)CommandRunner.InRange("--decode-steps", r.GetValue(steps), 0, CommandRunner.MaxTokens);
            if (r.GetResult(promptIds) is not null && string.IsNullOrWhiteSpace(r.GetValue(promptIds)))
                throw new UsageException("--prompt-ids: no token ids given");
            if (r.GetValue(json) is { } report) ReportFile.Check(report, "--json", r.GetValue(original)!.FullName, r.GetValue(rewritten)!.FullName);
            var recorder = selectionMap.Check(r, r.GetValue(original)!.FullName, r.GetValue(rewritten)!.FullName);
            if (r.GetValue(plot) is { } chart) PictureFile.Check(chart, "--plot", r.GetValue(original)!.FullName, r.GetValue(rewritten)!.FullName);
            if (r.GetValue(plot) is { } p1 && r.GetValue(selectionMap.Map) is { } p2 && Path.GetFullPath(p1.FullName) == Path.GetFullPath(p2.FullName))
                throw new UsageException("--plot and --selection-map name the same file");
            var tokenizer = textFile is null ? null : ModelTokenizer.ForModel(Existing(r.GetValue(original)!));
            var text = tokenizer is null ? null : PromptOptions.ReadText(null, textFile);
            using var optionsA = DeviceOption.SessionOptions(r.GetValue(device)!).TakingTurns();
            using var optionsB = DeviceOption.SessionOptions(r.GetValue(device)!).TakingTurns();
            using var a = DecoderModel.Open(Existing(r.GetValue(original)!), optionsA, threads: threadCount);
            using var b = DecoderModel.Open(Existing(r.GetValue(rewritten)!), optionsB, threads: threadCount);
            if (recorder is not null) SelectionMapOptions.RequireExposed(b, r.GetValue(rewritten)!.FullName, recorder);
            int vocab = (int)a.Session.OutputMetadata[a.Names.Logits].Dimensions[^1];
            var prompt = tokenizer is not null ? PromptOptions.Encode(tokenizer, text!, vocab)
                : GenerateCommand.ParseIds(r.GetValue(promptIds), vocab) ?? RandomPrompt(n, vocab, r.GetValue(seed));
            if (tokenizer is not null) Console.WriteLine($"prompt: {textFile!.FullName}, {prompt.Length} tokens ({tokenizer.Kind} via {tokenizer.Engine}, {tokenizer.Path})");
            foreach (var (dm, which) in new[] { (a, "original"), (b, "rewritten") })
                if (dm.MaxPositions is { } maxPos && prompt.Length + m > maxPos)
                    throw new UsageException($"a {prompt.Length}-token prompt and {m} decode steps need {prompt.Length + m} positions; the {which} model has {maxPos}");
            var routing = ParseRouting(r.GetValue(mode)!);
            var result = ModelComparison.Run(a, b, prompt, m, routing, onRewrittenSelection: recorder is null ? null : recorder.Add);
            ModelComparison.Print(result, Console.Out);
            if (r.GetValue(plot) is { } plotFile)
            {
                DriftChart.Write(plotFile.FullName, DriftChart.Of(result), $"rewritten vs original: {prompt.Length}-token prompt, {m} decode steps, --mode {r.GetValue(mode)}");
                Console.Error.WriteLine($"drift chart: {plotFile.FullName}");
            }
            if (recorder is not null)
            {
                var mapFile = r.GetValue(selectionMap.Map)!;
                recorder.Write(mapFile.FullName, b, prompt.Length, $"{Path.GetFileName(r.GetValue(rewritten)!.FullName)}: blocks selected for kv head {recorder.KvHead} ({prompt.Length}-token prompt, then {m} decode steps)");
                Console.Error.WriteLine($"selection map: {mapFile.FullName}");
            }
            if (r.GetValue(json) is { } file)
                ReportFile.Write(file, JsonSerializer.Serialize(new
                {
                    schema_version = ReportFile.SchemaVersion,
                    steps = result.Select(s => new
                    {
                        step = s.Step, phase = s.Phase, tokens = s.Tokens, max_abs_diff = s.MaxAbsDiff, top1_agrees = s.Top1Agrees,
                        kl = s.KlDivergence, mode = s.Mode.ToString().ToLowerInvariant(), original_ms = s.OriginalMs, rewritten_ms = s.RewrittenMs,
                    }),
                }, InspectCommand.JsonOptions));
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    private static int OnTestData(string original, string rewritten, DirectoryInfo dir, double atol, ExecutionDevice device, int threads)
    {
        if (!dir.Exists) throw new DirectoryNotFoundException($"Inputs folder not found: {dir.FullName}");
        CommandRunner.InRange("--atol", atol, 0, double.MaxValue);
        var (expected, _) = RunCommand.Execute(original, dir.FullName, null, 1, device, threads);
        var (produced, _) = RunCommand.Execute(rewritten, dir.FullName, null, 1, device, threads);
        Console.WriteLine($"original vs rewritten on {dir.FullName}:");
        var (_, allOk) = RunCommand.Diff(produced, expected, atol, null);
        return allOk ? ExitCodes.Ok : ExitCodes.Mismatch;
    }

    /// <summary>The model file of a model file or folder (a genai folder's decoder, or a folder's one .onnx file).</summary>
    internal static string Existing(FileInfo f) => ModelFolder.ResolveModelFile(f.FullName);

    internal static AttentionMode ParseRouting(string s) => s switch
    {
        "auto" => AttentionMode.Auto,
        "dense" => AttentionMode.Dense,
        "sparse" => AttentionMode.Sparse,
        _ => throw new UsageException($"--mode must be auto, dense or sparse, got '{s}'"),
    };

    internal static int[] RandomPrompt(int n, int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => rng.Next(vocab)).ToArray();
    }
}
