using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace InfLlmV2.Onnx.Models;

/// <summary>
/// Writes a small byte-level BPE <c>tokenizer.json</c> (Hugging Face format, GPT-2 style) for a
/// generated tiny decoder: ids 0-255 are the 256 bytes, then merges learned from a fixed English
/// text until the vocabulary is full or the text has no pair left to merge (ids then stay unused),
/// and the last id is <see cref="EndOfText"/>. Every text
/// encodes (bytes are always in the vocabulary) and decodes back exactly. The model's weights are
/// random, so what it generates is meaningless; the text path is real.
/// </summary>
public static class TinyTokenizer
{
    /// <summary>The special end-of-text token (the last id of the vocabulary).</summary>
    public const string EndOfText = "<|endoftext|>";

    /// <summary>GPT-2's pre-tokenizer pattern (the ByteLevel pre-tokenizer with use_regex).</summary>
    public const string Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private const string Corpus =
        "The model reads a long document and answers a question about it. Long context needs attention that does not "
        + "look at every token: the sparse mode keeps the first block, the local window and the top blocks chosen by "
        + "their scores, while the dense mode looks at all of them. On short prompts the two modes are the same. "
        + "The session keeps the key and value cache, runs the prefill in chunks and then decodes one token at a time. "
        + "This is the tiny tokenizer of the demo model; its text means nothing, but the path from text to tokens and "
        + "back is the one a real model folder takes. Hello, world! 0123456789 and the end.";

    /// <summary>The tokenizer.json text for a vocabulary of <paramref name="vocab"/> ids (at least 257).</summary>
    public static string Json(int vocab)
    {
        if (vocab < 257) throw new ArgumentOutOfRangeException(nameof(vocab), vocab, "a byte-level vocabulary needs at least 257 ids");
        var byteChars = ByteToChar();
        var tokens = new List<string>();
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int b = 0; b < 256; b++) Add(byteChars[b].ToString());

        // Words of the corpus as symbol sequences (pre-tokenized like the tokenizer will, bytes mapped to chars).
        var words = Regex.Matches(Corpus, Pattern).Select(m => Encoding.UTF8.GetBytes(m.Value).Select(b => byteChars[b].ToString()).ToList()).ToList();
        var merges = new List<string[]>();
        while (tokens.Count < vocab - 1)
        {
            var counts = new Dictionary<(string, string), int>();
            foreach (var w in words)
                for (int i = 0; i + 1 < w.Count; i++)
                    counts[(w[i], w[i + 1])] = counts.GetValueOrDefault((w[i], w[i + 1])) + 1;
            if (counts.Count == 0) break;
            // The most frequent pair; ties broken by ordinal order, so the file is the same on every run.
            var best = counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key.Item1, StringComparer.Ordinal)
                .ThenBy(kv => kv.Key.Item2, StringComparer.Ordinal).First().Key;
            merges.Add([best.Item1, best.Item2]);
            Add(best.Item1 + best.Item2);
            foreach (var w in words)
                for (int i = 0; i + 1 < w.Count; i++)
                    if (w[i] == best.Item1 && w[i + 1] == best.Item2)
                    {
                        w[i] += w[i + 1];
                        w.RemoveAt(i + 1);
                    }
        }
        int eot = vocab - 1;

        using var stream = new MemoryStream();
        using (var j = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            j.WriteStartObject();
            j.WriteString("version", "1.0");
            j.WriteStartArray("added_tokens");
            WriteSpecialToken(j, eot, EndOfText);
            j.WriteEndArray();
            j.WriteNull("normalizer");
            j.WriteStartObject("pre_tokenizer");
            j.WriteString("type", "ByteLevel");
            j.WriteBoolean("add_prefix_space", false);
            j.WriteBoolean("trim_offsets", true);
            j.WriteBoolean("use_regex", true);
            j.WriteEndObject();
            j.WriteNull("post_processor");
            j.WriteStartObject("decoder");
            j.WriteString("type", "ByteLevel");
            j.WriteBoolean("add_prefix_space", true);
            j.WriteBoolean("trim_offsets", true);
            j.WriteBoolean("use_regex", true);
            j.WriteEndObject();
            j.WriteStartObject("model");
            j.WriteString("type", "BPE");
            j.WriteNull("dropout");
            j.WriteNull("unk_token");
            j.WriteBoolean("fuse_unk", false);
            j.WriteBoolean("byte_fallback", false);
            j.WriteStartObject("vocab");
            for (int i = 0; i < tokens.Count; i++) j.WriteNumber(tokens[i], i);
            j.WriteNumber(EndOfText, eot);
            j.WriteEndObject();
            j.WriteStartArray("merges");
            foreach (var m in merges)
            {
                j.WriteStartArray();
                j.WriteStringValue(m[0]);
                j.WriteStringValue(m[1]);
                j.WriteEndArray();
            }
            j.WriteEndArray();
            j.WriteEndObject();
            j.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray());

        void Add(string token)
        {
            if (ids.ContainsKey(token)) return;
            ids[token] = tokens.Count;
            tokens.Add(token);
        }
    }

    /// <summary>One entry of a tokenizer.json's added_tokens: a special token matched as it is (no strip, not normalized).</summary>
    internal static void WriteSpecialToken(Utf8JsonWriter j, int id, string content)
    {
        j.WriteStartObject();
        j.WriteNumber("id", id);
        j.WriteString("content", content);
        j.WriteBoolean("single_word", false);
        j.WriteBoolean("lstrip", false);
        j.WriteBoolean("rstrip", false);
        j.WriteBoolean("normalized", false);
        j.WriteBoolean("special", true);
        j.WriteEndObject();
    }

    /// <summary>Writes <c>tokenizer.json</c> for <paramref name="vocab"/> ids into <paramref name="folder"/>; returns its path.</summary>
    public static string Write(string folder, int vocab)
    {
        var path = Path.Combine(folder, "tokenizer.json");
        var text = Encoding.UTF8.GetBytes(Json(vocab));
        InfLlmV2.Onnx.GraphTools.SafeFiles.WriteAtomically(path, s => s.Write(text), "tokenizer output");
        return path;
    }

    /// <summary>
    /// The chat template of the tiny tokenizer's <c>tokenizer_config.json</c>: ChatML-style turns (as in
    /// Qwen), with a loop over the messages, if/else, string concatenation, <c>loop.first</c>,
    /// <c>add_generation_prompt</c> and whitespace control.
    /// </summary>
    public const string ChatTemplate =
        "{%- for message in messages %}\n"
        + "{%- if loop.first and message['role'] != 'system' %}{{ '<|im_start|>system\nYou are a tiny model.<|im_end|>\n' }}{% endif %}\n"
        + "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] | trim + '<|im_end|>' + '\n' }}\n"
        + "{%- endfor %}\n"
        + "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    /// <summary>Writes <c>tokenizer_config.json</c> (end-of-text as eos_token, the <see cref="ChatTemplate"/>) into <paramref name="folder"/>; returns its path.</summary>
    public static string WriteConfig(string folder)
    {
        var path = Path.Combine(folder, "tokenizer_config.json");
        var json = JsonSerializer.SerializeToUtf8Bytes(new Dictionary<string, object?>
        {
            ["eos_token"] = EndOfText, ["bos_token"] = null, ["model_max_length"] = 1024, ["chat_template"] = ChatTemplate,
        }, new JsonSerializerOptions { WriteIndented = true });
        InfLlmV2.Onnx.GraphTools.SafeFiles.WriteAtomically(path, s => s.Write(json), "tokenizer output");
        return path;
    }

    /// <summary>GPT-2's reversible map from bytes to printable characters (space becomes 'Ġ').</summary>
    public static char[] ByteToChar()
    {
        var map = new char[256];
        var printable = new bool[256];
        for (int b = '!'; b <= '~'; b++) printable[b] = true;
        for (int b = 0xA1; b <= 0xAC; b++) printable[b] = true;
        for (int b = 0xAE; b <= 0xFF; b++) printable[b] = true;
        int next = 0;
        for (int b = 0; b < 256; b++) map[b] = printable[b] ? (char)b : (char)(256 + next++);
        return map;
    }
}
