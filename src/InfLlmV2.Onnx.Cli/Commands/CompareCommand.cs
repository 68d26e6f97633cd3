using System.CommandLine;
using System.Text.Json;
using InfLlmV2.Onnx.Session;

namespace InfLlmV2.Onnx.Cli.Commands;

/// <summary>
/// <c>infllmv2 compare ORIGINAL REWRITTEN [--prompt-len N] [--decode-steps M] [--mode auto|dense|sparse] [--seed S] [--json FILE]</c>.
/// </summary>
public static class CompareCommand
{
    /// <summary>Creates the command.</summary>
    public static Command Create()
    {
        var original = new Argument<FileInfo>("ORIGINAL") { Description = "The original model" };
        var rewritten = new Argument<FileInfo>("REWRITTEN") { Description = "The rewritten model" };
        var promptLen = new Option<int>("--prompt-len") { Description = "Random prompt length", DefaultValueFactory = _ => 64 };
        var promptIds = new Option<string?>("--prompt-ids") { Description = "Comma-separated prompt token ids (instead of a random prompt)" };
        var steps = new Option<int>("--decode-steps") { Description = "Decode steps after the prefill", DefaultValueFactory = _ => 8 };
        var mode = new Option<string>("--mode") { Description = "Routing of the rewritten model: auto, dense or sparse", DefaultValueFactory = _ => "auto" };
        mode.AcceptOnlyFromAmong("auto", "dense", "sparse");
        var seed = new Option<int>("--seed") { Description = "Seed of the random prompt", DefaultValueFactory = _ => 1 };
        var json = new Option<FileInfo?>("--json") { Description = "Write the steps as JSON" };
        var cmd = new Command("compare", "Drive an original and a rewritten model through the same prefill and decode steps")
        {
            original, rewritten, promptLen, promptIds, steps, mode, seed, json,
        };
        cmd.SetAction(r => CommandRunner.Guard(() =>
        {
            int n = r.GetValue(promptLen), m = r.GetValue(steps);
            if (n < 1) throw new UsageException($"--prompt-len must be >= 1, got {n}");
            if (m < 0) throw new UsageException($"--decode-steps must be >= 0, got {m}");
            using var a = DecoderModel.Open(Existing(r.GetValue(original)!));
            using var b = DecoderModel.Open(Existing(r.GetValue(rewritten)!));
            int vocab = (int)a.Session.OutputMetadata[a.Names.Logits].Dimensions[^1];
            var prompt = GenerateCommand.ParseIds(r.GetValue(promptIds), vocab) ?? RandomPrompt(n, vocab, r.GetValue(seed));
            var routing = ParseRouting(r.GetValue(mode)!);
            var result = ModelComparison.Run(a, b, prompt, m, routing);
            ModelComparison.Print(result, Console.Out);
            if (r.GetValue(json) is { } file)
                File.WriteAllText(file.FullName, JsonSerializer.Serialize(result.Select(s => new
                {
                    step = s.Step, phase = s.Phase, tokens = s.Tokens, max_abs_diff = s.MaxAbsDiff, top1_agrees = s.Top1Agrees,
                    kl = s.KlDivergence, mode = s.Mode.ToString().ToLowerInvariant(), original_ms = s.OriginalMs, rewritten_ms = s.RewrittenMs,
                }), InspectCommand.JsonOptions));
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    internal static string Existing(FileInfo f) => f.Exists ? f.FullName : throw new FileNotFoundException($"Model not found: {f.FullName}");

    internal static AttentionRouting ParseRouting(string s) => s switch
    {
        "auto" => AttentionRouting.Auto,
        "dense" => AttentionRouting.Dense,
        "sparse" => AttentionRouting.Sparse,
        _ => throw new UsageException($"--mode must be auto, dense or sparse, got '{s}'"),
    };

    internal static int[] RandomPrompt(int n, int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => rng.Next(vocab)).ToArray();
    }
}
