using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Google.Protobuf;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.Text;

/// <summary>
/// The two ONNX models that tokenize a model folder's text through ONNX Runtime Extensions
/// (<c>ai.onnx.contrib</c> operators): <see cref="Encoder"/> (<c>text</c>, a string tensor [1] ->
/// <c>input_ids</c>, int64 [1, n]) runs <c>HfJsonTokenizer</c> on the folder's <c>tokenizer.json</c>
/// and <c>tokenizer_config.json</c>, held as its attributes; <see cref="Decoder"/> (<c>ids</c>, int64
/// [n] -> <c>text</c>, a string tensor [1]) runs <c>BpeDecoder</c> over a table of every id's bytes,
/// computed here from the tokenizer.json decoder, then (SentencePiece-style decoders) a
/// <c>StringRegexReplace</c> that strips the one leading space the decoder's <c>Strip</c> or
/// <c>Metaspace</c> removes.
/// </summary>
/// <remarks>
/// Supported: a <c>BPE</c> model whose decoder is <c>ByteLevel</c> (GPT-2, Llama-3, Qwen), or a
/// sequence of <c>Replace</c> (literal strings), <c>ByteFallback</c>, <c>Fuse</c> and <c>Strip</c>
/// (one leading space), or <c>Metaspace</c> (Llama-2, Mistral). Added tokens decode to their content.
/// Anything else is refused (<see cref="Build"/> says why), and the caller keeps another tokenizer.
/// </remarks>
public sealed class TokenizerGraphs
{
    /// <summary>File name of the encoding model written next to a model.</summary>
    public const string EncoderFile = "tokenizer.onnx";

    /// <summary>File name of the decoding model written next to a model.</summary>
    public const string DecoderFile = "detokenizer.onnx";

    /// <summary>The encoder's input (a string tensor of shape [1]).</summary>
    public const string TextName = "text";

    /// <summary>The encoder's output (int64 [1, n]).</summary>
    public const string IdsOutputName = "input_ids";

    /// <summary>The decoder's input (int64 [n]).</summary>
    public const string IdsInputName = "ids";

    private TokenizerGraphs(ModelProto encoder, ModelProto decoder, string tokenizerClass, int vocabularySize, string kind)
    {
        Encoder = encoder;
        Decoder = decoder;
        TokenizerClass = tokenizerClass;
        VocabularySize = vocabularySize;
        Kind = kind;
    }

    /// <summary>Text to ids: <c>HfJsonTokenizer</c>.</summary>
    public ModelProto Encoder { get; }

    /// <summary>Ids to text: <c>BpeDecoder</c> (+ <c>StringRegexReplace</c>).</summary>
    public ModelProto Decoder { get; }

    /// <summary>The tokenizer class the encoder runs as (tokenizer_config.json's, or one chosen from the model type).</summary>
    public string TokenizerClass { get; }

    /// <summary>Ids the decoder knows: 0 to this size - 1.</summary>
    public int VocabularySize { get; }

    /// <summary>"byte-level BPE" or "SentencePiece-style BPE".</summary>
    public string Kind { get; }

    /// <summary>
    /// Builds both graphs from a parsed <c>tokenizer.json</c> (<paramref name="tokenizerJson"/>, its
    /// text <paramref name="tokenizerText"/>) and the text of <c>tokenizer_config.json</c> (null when the
    /// folder has none).
    /// </summary>
    /// <param name="tokenizerJson">The parsed tokenizer.json.</param>
    /// <param name="tokenizerText">Its text, given to the encoder op as is.</param>
    /// <param name="configText">tokenizer_config.json's text, or null.</param>
    /// <param name="tokenizerClass">The class to run as instead of the config's (null: the config's, else one chosen from the model type).</param>
    /// <param name="why">When null is returned: why the tokenizer is not supported.</param>
    /// <returns>The graphs, or null when the tokenizer is not one of the supported kinds.</returns>
    public static TokenizerGraphs? Build(JsonElement tokenizerJson, string tokenizerText, string? configText, string? tokenizerClass, out string why)
    {
        ArgumentNullException.ThrowIfNull(tokenizerText);
        var table = DecodeTable(tokenizerJson, out why, out var stripLeadingSpace, out var kind);
        if (table is null) return null;
        JsonObject config;
        try
        {
            config = configText is null ? [] : JsonNode.Parse(configText) as JsonObject ?? throw new JsonException("not an object");
        }
        catch (JsonException e)
        {
            why = $"tokenizer_config.json is not a JSON object ({e.Message})";
            return null;
        }
        config.Remove("chat_template");  // the op does not read it; long templates would only grow the graph
        var cls = tokenizerClass ?? (config["tokenizer_class"] is JsonValue v && v.TryGetValue<string>(out var s) && s.Length > 0 ? s : DefaultClass(kind));
        config["tokenizer_class"] = cls;
        var encoder = EncoderGraph(tokenizerText, config.ToJsonString());
        var decoder = DecoderGraph(table, stripLeadingSpace);
        why = "";
        return new TokenizerGraphs(encoder, decoder, cls, table.Length, kind);
    }

    /// <summary>The class the encoder runs as when tokenizer_config.json names none (or one the Extensions do not know).</summary>
    public static string DefaultClass(string kind) => kind == "byte-level BPE" ? "GPT2Tokenizer" : "LlamaTokenizer";

    /// <summary>
    /// Writes <see cref="EncoderFile"/> and <see cref="DecoderFile"/> into <paramref name="folder"/>
    /// (each atomically); returns the paths written.
    /// </summary>
    /// <exception cref="IOException">A file exists and <paramref name="force"/> is false.</exception>
    public IReadOnlyList<string> Write(string folder, bool force)
    {
        var paths = new[] { Path.Combine(folder, EncoderFile), Path.Combine(folder, DecoderFile) };
        if (!force)
            foreach (var p in paths)
                if (SafeFiles.Kind(p, followLinks: false) != FileKind.Missing)
                    throw new IOException($"{p} exists; pass --force to overwrite it");
        foreach (var (p, m) in paths.Zip([Encoder, Decoder]))
        {
            SafeFiles.CheckWritableTarget(p, "tokenizer graph:");
            var bytes = m.ToByteArray();
            SafeFiles.WriteAtomically(p, s => s.Write(bytes), "tokenizer graph");
        }
        return paths;
    }

    private static ModelProto EncoderGraph(string tokenizerText, string configText)
    {
        var g = new GraphProto { Name = "tokenizer" };
        g.Node.Add(GraphBuilder.Node("HfJsonTokenizer", ExtensionsOpLibrary.Domain, [TextName], [IdsOutputName],
            [StringAttr("tokenizer_vocab", tokenizerText), StringAttr("tokenizer_config", configText)]));
        g.Input.Add(GraphBuilder.Tensor(TextName, TensorProto.Types.DataType.String, 1));
        g.Output.Add(GraphBuilder.Tensor(IdsOutputName, TensorProto.Types.DataType.Int64, 1, null));
        return GraphBuilder.Model(g, ("", 17), (ExtensionsOpLibrary.Domain, 1));
    }

    private static ModelProto DecoderGraph(byte[][] table, bool stripLeadingSpace)
    {
        // BpeDecoder maps each character of a token through byte_decoder to one byte: the tokens are
        // written in GPT-2's byte alphabet, so any byte sequence (a piece of a UTF-8 character too) fits.
        var byteChars = ByteLevelAlphabet();
        var idVocab = new StringBuilder();
        for (int id = 0; id < table.Length; id++)
        {
            if (id > 0) idVocab.Append('\n');
            foreach (var b in table[id]) idVocab.Append(byteChars[b]);
        }
        var byteDecoder = string.Join("\n", Enumerable.Range(0, 256).Select(b => $"{(int)byteChars[b]}\t{b}"));
        var g = new GraphProto { Name = "detokenizer" };
        var raw = stripLeadingSpace ? "decoded" : TextName;
        g.Node.Add(GraphBuilder.Node("BpeDecoder", ExtensionsOpLibrary.Domain, [IdsInputName], [raw],
        [
            StringAttr("id_vocab", idVocab.ToString()), StringAttr("byte_decoder", byteDecoder),
            // An id past the table decodes to nothing (the caller checks ids first); special tokens are kept.
            StringAttr("unk_token", ""), GraphBuilder.Attr("skip_special_tokens", 0L), GraphBuilder.Attr("whitespace_token", 0L),
        ]));
        if (stripLeadingSpace)
        {
            g.Initializer.Add(StringTensor("leading_space", "^ "));
            g.Initializer.Add(StringTensor("nothing", ""));
            g.Node.Add(GraphBuilder.Node("StringRegexReplace", ExtensionsOpLibrary.Domain, [raw, "leading_space", "nothing"], [TextName],
                [GraphBuilder.Attr("global_replace", 0L)]));
        }
        g.Input.Add(GraphBuilder.Tensor(IdsInputName, TensorProto.Types.DataType.Int64, [null]));
        g.Output.Add(GraphBuilder.Tensor(TextName, TensorProto.Types.DataType.String, 1));
        return GraphBuilder.Model(g, ("", 17), (ExtensionsOpLibrary.Domain, 1));
    }

    private static AttributeProto StringAttr(string name, string value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(value) };

    private static TensorProto StringTensor(string name, string value)
    {
        var t = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.String };
        t.Dims.Add(1);
        t.StringData.Add(ByteString.CopyFromUtf8(value));
        return t;
    }

    /// <summary>GPT-2's reversible map from bytes to printable characters (space becomes 'Ġ').</summary>
    internal static char[] ByteLevelAlphabet()
    {
        var map = new char[256];
        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[b] = printable ? (char)b : (char)(256 + next++);
        }
        return map;
    }

    /// <summary>
    /// Every id's bytes as the tokenizer.json decoder turns that token into text (null with
    /// <paramref name="why"/> when the decoder or model is not supported).
    /// </summary>
    private static byte[][]? DecodeTable(JsonElement root, out string why, out bool stripLeadingSpace, out string kind)
    {
        stripLeadingSpace = false;
        kind = "";
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
        {
            why = "tokenizer.json has no \"model\" object";
            return null;
        }
        var type = model.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
        if (type != "BPE")
        {
            why = $"its model.type is {(type is null ? "not stated" : $"'{type}'")}; the tokenizer graphs support BPE";
            return null;
        }
        if (!model.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object)
        {
            why = "model.vocab is missing or not an object";
            return null;
        }
        bool byteFallback = model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True;

        // The decoder's steps, flattened.
        var steps = new List<JsonElement>();
        if (root.TryGetProperty("decoder", out var dec) && dec.ValueKind == JsonValueKind.Object)
        {
            if (TypeOf(dec) == "Sequence")
            {
                if (!dec.TryGetProperty("decoders", out var list) || list.ValueKind != JsonValueKind.Array)
                {
                    why = "decoder Sequence has no decoders array";
                    return null;
                }
                steps.AddRange(list.EnumerateArray());
            }
            else steps.Add(dec);
        }
        if (steps.Count == 0)
        {
            why = "tokenizer.json has no decoder";
            return null;
        }
        bool byteLevel = false, fused = false, metaspace = false;
        var replaces = new List<(string From, string To)>();
        foreach (var step in steps)
        {
            switch (TypeOf(step))
            {
                case "ByteLevel":
                    byteLevel = true;
                    break;
                case "Replace":
                    if (!step.TryGetProperty("pattern", out var p) || p.ValueKind != JsonValueKind.Object || !p.TryGetProperty("String", out var from)
                        || from.ValueKind != JsonValueKind.String || from.GetString()!.Length == 0
                        || !step.TryGetProperty("content", out var to) || to.ValueKind != JsonValueKind.String)
                    {
                        why = "decoder Replace is not a literal string replacement";
                        return null;
                    }
                    replaces.Add((from.GetString()!, to.GetString()!));
                    break;
                case "ByteFallback":
                    byteFallback = true;
                    break;
                case "Fuse":
                    fused = true;
                    break;
                case "Strip":
                    var content = step.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString() : null;
                    var start = step.TryGetProperty("start", out var s0) && s0.TryGetInt32(out var sv) ? sv : -1;
                    var stop = step.TryGetProperty("stop", out var s1) && s1.TryGetInt32(out var ev) ? ev : -1;
                    if (content != " " || start != 1 || stop != 0 || !fused)
                    {
                        why = "decoder Strip is not the one leading space of a fused text";
                        return null;
                    }
                    stripLeadingSpace = true;
                    break;
                case "Metaspace":
                    var replacement = step.TryGetProperty("replacement", out var r) && r.ValueKind == JsonValueKind.String ? r.GetString()! : "\u2581";
                    if (replacement.Length == 0)
                    {
                        why = "decoder Metaspace has an empty replacement";
                        return null;
                    }
                    replaces.Add((replacement, " "));
                    var scheme = step.TryGetProperty("prepend_scheme", out var ps) && ps.ValueKind == JsonValueKind.String ? ps.GetString() : null;
                    var addPrefix = !step.TryGetProperty("add_prefix_space", out var ap) || ap.ValueKind != JsonValueKind.False;
                    stripLeadingSpace = scheme is null ? addPrefix : scheme != "never";
                    metaspace = true;
                    break;
                default:
                    why = $"its decoder step '{TypeOf(step) ?? "(no type)"}' is not supported by the tokenizer graphs";
                    return null;
            }
        }
        if (byteLevel && (replaces.Count > 0 || stripLeadingSpace))
        {
            why = "its decoder mixes ByteLevel with SentencePiece-style steps";
            return null;
        }
        kind = byteLevel ? "byte-level BPE" : "SentencePiece-style BPE";
        if (!byteLevel && !metaspace && replaces.Count == 0)
        {
            why = "its decoder neither maps bytes (ByteLevel) nor word marks (Replace, Metaspace)";
            return null;
        }

        var tokens = new Dictionary<int, (string Text, bool Added)>();
        foreach (var p in vocab.EnumerateObject())
            if (p.Value.TryGetInt32(out var id) && id >= 0 && id <= ModelTokenizer.MaxTokenId)
                tokens[id] = (p.Name, false);
        if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
            foreach (var a in added.EnumerateArray())
                if (a.ValueKind == JsonValueKind.Object && a.TryGetProperty("id", out var idE) && idE.TryGetInt32(out var id)
                    && id >= 0 && id <= ModelTokenizer.MaxTokenId && a.TryGetProperty("content", out var ce) && ce.ValueKind == JsonValueKind.String)
                    tokens[id] = (ce.GetString()!, true);
        if (tokens.Count == 0)
        {
            why = "model.vocab is empty";
            return null;
        }
        var charToByte = new Dictionary<char, byte>();
        var alphabet = ByteLevelAlphabet();
        for (int b = 0; b < 256; b++) charToByte[alphabet[b]] = (byte)b;
        var table = new byte[tokens.Keys.Max() + 1][];
        var bytes = new List<byte>();
        for (int id = 0; id < table.Length; id++)
        {
            if (!tokens.TryGetValue(id, out var token))
            {
                table[id] = [];
                continue;
            }
            if (token.Added)
                table[id] = Encoding.UTF8.GetBytes(token.Text);
            else if (byteLevel)
            {
                bytes.Clear();
                foreach (var rune in token.Text.EnumerateRunes())
                {
                    if (rune.IsBmp && charToByte.TryGetValue((char)rune.Value, out var b)) bytes.Add(b);
                    else bytes.AddRange(Encoding.UTF8.GetBytes(rune.ToString()));
                }
                table[id] = [.. bytes];
            }
            else if (byteFallback && token.Text.Length == 6 && token.Text.StartsWith("<0x", StringComparison.Ordinal) && token.Text[5] == '>'
                && byte.TryParse(token.Text.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out var raw))
                table[id] = [raw];
            else
            {
                var text = token.Text;
                foreach (var (from, to) in replaces) text = text.Replace(from, to, StringComparison.Ordinal);
                table[id] = Encoding.UTF8.GetBytes(text);
            }
        }
        why = "";
        return table;
    }

    private static string? TypeOf(JsonElement e) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
}
