using System.CommandLine;
using System.Diagnostics;
using InfLlmV2.Onnx.Cli.Pictures;
using InfLlmV2.Onnx.Cli.Text;
using InfLlmV2.Onnx.Session;
using InfLlmV2.Onnx.Text;

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
        var model = new Argument<FileInfo>("MODEL") { Description = "Decoder model (original or rewritten): a file, a genai folder or a Hugging Face style export folder" };
        var ids = new Option<string?>("--prompt-ids") { Description = "Comma-separated prompt token ids (the output is then token ids)" };
        var (promptText, promptFile) = PromptOptions.Create();
        var device = DeviceOption.Create();
        var max = new Option<int>("--max-new-tokens") { Description = "Most tokens to generate (default: the config's max_new_tokens or max_length, else 32)", DefaultValueFactory = _ => DefaultMaxNewTokens };
        var mode = new Option<string>("--mode") { Description = "auto, dense or sparse (forcing needs an attention_mode input)", DefaultValueFactory = _ => "auto" };
        mode.AcceptOnlyFromAmong("auto", "dense", "sparse");
        var temperature = new Option<float>("--temperature") { Description = "0 = greedy (default: the config's, greedy unless it says do_sample)", DefaultValueFactory = _ => 0f };
        var topK = new Option<int>("--top-k") { Description = "Sample among the k best (0 = all; default: the config's)" };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling threshold (default: the config's, else 1)", DefaultValueFactory = _ => 1f };
        var seed = new Option<int?>("--seed") { Description = "Sampling seed" };
        var stop = new Option<string?>("--stop-ids") { Description = "Comma-separated stop token ids, added to the model's end-of-sequence ids" };
        var chat = new Option<string?>("--chat") { Description = "A user message, rendered with the model's chat template (tokenizer_config.json chat_template or chat_template.jinja)" };
        var system = new Option<string?>("--system") { Description = "With --chat: the system message" };
        var ignoreEos = new Option<bool>("--ignore-eos") { Description = "Do not stop at the model's end-of-sequence ids (genai_config.json, generation_config.json, config.json)" };
        var capacity = new Option<int?>("--capacity") { Description = "KV cache capacity (default: prompt + max-new-tokens)" };
        var threads = ThreadsOption.Create();
        var cmd = new Command("generate", "Generate tokens from a decoder model, streaming them") { model, promptText, promptFile, ids, chat, system, max, mode, temperature, topK, topP, seed, stop, ignoreEos, capacity, device, threads };
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
            int threadCount = ThreadsOption.Value(r.GetValue(threads));
            string? text = r.GetValue(promptText), idText = r.GetValue(ids);
            var file = r.GetValue(promptFile);
            string? chatText = r.GetValue(chat), systemText = r.GetValue(system);
            PromptOptions.CheckOne(required: true, ("--prompt", text is not null), ("--prompt-file", file is not null), ("--prompt-ids", idText is not null), ("--chat", chatText is not null));
            if (systemText is not null && chatText is null) throw new UsageException("--system needs --chat");
            if (chatText is not null && chatText.Length == 0) throw new UsageException("--chat is empty");
            if (idText is not null && string.IsNullOrWhiteSpace(idText)) throw new UsageException("--prompt-ids: no token ids given");
            var folder = ModelFolder.Open(r.GetValue(model)!.FullName);
            var path = folder.ModelPath;
            var recorder = selectionMap.Check(r, path);
            var search = folder.Search;
            bool Given(Option o) => r.GetResult(o) is { Implicit: false };
            if (!Given(temperature)) temp = search.EffectiveTemperature;
            if (!Given(topK) && search.DoSample == true && search.TopK is int configK) k = configK;
            if (!Given(topP) && search.DoSample == true && search.TopP is float configP) p = configP;
            var tokenizer = PromptOptions.WantsText(text, file) || chatText is not null ? ModelTokenizer.ForModel(path) : null;
            // Tokenized (or parsed) and checked against the context length before the model is opened.
            int[] prompt;
            if (chatText is not null)
            {
                var template = ChatTemplate.ForFolder(folder.Folder) ?? throw new UsageException(
                    $"the model has no chat template (no chat_template in {Path.Combine(folder.Folder, ModelFolder.TokenizerConfigFile)} and no chat_template.jinja): use --prompt");
                List<ChatTurn> turns = systemText is null ? [new("user", chatText)] : [new("system", systemText), new("user", chatText)];
                prompt = tokenizer!.Encode(template.Render(turns, addGenerationPrompt: true), addSpecialTokens: false);
                if (prompt.Length == 0) throw new UsageException($"the chat prompt tokenizes to no tokens ({tokenizer.Path})");
            }
            else prompt = tokenizer is null ? ParseIds(idText, int.MaxValue)! : PromptOptions.Encode(tokenizer, PromptOptions.ReadText(text, file), int.MaxValue);
            if (folder.ContextLength is long context && prompt.Length > context)
                throw new UsageException($"the prompt ({prompt.Length} tokens) is longer than the model's context length {context} ({string.Join(", ", folder.ConfigFiles.Select(Path.GetFileName))})");
            if (!Given(max))
            {
                if (search.MaxNewTokens is int configNew) maxNew = configNew;
                else if (search.MaxLength is int maxLength)
                    maxNew = maxLength > prompt.Length ? maxLength - prompt.Length
                        : throw new UsageException($"the prompt ({prompt.Length} tokens) leaves nothing of the config's max_length {maxLength}: give --max-new-tokens");
                if (folder.ContextLength is long ctx) maxNew = (int)Math.Min(maxNew, ctx - prompt.Length + 1);
            }
            using var sessionOptions = DeviceOption.SessionOptions(r.GetValue(device)!);
            using var m = DecoderModel.Open(path, sessionOptions, threads: threadCount);
            if (recorder is not null) SelectionMapOptions.RequireExposed(m, path, recorder);
            int vocab = (int)m.Session.OutputMetadata[m.Names.Logits].Dimensions[^1];
            PromptOptions.CheckVocabulary(prompt, vocab, tokenizer?.Path);
            var stopIds = ParseIds(r.GetValue(stop), vocab, "--stop-ids") ?? [];
            var eos = r.GetValue(ignoreEos) ? [] : folder.EosTokenIds.Where(id => id < vocab).ToArray();
            var options = new GenerationOptions
            {
                MaxNewTokens = maxNew, Temperature = temp, TopKTokens = k, TopP = p,
                Seed = r.GetValue(seed), StopTokens = eos.Concat(stopIds).Distinct().ToArray(),
            };
            // The last generated token is not fed back: a request grows to prompt + maxNew - 1 tokens.
            if (m.MaxPositions is { } maxPos && !Given(max) && prompt.Length <= maxPos)
                options = options with { MaxNewTokens = (int)Math.Min(maxNew, maxPos - prompt.Length + 1) };
            maxNew = options.MaxNewTokens;
            if (m.MaxPositions is { } maxPos2 && prompt.Length + maxNew - 1 > maxPos2)
                throw new UsageException(prompt.Length > maxPos2
                    ? $"the prompt ({prompt.Length} tokens) exceeds the model's {maxPos2} positions"
                    : $"--max-new-tokens {maxNew} after a {prompt.Length}-token prompt exceeds the model's {maxPos2} positions (at most {maxPos2 - prompt.Length + 1})");
            int cap = capacityGiven ?? prompt.Length + maxNew;
            if (cap < prompt.Length) throw new UsageException($"--capacity {cap} is smaller than the prompt ({prompt.Length} tokens)");
            using var session = new DecoderSession(m, new DecoderSessionOptions { Capacity = cap, Routing = RoutingPolicy.Always(CompareCommand.ParseRouting(r.GetValue(mode)!)), OnSelection = recorder is null ? null : recorder.Add });
            var sw = Stopwatch.StartNew();
            int count = 0, last = -1;
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
                Console.Write(decoder is not null ? (options.StopTokens.Contains(token) ? "" : decoder.Add(token)) : count == 0 ? $"{token}" : $",{token}");
                count++;
                last = token;
                Console.Out.Flush();
            }
            if (decoder is not null) Console.Write(decoder.Flush());
            Console.WriteLine();
            if (tokenizer is not null) Console.Error.WriteLine($"prompt: {prompt.Length} tokens ({tokenizer.Kind} via {tokenizer.Engine}, {tokenizer.Path})");
            var why = options.StopTokens.Contains(last) ? (eos.Contains(last) ? "end of sequence" : "stop id") : "length";
            Console.Error.WriteLine($"{count} tokens in {sw.Elapsed.TotalSeconds:F2} s (stopped: {why}); last step mode: {session.LastModes[0]?.ToString().ToLowerInvariant() ?? "none"}");
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

    /// <summary>The --max-new-tokens of a model whose configuration states no max_new_tokens nor max_length.</summary>
    internal const int DefaultMaxNewTokens = 32;

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
