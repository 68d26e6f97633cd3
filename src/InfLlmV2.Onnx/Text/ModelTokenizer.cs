using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using InfLlmV2.Onnx.GraphTools;
using Microsoft.ML.Tokenizers;

namespace InfLlmV2.Onnx.Text;

/// <summary>
/// The tokenizer of a model folder. A <c>tokenizer.json</c> (Hugging Face format) that
/// <see cref="TokenizerGraphs"/> supports (a byte-level BPE as in GPT-2, Llama-3, Qwen, or a
/// SentencePiece-style BPE as in Llama-2, Mistral) runs as two ONNX graphs through ONNX Runtime
/// Extensions (<see cref="Engine"/> <see cref="ExtensionsEngine"/>): the Hugging Face
/// tokenizer's own rules, normalizers and added tokens included. Otherwise
/// <c>Microsoft.ML.Tokenizers</c> does the work (<see cref="MLTokenizersEngine"/>): a byte-level
/// BPE tokenizer.json the graphs refuse, or a SentencePiece <c>tokenizer.model</c> (MiniCPM).
/// </summary>
/// <remarks>
/// Hostile files: a tokenizer file must be a regular file inside the model's folder (real path) of
/// at most <see cref="MaxJsonBytes"/> / <see cref="MaxSentencePieceBytes"/>, read through
/// <see cref="SafeFiles.OpenRegular"/>. Every field used is checked for its type and range before
/// the library sees it (an error names the file and the field). The pre-tokenizer regex runs with a
/// per-match timeout and a budget for the whole prompt, empty matches are skipped, and building the
/// tokenizer and encoding a prompt each run under a watchdog (<see cref="WorkBudget"/>).
/// </remarks>
public sealed class ModelTokenizer
{
    /// <summary>The Hugging Face tokenizer file name.</summary>
    public const string JsonFile = "tokenizer.json";

    /// <summary>The SentencePiece model file name.</summary>
    public const string SentencePieceFile = "tokenizer.model";

    /// <summary>Largest tokenizer.json read (the largest real ones are about 35 MB).</summary>
    public const long MaxJsonBytes = 128L << 20;

    /// <summary>Largest tokenizer.model read (real ones are a few MB).</summary>
    public const long MaxSentencePieceBytes = 64L << 20;

    /// <summary>Token ids (and the vocabulary size) are below 2^24.</summary>
    public const int MaxTokenId = (1 << 24) - 1;

    /// <summary>Most vocabulary entries, merges or added tokens accepted (2^21; the largest real vocabularies have about 2^18).</summary>
    public const int MaxEntries = 1 << 21;

    /// <summary>Longest pre-tokenizer regex accepted, in characters.</summary>
    public const int MaxPatternLength = 4096;

    /// <summary>Longest one match of the pre-tokenizer regex may take.</summary>
    public static readonly TimeSpan MatchTimeout = TimeSpan.FromSeconds(1);

    // GPT-2's pre-tokenizer pattern (ByteLevel with use_regex=true).
    private const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary><see cref="Engine"/> of the tokenizer graphs run by ONNX Runtime Extensions.</summary>
    public const string ExtensionsEngine = "onnxruntime-extensions";

    /// <summary><see cref="Engine"/> of Microsoft.ML.Tokenizers.</summary>
    public const string MLTokenizersEngine = "Microsoft.ML.Tokenizers";

    private readonly Tokenizer? _tokenizer;

    private readonly GraphTokenizer? _graphs;

    private readonly (string? Bos, string? Eos) _framing;

    private ModelTokenizer(Tokenizer? tokenizer, GraphTokenizer? graphs, string path, string kind, (string? Bos, string? Eos) framing = default)
    {
        _framing = framing;
        _tokenizer = tokenizer;
        _graphs = graphs;
        Path = path;
        Kind = kind;
    }

    /// <summary>What encodes and decodes: <see cref="ExtensionsEngine"/> or <see cref="MLTokenizersEngine"/>.</summary>
    public string Engine => _graphs is null ? MLTokenizersEngine : ExtensionsEngine;

    /// <summary>The tokenizer graphs when <see cref="Engine"/> is <see cref="ExtensionsEngine"/>, else null.</summary>
    public TokenizerGraphs? Graphs => _graphs?.Graphs;

    /// <summary>When the graphs were not used for a tokenizer.json: why (else null).</summary>
    public string? GraphsRefusal { get; private init; }

    /// <summary>The file the tokenizer was read from.</summary>
    public string Path { get; }

    /// <summary>"byte-level BPE", "SentencePiece-style BPE" (a tokenizer.json) or "SentencePiece" (a tokenizer.model).</summary>
    public string Kind { get; }

    /// <summary>
    /// The most time building a tokenizer or encoding a text of <paramref name="chars"/> characters
    /// may take: 10 s plus 1 ms per 1,000 characters. Past it the tokenizer is refused as hostile.
    /// </summary>
    public static TimeSpan WorkBudget(long chars) => TimeSpan.FromSeconds(10) + TimeSpan.FromMilliseconds(chars / 1000.0);

    /// <summary>
    /// Loads the tokenizer of the folder holding <paramref name="modelPath"/> (a model file or its
    /// folder): <c>tokenizer.json</c> through the tokenizer graphs when they support it, else through
    /// Microsoft.ML.Tokenizers when it is a byte-level BPE, else <c>tokenizer.model</c>.
    /// </summary>
    /// <exception cref="FileNotFoundException">Neither file exists; the message names both paths looked for.</exception>
    /// <exception cref="NotSupportedException">Neither engine supports tokenizer.json and there is no tokenizer.model.</exception>
    /// <exception cref="InvalidDataException">A tokenizer file could not be read; the message names the file and the field.</exception>
    public static ModelTokenizer ForModel(string modelPath)
    {
        var folder = Directory.Exists(modelPath) ? System.IO.Path.GetFullPath(modelPath) : System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(modelPath))!;
        var json = System.IO.Path.Combine(folder, JsonFile);
        var sp = System.IO.Path.Combine(folder, SentencePieceFile);
        string? jsonProblem = null;
        if (SafeFiles.Kind(json, followLinks: false) != FileKind.Missing)
        {
            var (real, _) = SafeFiles.RegularFileInside(folder, JsonFile, $"tokenizer {json}");
            var bytes = SafeFiles.ReadBounded(real, "tokenizer", MaxJsonBytes);
            using var doc = ParseJson(bytes, json);
            var root = doc.RootElement;
            jsonProblem = ByteLevelProblem(root);
            // A byte-level BPE is built by Microsoft.ML.Tokenizers first, whatever runs it: every field
            // it reads is checked there (a hostile file is refused naming the field).
            var ml = jsonProblem is null ? Bounded(json, "building the tokenizer", WorkBudget(0), () => FromJson(root, json)) : null;
            if (root.ValueKind == JsonValueKind.Object)
            {
                var framing = TemplateTokens(root, json);
                var graphs = OpenGraphs(folder, root, bytes, json, out var refusal);
                if (graphs is not null) return new ModelTokenizer(ml, graphs, json, graphs.Graphs.Kind, framing);
                if (ml is not null) return new ModelTokenizer(ml, null, json, "byte-level BPE", framing) { GraphsRefusal = refusal };
                jsonProblem = $"{refusal}; {jsonProblem}";
            }
        }
        if (SafeFiles.Kind(sp, followLinks: false) != FileKind.Missing)
        {
            var (real, _) = SafeFiles.RegularFileInside(folder, SentencePieceFile, $"tokenizer {sp}");
            var bytes = SafeFiles.ReadBounded(real, "tokenizer", MaxSentencePieceBytes);
            return new ModelTokenizer(Bounded(sp, "building the tokenizer", WorkBudget(0), () => FromSentencePiece(bytes, sp)), null, sp, "SentencePiece");
        }
        if (jsonProblem is not null)
            throw new NotSupportedException($"{json}: {jsonProblem}, and there is no {SentencePieceFile} next to it");
        throw new FileNotFoundException($"no tokenizer for {modelPath}: looked for {json} (byte-level BPE) and {sp} (SentencePiece)", json);
    }

    /// <summary>Encodes <paramref name="text"/> as the model's prompt (with the beginning-of-sequence token when the tokenizer adds one), within <see cref="WorkBudget"/>.</summary>
    /// <exception cref="InvalidDataException">The tokenizer failed or took too long on this text; the message names the file.</exception>
    public int[] Encode(string text) => Bounded(Path, $"encoding a {text.Length}-character prompt", WorkBudget(text.Length),
        () => _graphs is not null ? GraphEncode(text) : _tokenizer!.EncodeToIds(text).ToArray());

    // The pre-tokenizer regex runs here first, guarded (per-match timeout, a budget): a catastrophic
    // pattern is refused naming its field before the native op, which has no timeout, sees the text.
    private int[] GraphEncode(string text)
    {
        _tokenizer?.PreTokenizer?.PreTokenize(text);
        return _graphs!.Encode(text);
    }

    /// <summary>
    /// Encodes <paramref name="text"/>; without <paramref name="addSpecialTokens"/> no beginning- or
    /// end-of-sequence token is added (a chat template writes its own), within <see cref="WorkBudget"/>.
    /// </summary>
    /// <exception cref="InvalidDataException">The tokenizer failed or took too long on this text; the message names the file.</exception>
    public int[] Encode(string text, bool addSpecialTokens) => addSpecialTokens ? Encode(text)
        : Bounded(Path, $"encoding a {text.Length}-character prompt", WorkBudget(text.Length), () => (_graphs is not null ? WithoutFraming(text, GraphEncode(text)) : _tokenizer switch
        {
            BpeTokenizer bpe => WithoutFraming(text, bpe.EncodeToIds(text)),
            SentencePieceTokenizer sp => sp.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false),
            var other => other!.EncodeToIds(text),
        }).ToArray());

    // A BPE with a post-processor template adds its BOS/EOS on every encoding: drop the ones the text does not spell.
    private List<int> WithoutFraming(string text, IReadOnlyList<int> ids)
    {
        var list = ids.ToList();
        var (bos, eos) = _framing;
        if (bos is not null && list.Count > 0 && !text.StartsWith(bos, StringComparison.Ordinal) && Decode([list[0]]) == bos)
            list.RemoveAt(0);
        if (eos is not null && list.Count > 0 && !text.EndsWith(eos, StringComparison.Ordinal) && Decode([list[^1]]) == eos)
            list.RemoveAt(list.Count - 1);
        return list;
    }

    /// <summary>Decodes <paramref name="ids"/> to text.</summary>
    /// <exception cref="InvalidDataException">The tokenizer could not decode them; the message names the file.</exception>
    public string Decode(IEnumerable<int> ids)
    {
        try
        {
            return _graphs is not null ? _graphs.Decode(ids as IReadOnlyList<int> ?? ids.ToList()) : _tokenizer!.Decode(ids);
        }
        catch (Exception e) when (e is not (OutOfMemoryException or InvalidDataException))
        {
            throw new InvalidDataException($"{Path}: decoding failed ({e.GetType().Name}: {e.Message})", e);
        }
    }

    /// <summary>
    /// Runs <paramref name="work"/> on a watchdog thread: an exception it throws is turned into an
    /// <see cref="InvalidDataException"/> naming <paramref name="path"/>; past <paramref name="budget"/>
    /// the tokenizer is refused (the work is abandoned on a background thread).
    /// </summary>
    private static T Bounded<T>(string path, string what, TimeSpan budget, Func<T> work)
    {
        T? result = default;
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                result = work();
            }
            catch (Exception e)
            {
                error = e;
            }
        }, maxStackSize: 64 << 20)
        { IsBackground = true, Name = "tokenizer" };
        thread.Start();
        if (!thread.Join(budget))
            throw new InvalidDataException($"{path}: {what} took more than {budget.TotalSeconds:F0} s; the tokenizer is refused (a pathological pre-tokenizer regex or vocabulary)");
        return error switch
        {
            null => result!,
            InvalidDataException ide => throw ide,
            RegexMatchTimeoutException t => throw new InvalidDataException(
                $"{path}: pre_tokenizer Split pattern.Regex took more than {t.MatchTimeout.TotalSeconds:F0} s on one match ({what}); the regex backtracks catastrophically", t),
            OutOfMemoryException oom => throw oom,
            _ => throw new InvalidDataException($"{path}: {what} failed ({error.GetType().Name}: {error.Message})", error),
        };
    }

    /// <summary>
    /// The folder's tokenizer graphs opened in ONNX Runtime, or null with <paramref name="refusal"/>
    /// saying why (the tokenizer is not a supported kind, or the Extensions op refused it).
    /// </summary>
    private static GraphTokenizer? OpenGraphs(string folder, JsonElement root, byte[] jsonBytes, string path, out string refusal)
    {
        string? config = null;
        if (SafeFiles.Kind(System.IO.Path.Combine(folder, ModelFolder.TokenizerConfigFile), followLinks: false) != FileKind.Missing)
        {
            var (realConfig, _) = SafeFiles.RegularFileInside(folder, ModelFolder.TokenizerConfigFile, System.IO.Path.Combine(folder, ModelFolder.TokenizerConfigFile));
            config = Encoding.UTF8.GetString(SafeFiles.ReadBounded(realConfig, ModelFolder.TokenizerConfigFile, ModelFolder.MaxConfigBytes));
        }
        var text = Encoding.UTF8.GetString(jsonBytes);
        var graphs = TokenizerGraphs.Build(root, text, config, null, out var why);
        if (graphs is null)
        {
            refusal = $"the tokenizer graphs do not support it ({why})";
            return null;
        }
        try
        {
            refusal = "";
            return Bounded(path, "opening the tokenizer graphs", WorkBudget(0), () => OpenOrRetry(graphs, root, text, config));
        }
        catch (InvalidDataException e)
        {
            refusal = $"ONNX Runtime Extensions refused it ({e.Message})";
            return null;
        }
    }

    // tokenizer_config.json may name a class the Extensions do not know: run as the one the model type implies.
    private static GraphTokenizer OpenOrRetry(TokenizerGraphs graphs, JsonElement root, string text, string? config)
    {
        try
        {
            return GraphTokenizer.Open(graphs);
        }
        catch (Microsoft.ML.OnnxRuntime.OnnxRuntimeException e) when (e.Message.Contains("Unknown tokenizer type", StringComparison.Ordinal)
            && graphs.TokenizerClass != TokenizerGraphs.DefaultClass(graphs.Kind))
        {
            return GraphTokenizer.Open(TokenizerGraphs.Build(root, text, config, TokenizerGraphs.DefaultClass(graphs.Kind), out _)!);
        }
    }

    private static JsonDocument ParseJson(byte[] bytes, string shownPath)
    {
        try
        {
            return JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 64, AllowDuplicateProperties = false });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{shownPath} is not valid JSON: {e.Message}");
        }
    }

    /// <summary>Null when the document is a byte-level BPE this reader handles, else why not.</summary>
    private static string? ByteLevelProblem(JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object) return "is not a JSON object";
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            return "has no \"model\" object";
        var type = model.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
        if (type != "BPE") return $"its model.type is {(type is null ? "not stated (or not a string)" : $"'{type}'")}, not BPE";
        if (!HasType(root, "pre_tokenizer", "ByteLevel") && !HasType(root, "decoder", "ByteLevel"))
            return "it is not a byte-level BPE (no ByteLevel pre-tokenizer or decoder; SentencePiece-style JSON needs its tokenizer.model)";
        return null;
    }

    private static bool HasType(JsonElement root, string section, string type) =>
        root.TryGetProperty(section, out var e) && Components(e, 0).Any(c => TypeOf(c) == type);

    private static string? TypeOf(JsonElement component) =>
        component.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;

    // A component or the members of a Sequence component (nesting bounded by the parser's depth).
    private static IEnumerable<JsonElement> Components(JsonElement e, int depth)
    {
        if (e.ValueKind != JsonValueKind.Object || depth > 64) yield break;
        yield return e;
        foreach (var key in new[] { "pretokenizers", "decoders", "processors", "normalizers" })
            if (e.TryGetProperty(key, out var list) && list.ValueKind == JsonValueKind.Array)
                foreach (var inner in list.EnumerateArray())
                    foreach (var c in Components(inner, depth + 1))
                        yield return c;
    }

    private static InvalidDataException Bad(string path, string field, string why) => new($"{path}: {field} {why}");

    private static string Shown(string s) => s.Length > 40 ? JsonSerializer.Serialize(s[..40]) + "..." : JsonSerializer.Serialize(s);

    private static int TokenId(JsonElement e, string path, string field)
    {
        if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt64(out var v) || v < 0 || v > MaxTokenId)
            throw Bad(path, field, $"must be an integer token id in [0, {MaxTokenId}], got {Printable(e)}");
        return (int)v;
    }

    private static string Printable(JsonElement e)
    {
        var raw = e.GetRawText();
        return raw.Length > 40 ? raw[..40] + "..." : raw;
    }

    private static string NonEmptyString(JsonElement e, string path, string field)
    {
        if (e.ValueKind != JsonValueKind.String) throw Bad(path, field, $"must be a string, got {e.ValueKind.ToString().ToLowerInvariant()} {Printable(e)}");
        var s = e.GetString()!;
        if (s.Length == 0) throw Bad(path, field, "must not be empty");
        return s;
    }

    private static Tokenizer FromJson(JsonElement root, string path)
    {
        var model = root.GetProperty("model");
        if (!model.TryGetProperty("vocab", out var vocabElement) || vocabElement.ValueKind != JsonValueKind.Object)
            throw Bad(path, "model.vocab", "is missing or not an object of token: id");
        var vocab = new List<KeyValuePair<string, int>>();
        foreach (var p in vocabElement.EnumerateObject())
        {
            if (vocab.Count >= MaxEntries) throw Bad(path, "model.vocab", $"has more than {MaxEntries} tokens");
            if (p.Name.Length == 0) throw Bad(path, "model.vocab", "has an empty token");
            vocab.Add(new(p.Name, TokenId(p.Value, path, $"model.vocab[{Shown(p.Name)}]")));
        }
        if (vocab.Count == 0) throw Bad(path, "model.vocab", "is empty");
        var merges = new List<string>();
        if (model.TryGetProperty("merges", out var m) && m.ValueKind != JsonValueKind.Null)
        {
            if (m.ValueKind != JsonValueKind.Array) throw Bad(path, "model.merges", "must be an array");
            int i = 0;
            foreach (var merge in m.EnumerateArray())
            {
                merges.Add(MergeText(merge, path, $"model.merges[{i}]"));
                if (++i > MaxEntries) throw Bad(path, "model.merges", $"has more than {MaxEntries} merges");
            }
        }
        var special = new Dictionary<string, int>(StringComparer.Ordinal);
        if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind != JsonValueKind.Null)
        {
            if (added.ValueKind != JsonValueKind.Array) throw Bad(path, "added_tokens", "must be an array");
            int i = 0;
            foreach (var a in added.EnumerateArray())
            {
                if (i >= MaxEntries) throw Bad(path, "added_tokens", $"has more than {MaxEntries} tokens");
                var field = $"added_tokens[{i++}]";
                if (a.ValueKind != JsonValueKind.Object) throw Bad(path, field, "must be an object");
                if (!a.TryGetProperty("content", out var content)) throw Bad(path, $"{field}.content", "is missing");
                var text = NonEmptyString(content, path, $"{field}.content");
                if (!a.TryGetProperty("id", out var idElement)) throw Bad(path, $"{field}.id", "is missing");
                int id = TokenId(idElement, path, $"{field}.id");
                bool isSpecial = false;
                if (a.TryGetProperty("special", out var s))
                {
                    if (s.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw Bad(path, $"{field}.special", $"must be true or false, got {Printable(s)}");
                    isSpecial = s.ValueKind == JsonValueKind.True;
                }
                if (isSpecial && !special.TryAdd(text, id)) throw Bad(path, $"{field}.content", $"{Shown(text)} is added twice");
            }
        }

        // Pre-tokenization: a Split with a regex (Llama-3, Qwen) or ByteLevel's own GPT-2 pattern.
        string pattern = Gpt2Pattern, patternField = "the ByteLevel pre-tokenizer's GPT-2 pattern";
        if (root.TryGetProperty("pre_tokenizer", out var pre))
            foreach (var c in Components(pre, 0))
                if (TypeOf(c) == "Split" && c.TryGetProperty("pattern", out var pat))
                {
                    if (pat.ValueKind != JsonValueKind.Object) throw Bad(path, "pre_tokenizer Split pattern", "must be an object with Regex or String");
                    if (pat.TryGetProperty("Regex", out var rx))
                    {
                        pattern = NonEmptyString(rx, path, "pre_tokenizer Split pattern.Regex");
                        patternField = "pre_tokenizer Split pattern.Regex";
                    }
                    else if (pat.TryGetProperty("String", out var literal))
                    {
                        pattern = Regex.Escape(NonEmptyString(literal, path, "pre_tokenizer Split pattern.String"));
                        patternField = "pre_tokenizer Split pattern.String";
                    }
                    else throw Bad(path, "pre_tokenizer Split pattern", "has neither Regex nor String");
                    break;
                }
        if (pattern.Length > MaxPatternLength) throw Bad(path, patternField, $"is {pattern.Length} characters long, more than {MaxPatternLength}");
        Regex regex;
        try
        {
            regex = new Regex(pattern, RegexOptions.Compiled, MatchTimeout);
        }
        catch (ArgumentException e)
        {
            throw Bad(path, patternField, $"is not a valid regular expression: {e.Message}");
        }

        var options = new BpeOptions(vocab)
        {
            Merges = merges,
            ByteLevel = true,
            PreTokenizer = new GuardedPreTokenizer(regex, special.Keys, path, patternField),
            SpecialTokens = special.Count > 0 ? special : null,
        };
        if (model.TryGetProperty("unk_token", out var unk) && unk.ValueKind != JsonValueKind.Null)
            options.UnknownToken = NonEmptyString(unk, path, "model.unk_token");
        // The post-processor's template (Llama-3: <|begin_of_text|> $A) says which tokens frame a prompt.
        var (bos, eos) = TemplateTokens(root, path);
        if (bos is not null) options.BeginningOfSentenceToken = bos;
        if (eos is not null) options.EndOfSentenceToken = eos;
        try
        {
            return BpeTokenizer.Create(options);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException($"{path}: model (vocab, merges, special tokens) refused by the tokenizer library: {e.Message}");
        }
    }

    private static string MergeText(JsonElement merge, string path, string field)
    {
        if (merge.ValueKind == JsonValueKind.Array)
        {
            if (merge.GetArrayLength() != 2) throw Bad(path, field, $"must be a pair of tokens, got {Printable(merge)}");
            return NonEmptyString(merge[0], path, $"{field}[0]") + " " + NonEmptyString(merge[1], path, $"{field}[1]");
        }
        var text = NonEmptyString(merge, path, field);
        var parts = text.Split(' ');
        if (parts.Length != 2 || parts[0].Length == 0 || parts[1].Length == 0)
            throw Bad(path, field, $"must be two tokens separated by one space, got {Shown(text)}");
        return text;
    }

    private static (string? Bos, string? Eos) TemplateTokens(JsonElement root, string path)
    {
        if (!root.TryGetProperty("post_processor", out var post)) return (null, null);
        foreach (var c in Components(post, 0))
        {
            if (TypeOf(c) != "TemplateProcessing" || !c.TryGetProperty("single", out var single)) continue;
            if (single.ValueKind != JsonValueKind.Array) throw Bad(path, "post_processor TemplateProcessing single", "must be an array");
            var items = single.EnumerateArray().ToList();
            string? Special(JsonElement e, int i)
            {
                var field = $"post_processor TemplateProcessing single[{i}]";
                if (e.ValueKind != JsonValueKind.Object) throw Bad(path, field, "must be an object");
                if (!e.TryGetProperty("SpecialToken", out var st)) return null;
                if (st.ValueKind != JsonValueKind.Object || !st.TryGetProperty("id", out var id)) throw Bad(path, $"{field}.SpecialToken.id", "is missing");
                return NonEmptyString(id, path, $"{field}.SpecialToken.id");
            }
            return (items.Count > 0 ? Special(items[0], 0) : null, items.Count > 1 ? Special(items[^1], items.Count - 1) : null);
        }
        return (null, null);
    }

    private static Tokenizer FromSentencePiece(byte[] bytes, string path)
    {
        try
        {
            using var stream = new MemoryStream(bytes, writable: false);
            return SentencePieceTokenizer.Create(stream, addBeginningOfSentence: true, addEndOfSentence: false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException($"{path} is not a SentencePiece model this library reads: {e.Message}");
        }
    }

    /// <summary>
    /// The pre-tokenizer of a byte-level BPE: special tokens split out first (longest first), then
    /// the regex's matches in between. Empty matches are skipped (they hold no text, and a regex
    /// that matches nothing must not spin); each match is bounded by <see cref="MatchTimeout"/> and
    /// the whole text by <see cref="WorkBudget"/>.
    /// </summary>
    private sealed class GuardedPreTokenizer : PreTokenizer
    {
        private readonly Regex _regex;
        private readonly Regex? _specials;
        private readonly string _path, _field;

        public GuardedPreTokenizer(Regex regex, IEnumerable<string> specials, string path, string field)
        {
            _regex = regex;
            var ordered = specials.OrderByDescending(s => s.Length).ThenBy(s => s, StringComparer.Ordinal).Select(Regex.Escape).ToList();
            _specials = ordered.Count > 0 ? new Regex(string.Join("|", ordered), RegexOptions.Compiled, MatchTimeout) : null;
            _path = path;
            _field = field;
        }

        public override IEnumerable<(int Offset, int Length)> PreTokenize(string text) => Split(text.AsSpan());

        public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) => Split(text);

        private List<(int Offset, int Length)> Split(ReadOnlySpan<char> text)
        {
            var pieces = new List<(int, int)>();
            long deadline = Stopwatch.GetTimestamp() + (long)(WorkBudget(text.Length).TotalSeconds * Stopwatch.Frequency);
            int pos = 0;
            while (pos < text.Length)
            {
                int next = text.Length, specialLength = 0;
                if (_specials is not null)
                    foreach (var m in _specials.EnumerateMatches(text[pos..]))
                    {
                        if (m.Length == 0) continue;
                        next = pos + m.Index;
                        specialLength = m.Length;
                        break;
                    }
                foreach (var m in _regex.EnumerateMatches(text[pos..next]))
                {
                    if (m.Length > 0) pieces.Add((pos + m.Index, m.Length));
                    if (Stopwatch.GetTimestamp() > deadline)
                        throw new InvalidDataException($"{_path}: {_field} took more than {WorkBudget(text.Length).TotalSeconds:F0} s on a {text.Length}-character text; the regex is refused");
                }
                if (specialLength > 0) pieces.Add((next, specialLength));
                pos = next + specialLength;
            }
            return pieces;
        }
    }
}

/// <summary>
/// Turns a stream of generated token ids into text as it goes, printing only complete characters.
/// Incremental: each token decodes a short window (the tokens printed last, as context, and those
/// not printed yet), not the whole answer, so a long answer costs the same per token as a short one.
/// </summary>
public sealed class StreamingDecoder(ModelTokenizer tokenizer)
{
    private readonly List<int> _ids = [];
    private readonly StringBuilder _printed = new();
    private int _prefix, _read;

    /// <summary>Adds one token; returns the text it completes (possibly empty, e.g. half of a multi-byte character).</summary>
    public string Add(int id)
    {
        _ids.Add(id);
        var (delta, complete) = Pending();
        // A trailing replacement character is usually an incomplete UTF-8 sequence: wait for more tokens.
        if (!complete) return "";
        return Print(delta);
    }

    /// <summary>At the end of generation: the text still held back (an incomplete character decodes as U+FFFD).</summary>
    public string Flush() => _read < _ids.Count ? Print(Pending().Delta) : "";

    /// <summary>All text printed so far.</summary>
    public string Text => _printed.ToString();

    // The window: ids [_prefix, _read) were printed by the last step (context: a SentencePiece decoder
    // strips the leading space of a text, a byte-level one joins bytes across tokens), [_read, end) are new.
    private (string Delta, bool Complete) Pending()
    {
        var context = _read > _prefix ? tokenizer.Decode(_ids.GetRange(_prefix, _read - _prefix)) : "";
        var text = tokenizer.Decode(_ids.GetRange(_prefix, _ids.Count - _prefix));
        if (text.StartsWith(context, StringComparison.Ordinal)) return (text[context.Length..], !text.EndsWith('\uFFFD'));
        // The decoder changed the context's text (rare): print what follows the common prefix.
        int common = 0;
        while (common < context.Length && common < text.Length && context[common] == text[common]) common++;
        return (text[common..], !text.EndsWith('\uFFFD'));
    }

    private string Print(string delta)
    {
        _prefix = _read;
        _read = _ids.Count;
        _printed.Append(delta);
        return delta;
    }
}
