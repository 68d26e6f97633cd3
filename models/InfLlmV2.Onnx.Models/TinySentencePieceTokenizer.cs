using System.Globalization;
using System.Text;
using System.Text.Json;

namespace InfLlmV2.Onnx.Models;

/// <summary>
/// Writes a small SentencePiece-style <c>tokenizer.json</c> (Hugging Face format, as Llama-2 and
/// Mistral export it): a BPE over characters with the word-start mark U+2581 ("▁"), a normalizer
/// that prepends "▁" and turns spaces into "▁", byte fallback (<c>&lt;0x00&gt;</c>..<c>&lt;0xFF&gt;</c>)
/// for characters outside the vocabulary, <c>&lt;unk&gt;</c>/<c>&lt;s&gt;</c>/<c>&lt;/s&gt;</c> as
/// ids 0-2, a post-processor that puts <c>&lt;s&gt;</c> first, and the decoder sequence Replace,
/// ByteFallback, Fuse, Strip. Merges are learned from a fixed English text, so the file is the same
/// on every run.
/// </summary>
public static class TinySentencePieceTokenizer
{
    /// <summary>The word-start mark.</summary>
    public const string Mark = "\u2581";

    private const string Corpus =
        "The model reads a long document and answers a question about it. The sparse mode keeps the first block, "
        + "the local window and the top blocks chosen by their scores. Hello, world! 0123456789 and the end.";

    /// <summary>The tokenizer.json text for at most <paramref name="vocab"/> ids (at least 300).</summary>
    public static string Json(int vocab)
    {
        if (vocab < 300) throw new ArgumentOutOfRangeException(nameof(vocab), vocab, "needs at least 300 ids");
        var tokens = new List<string> { "<unk>", "<s>", "</s>" };
        for (int b = 0; b < 256; b++) tokens.Add($"<0x{b:X2}>");
        var known = new HashSet<string>(tokens, StringComparer.Ordinal);
        var normalized = Mark + Corpus.Replace(" ", Mark, StringComparison.Ordinal);
        foreach (var c in EnumerateElements(normalized))
            if (known.Add(c)) tokens.Add(c);
        // Words start at each mark; merges never cross one.
        var words = normalized.Split(Mark, StringSplitOptions.RemoveEmptyEntries).Select(w => new List<string> { Mark }.Concat(EnumerateElements(w)).ToList()).ToList();
        var merges = new List<(string, string)>();
        while (tokens.Count < vocab)
        {
            var counts = new Dictionary<(string, string), int>();
            foreach (var w in words)
                for (int i = 0; i + 1 < w.Count; i++)
                    counts[(w[i], w[i + 1])] = counts.GetValueOrDefault((w[i], w[i + 1])) + 1;
            if (counts.Count == 0) break;
            var best = counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key.Item1, StringComparer.Ordinal)
                .ThenBy(kv => kv.Key.Item2, StringComparer.Ordinal).First().Key;
            merges.Add(best);
            if (known.Add(best.Item1 + best.Item2)) tokens.Add(best.Item1 + best.Item2);
            foreach (var w in words)
                for (int i = 0; i + 1 < w.Count; i++)
                    if (w[i] == best.Item1 && w[i + 1] == best.Item2)
                    {
                        w[i] += w[i + 1];
                        w.RemoveAt(i + 1);
                    }
        }

        using var stream = new MemoryStream();
        using (var j = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            j.WriteStartObject();
            j.WriteString("version", "1.0");
            j.WriteStartArray("added_tokens");
            for (int id = 0; id < 3; id++)
                TinyTokenizer.WriteSpecialToken(j, id, tokens[id]);
            j.WriteEndArray();
            j.WriteStartObject("normalizer");
            j.WriteString("type", "Sequence");
            j.WriteStartArray("normalizers");
            j.WriteStartObject();
            j.WriteString("type", "Prepend");
            j.WriteString("prepend", Mark);
            j.WriteEndObject();
            j.WriteStartObject();
            j.WriteString("type", "Replace");
            j.WriteStartObject("pattern");
            j.WriteString("String", " ");
            j.WriteEndObject();
            j.WriteString("content", Mark);
            j.WriteEndObject();
            j.WriteEndArray();
            j.WriteEndObject();
            j.WriteNull("pre_tokenizer");
            j.WriteStartObject("post_processor");
            j.WriteString("type", "TemplateProcessing");
            j.WriteStartArray("single");
            j.WriteStartObject();
            j.WriteStartObject("SpecialToken");
            j.WriteString("id", "<s>");
            j.WriteNumber("type_id", 0);
            j.WriteEndObject();
            j.WriteEndObject();
            j.WriteStartObject();
            j.WriteStartObject("Sequence");
            j.WriteString("id", "A");
            j.WriteNumber("type_id", 0);
            j.WriteEndObject();
            j.WriteEndObject();
            j.WriteEndArray();
            j.WriteStartArray("pair");
            j.WriteEndArray();
            j.WriteStartObject("special_tokens");
            j.WriteStartObject("<s>");
            j.WriteString("id", "<s>");
            j.WriteStartArray("ids");
            j.WriteNumberValue(1);
            j.WriteEndArray();
            j.WriteStartArray("tokens");
            j.WriteStringValue("<s>");
            j.WriteEndArray();
            j.WriteEndObject();
            j.WriteEndObject();
            j.WriteEndObject();
            j.WriteStartObject("decoder");
            j.WriteString("type", "Sequence");
            j.WriteStartArray("decoders");
            j.WriteStartObject();
            j.WriteString("type", "Replace");
            j.WriteStartObject("pattern");
            j.WriteString("String", Mark);
            j.WriteEndObject();
            j.WriteString("content", " ");
            j.WriteEndObject();
            j.WriteStartObject();
            j.WriteString("type", "ByteFallback");
            j.WriteEndObject();
            j.WriteStartObject();
            j.WriteString("type", "Fuse");
            j.WriteEndObject();
            j.WriteStartObject();
            j.WriteString("type", "Strip");
            j.WriteString("content", " ");
            j.WriteNumber("start", 1);
            j.WriteNumber("stop", 0);
            j.WriteEndObject();
            j.WriteEndArray();
            j.WriteEndObject();
            j.WriteStartObject("model");
            j.WriteString("type", "BPE");
            j.WriteNull("dropout");
            j.WriteString("unk_token", "<unk>");
            j.WriteNull("continuing_subword_prefix");
            j.WriteNull("end_of_word_suffix");
            j.WriteBoolean("fuse_unk", true);
            j.WriteBoolean("byte_fallback", true);
            j.WriteStartObject("vocab");
            for (int i = 0; i < tokens.Count; i++) j.WriteNumber(tokens[i], i);
            j.WriteEndObject();
            j.WriteStartArray("merges");
            foreach (var (a, b) in merges) j.WriteStringValue(a + " " + b);
            j.WriteEndArray();
            j.WriteEndObject();
            j.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>The tokenizer_config.json text: Llama's class, <c>&lt;s&gt;</c> added first, <c>&lt;/s&gt;</c> as end of sequence.</summary>
    public static string ConfigJson() => JsonSerializer.Serialize(new Dictionary<string, object?>
    {
        ["tokenizer_class"] = "LlamaTokenizer", ["add_bos_token"] = true, ["add_eos_token"] = false,
        ["bos_token"] = "<s>", ["eos_token"] = "</s>", ["unk_token"] = "<unk>", ["legacy"] = true, ["model_max_length"] = 1024,
    }, new JsonSerializerOptions { WriteIndented = true });

    /// <summary>Writes <c>tokenizer.json</c> and <c>tokenizer_config.json</c> into <paramref name="folder"/>.</summary>
    public static void Write(string folder, int vocab)
    {
        var json = Encoding.UTF8.GetBytes(Json(vocab));
        InfLlmV2.Onnx.GraphTools.SafeFiles.WriteAtomically(Path.Combine(folder, "tokenizer.json"), s => s.Write(json), "tokenizer output");
        var config = Encoding.UTF8.GetBytes(ConfigJson());
        InfLlmV2.Onnx.GraphTools.SafeFiles.WriteAtomically(Path.Combine(folder, "tokenizer_config.json"), s => s.Write(config), "tokenizer output");
    }

    private static IEnumerable<string> EnumerateElements(string s)
    {
        var e = StringInfo.GetTextElementEnumerator(s);
        while (e.MoveNext()) yield return (string)e.Current;
    }
}
