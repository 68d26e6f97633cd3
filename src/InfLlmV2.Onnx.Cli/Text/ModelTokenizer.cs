using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace InfLlmV2.Onnx.Cli.Text;

/// <summary>
/// The tokenizer of a model folder, through <c>Microsoft.ML.Tokenizers</c>: a byte-level BPE
/// <c>tokenizer.json</c> (Hugging Face format, as in GPT-2, Llama-3, Qwen) or a SentencePiece
/// <c>tokenizer.model</c> (Llama-2, MiniCPM). We only read the files' settings; the encoding and
/// decoding are the library's.
/// </summary>
public sealed class ModelTokenizer
{
    /// <summary>The Hugging Face tokenizer file name.</summary>
    public const string JsonFile = "tokenizer.json";

    /// <summary>The SentencePiece model file name.</summary>
    public const string SentencePieceFile = "tokenizer.model";

    // GPT-2's pre-tokenizer pattern (ByteLevel with use_regex=true).
    private const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly Tokenizer _tokenizer;

    private ModelTokenizer(Tokenizer tokenizer, string path, string kind)
    {
        _tokenizer = tokenizer;
        Path = path;
        Kind = kind;
    }

    /// <summary>The file the tokenizer was read from.</summary>
    public string Path { get; }

    /// <summary>"byte-level BPE" or "SentencePiece".</summary>
    public string Kind { get; }

    /// <summary>
    /// Loads the tokenizer of the folder holding <paramref name="modelPath"/> (a model file or its
    /// folder): <c>tokenizer.json</c> when it is a byte-level BPE, else <c>tokenizer.model</c>.
    /// </summary>
    /// <exception cref="FileNotFoundException">Neither file exists; the message names both paths looked for.</exception>
    /// <exception cref="NotSupportedException">tokenizer.json is not a byte-level BPE and there is no tokenizer.model.</exception>
    /// <exception cref="InvalidDataException">A tokenizer file could not be read.</exception>
    public static ModelTokenizer ForModel(string modelPath)
    {
        var folder = Directory.Exists(modelPath) ? modelPath : System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(modelPath))!;
        var json = System.IO.Path.Combine(folder, JsonFile);
        var sp = System.IO.Path.Combine(folder, SentencePieceFile);
        string? jsonProblem = null;
        if (File.Exists(json))
        {
            using var doc = ReadJson(json);
            jsonProblem = ByteLevelProblem(doc.RootElement);
            if (jsonProblem is null) return new ModelTokenizer(FromJson(doc.RootElement, json), json, "byte-level BPE");
        }
        if (File.Exists(sp)) return new ModelTokenizer(FromSentencePiece(sp), sp, "SentencePiece");
        if (jsonProblem is not null)
            throw new NotSupportedException($"{json}: {jsonProblem}, and there is no {SentencePieceFile} next to it");
        throw new FileNotFoundException($"no tokenizer for {modelPath}: looked for {json} (byte-level BPE) and {sp} (SentencePiece)", json);
    }

    /// <summary>Encodes <paramref name="text"/> as the model's prompt (with the beginning-of-sequence token when the tokenizer adds one).</summary>
    public int[] Encode(string text) => [.. _tokenizer.EncodeToIds(text)];

    /// <summary>Decodes <paramref name="ids"/> to text.</summary>
    public string Decode(IEnumerable<int> ids) => _tokenizer.Decode(ids);

    private static JsonDocument ReadJson(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path} is not valid JSON: {e.Message}");
        }
    }

    /// <summary>Null when the document is a byte-level BPE this reader handles, else why not.</summary>
    private static string? ByteLevelProblem(JsonElement root)
    {
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            return "has no \"model\" object";
        var type = model.TryGetProperty("type", out var t) ? t.GetString() : null;
        if (type != "BPE") return $"its model type is {type ?? "not stated"}, not BPE";
        if (!HasType(root, "pre_tokenizer", "ByteLevel") && !HasType(root, "decoder", "ByteLevel"))
            return "it is not a byte-level BPE (no ByteLevel pre-tokenizer or decoder; SentencePiece-style JSON needs its tokenizer.model)";
        return null;
    }

    private static bool HasType(JsonElement root, string section, string type) =>
        root.TryGetProperty(section, out var e) && Components(e).Any(c => c.TryGetProperty("type", out var t) && t.GetString() == type);

    // A component or the members of a Sequence component.
    private static IEnumerable<JsonElement> Components(JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Object) yield break;
        yield return e;
        foreach (var key in new[] { "pretokenizers", "decoders", "processors", "normalizers" })
            if (e.TryGetProperty(key, out var list) && list.ValueKind == JsonValueKind.Array)
                foreach (var inner in list.EnumerateArray())
                    foreach (var c in Components(inner))
                        yield return c;
    }

    private static Tokenizer FromJson(JsonElement root, string path)
    {
        var model = root.GetProperty("model");
        var vocab = model.GetProperty("vocab").EnumerateObject().Select(p => new KeyValuePair<string, int>(p.Name, p.Value.GetInt32())).ToList();
        var merges = model.TryGetProperty("merges", out var m) ? m.EnumerateArray().Select(MergeText).ToList() : [];
        var special = new Dictionary<string, int>(StringComparer.Ordinal);
        if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
            foreach (var a in added.EnumerateArray())
                if (a.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True)
                    special[a.GetProperty("content").GetString()!] = a.GetProperty("id").GetInt32();

        // Pre-tokenization: a Split with a regex (Llama-3, Qwen) or ByteLevel's own GPT-2 pattern.
        string pattern = Gpt2Pattern;
        if (root.TryGetProperty("pre_tokenizer", out var pre))
            foreach (var c in Components(pre))
                if (c.TryGetProperty("type", out var ct) && ct.GetString() == "Split" && c.TryGetProperty("pattern", out var pat)
                    && pat.TryGetProperty("Regex", out var rx))
                {
                    pattern = rx.GetString()!;
                    break;
                }

        var options = new BpeOptions(vocab)
        {
            Merges = merges,
            ByteLevel = true,
            PreTokenizer = new RegexPreTokenizer(new Regex(pattern, RegexOptions.Compiled), special.Count > 0 ? special : null),
            SpecialTokens = special.Count > 0 ? special : null,
        };
        if (model.TryGetProperty("unk_token", out var unk) && unk.ValueKind == JsonValueKind.String) options.UnknownToken = unk.GetString();
        // The post-processor's template (Llama-3: <|begin_of_text|> $A) says which tokens frame a prompt.
        var (bos, eos) = TemplateTokens(root);
        if (bos is not null) options.BeginningOfSentenceToken = bos;
        if (eos is not null) options.EndOfSentenceToken = eos;
        try
        {
            return BpeTokenizer.Create(options);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{path}: {e.Message}");
        }
    }

    private static string MergeText(JsonElement merge) => merge.ValueKind == JsonValueKind.Array
        ? string.Join(' ', merge.EnumerateArray().Select(x => x.GetString()))
        : merge.GetString()!;

    private static (string? Bos, string? Eos) TemplateTokens(JsonElement root)
    {
        if (!root.TryGetProperty("post_processor", out var post)) return (null, null);
        foreach (var c in Components(post))
        {
            if (!c.TryGetProperty("type", out var t) || t.GetString() != "TemplateProcessing" || !c.TryGetProperty("single", out var single)) continue;
            var items = single.EnumerateArray().ToList();
            string? Special(JsonElement e) => e.TryGetProperty("SpecialToken", out var st) ? st.GetProperty("id").GetString() : null;
            return (items.Count > 0 ? Special(items[0]) : null, items.Count > 1 ? Special(items[^1]) : null);
        }
        return (null, null);
    }

    private static Tokenizer FromSentencePiece(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            return SentencePieceTokenizer.Create(stream, addBeginningOfSentence: true, addEndOfSentence: false);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or NotSupportedException
                                   or Google.Protobuf.InvalidProtocolBufferException)
        {
            throw new InvalidDataException($"{path} is not a SentencePiece model this library reads: {e.Message}");
        }
    }
}

/// <summary>Turns a stream of generated token ids into text as it goes, printing only complete characters.</summary>
public sealed class StreamingDecoder(ModelTokenizer tokenizer)
{
    private readonly List<int> _ids = [];
    private string _printed = "";

    /// <summary>Adds one token; returns the text it completes (possibly empty, e.g. half of a multi-byte character).</summary>
    public string Add(int id)
    {
        _ids.Add(id);
        var text = tokenizer.Decode(_ids);
        // A trailing replacement character is usually an incomplete UTF-8 sequence: wait for more tokens.
        if (text.EndsWith('\uFFFD')) return "";
        if (!text.StartsWith(_printed, StringComparison.Ordinal))
        {
            // The decoder changed earlier text (rare): print what follows the common prefix.
            int common = 0;
            while (common < _printed.Length && common < text.Length && _printed[common] == text[common]) common++;
            _printed = text;
            return text[common..];
        }
        var delta = text[_printed.Length..];
        _printed = text;
        return delta;
    }

    /// <summary>At the end of generation: the text still held back (an incomplete character decodes as U+FFFD).</summary>
    public string Flush()
    {
        var text = tokenizer.Decode(_ids);
        var rest = text.StartsWith(_printed, StringComparison.Ordinal) ? text[_printed.Length..] : "";
        _printed = text;
        return rest;
    }

    /// <summary>All text decoded so far.</summary>
    public string Text => _printed;
}
