using System.CommandLine;
using System.Diagnostics;
using InfLlmV2.Onnx.Cli.Pictures;
using InfLlmV2.Onnx.Cli.Text;
using InfLlmV2.Onnx.Session;

namespace InfLlmV2.Onnx.Cli.Commands;

/// <summary>
/// <c>infllmv2 generate MODEL (--prompt TEXT | --prompt-file F | --prompt-ids 1,2,3) [--max-new-tokens N] [--mode ...] [--device cpu|cuda]</c>:
/// streams the generated text (text prompts, tokenized with the model folder's tokenizer) or token ids (<c>--prompt-ids</c>).
/// </summary>
public static class GenerateCommand
{
    /// <summary>Creates the command.</summary>
    public static Command Create()
    {
        var model = new Argument<FileInfo>("MODEL") { Description = "Decoder model (original or rewritten)" };
        var ids = new Option<string?>("--prompt-ids") { Description = "Comma-separated prompt token ids (the output is then token ids)" };
        var (promptText, promptFile) = PromptOptions.Create();
        var device = DeviceOption.Create();
        var max = new Option<int>("--max-new-tokens") { Description = "Most tokens to generate", DefaultValueFactory = _ => 32 };
        var mode = new Option<string>("--mode") { Description = "auto, dense or sparse (forcing needs an attention_mode input)", DefaultValueFactory = _ => "auto" };
        mode.AcceptOnlyFromAmong("auto", "dense", "sparse");
        var temperature = new Option<float>("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0f };
        var topK = new Option<int>("--top-k") { Description = "Sample among the k best (0 = all)" };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling threshold", DefaultValueFactory = _ => 1f };
        var seed = new Option<int?>("--seed") { Description = "Sampling seed" };
        var stop = new Option<string?>("--stop-ids") { Description = "Comma-separated stop token ids" };
        var capacity = new Option<int?>("--capacity") { Description = "KV cache capacity (default: prompt + max-new-tokens)" };
        var cmd = new Command("generate", "Generate tokens from a decoder model, streaming them") { model, promptText, promptFile, ids, max, mode, temperature, topK, topP, seed, stop, capacity, device };
        var selectionMap = new SelectionMapOptions();
        selectionMap.AddTo(cmd);
        cmd.SetAction((r, ct) => Task.FromResult(CommandRunner.Guard(() =>
        {
            // Every number is checked before the model is opened, each message naming its option.
            int maxNew = (int)CommandRunner.InRange("--max-new-tokens", r.GetValue(max), 1, CommandRunner.MaxTokens);
            float temp = (float)CommandRunner.InRange("--temperature", r.GetValue(temperature), 0, float.MaxValue);
            int k = (int)CommandRunner.InRange("--top-k", r.GetValue(topK), 0, int.MaxValue);
            float p = r.GetValue(topP);
            if (!(p > 0 && p <= 1)) throw new UsageException($"--top-p must be in (0, 1], got {p}");
            int? capacityGiven = r.GetValue(capacity) is int cg ? (int)CommandRunner.InRange("--capacity", cg, 1, CommandRunner.MaxTokens) : null;
            string? text = r.GetValue(promptText), idText = r.GetValue(ids);
            var file = r.GetValue(promptFile);
            PromptOptions.CheckOne(required: true, ("--prompt", text is not null), ("--prompt-file", file is not null), ("--prompt-ids", idText is not null));
            if (idText is not null && string.IsNullOrWhiteSpace(idText)) throw new UsageException("--prompt-ids: no token ids given");
            var path = CompareCommand.Existing(r.GetValue(model)!);
            var recorder = selectionMap.Check(r, path);
            using var sessionOptions = DeviceOption.SessionOptions(r.GetValue(device)!);
            var tokenizer = PromptOptions.WantsText(text, file) ? ModelTokenizer.ForModel(path) : null;
            var promptString = tokenizer is null ? null : PromptOptions.ReadText(text, file);
            using var m = DecoderModel.Open(path, sessionOptions);
            if (recorder is not null) SelectionMapOptions.RequireExposed(m, path, recorder);
            int vocab = (int)m.Session.OutputMetadata[m.Names.Logits].Dimensions[^1];
            var prompt = tokenizer is null ? ParseIds(idText, vocab)! : PromptOptions.Encode(tokenizer, promptString!, vocab);
            var options = new GenerationOptions
            {
                MaxNewTokens = maxNew, Temperature = temp, TopKTokens = k, TopP = p,
                Seed = r.GetValue(seed), StopTokens = ParseIds(r.GetValue(stop), vocab, "--stop-ids") ?? [],
            };
            // The last generated token is not fed back: a request grows to prompt + maxNew - 1 tokens.
            if (m.MaxPositions is { } maxPos && prompt.Length + maxNew - 1 > maxPos)
                throw new UsageException(prompt.Length > maxPos
                    ? $"the prompt ({prompt.Length} tokens) exceeds the model's {maxPos} positions"
                    : $"--max-new-tokens {maxNew} after a {prompt.Length}-token prompt exceeds the model's {maxPos} positions (at most {maxPos - prompt.Length + 1})");
            int cap = capacityGiven ?? prompt.Length + maxNew;
            if (cap < prompt.Length) throw new UsageException($"--capacity {cap} is smaller than the prompt ({prompt.Length} tokens)");
            using var session = new DecoderSession(m, new DecoderSessionOptions { Capacity = cap, Routing = RoutingPolicy.Always(CompareCommand.ParseRouting(r.GetValue(mode)!)), OnSelection = recorder is null ? null : recorder.Add });
            var sw = Stopwatch.StartNew();
            int count = 0;
            var decoder = tokenizer is null ? null : new StreamingDecoder(tokenizer);
            // A long prompt is prefilled here, chunk by chunk with a progress; Generate then starts from its logits.
            int[] toAppend = prompt;
            if (prompt.Length > 2 * DecoderSessionDefaults.ChunkSize)
            {
                ModelComparison.Prefill(session, prompt, DecoderSessionDefaults.ChunkSize, "the model");
                toAppend = [];
            }
            foreach (var token in session.Generate(toAppend, options, ct))
            {
                Console.Write(decoder is not null ? decoder.Add(token) : count == 0 ? $"{token}" : $",{token}");
                count++;
                Console.Out.Flush();
            }
            if (decoder is not null) Console.Write(decoder.Flush());
            Console.WriteLine();
            if (tokenizer is not null) Console.Error.WriteLine($"prompt: {prompt.Length} tokens ({tokenizer.Kind}, {tokenizer.Path})");
            Console.Error.WriteLine($"{count} tokens in {sw.Elapsed.TotalSeconds:F2} s; last step mode: {session.LastModes[0]?.ToString().ToLowerInvariant() ?? "none"}");
            if (recorder is not null)
            {
                var mapFile = r.GetValue(selectionMap.Map)!;
                recorder.Write(mapFile.FullName, m, prompt.Length, $"{Path.GetFileName(path)}: blocks selected for kv head {recorder.KvHead} ({prompt.Length}-token prompt, then {recorder.Rows - prompt.Length} decode steps)");
                Console.Error.WriteLine($"selection map: {mapFile.FullName}");
            }
            return ExitCodes.Ok;
        })));
        return cmd;
    }

    private static class DecoderSessionDefaults
    {
        public static readonly int ChunkSize = new DecoderSessionOptions().ChunkSize;
    }

    internal static int[]? ParseIds(string? text, int vocab, string option = "--prompt-ids")
    {
        if (string.IsNullOrWhiteSpace(text)) return null;
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length > CommandRunner.MaxTokens) throw new UsageException($"{option}: {parts.Length} token ids, at most {CommandRunner.MaxTokens}");
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
        {
            if (!int.TryParse(parts[i], System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out ids[i]) || ids[i] < 0 || ids[i] >= vocab)
                throw new UsageException($"{option}: token id '{parts[i]}' is not an integer in [0, {vocab})");
        }
        return ids.Length > 0 ? ids : throw new UsageException($"{option}: no token ids given");
    }
}
