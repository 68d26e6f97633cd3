using System.Text.Json.Nodes;
using InfLlmV2.Onnx.Models;

namespace InfLlmV2.Onnx.TestSupport;

/// <summary>
/// Tokenizer files the tests make (both test projects compile this file): the tiny byte-level BPE
/// with added tokens (two special, one plain) and an optional normalizer, and the tiny
/// SentencePiece-style BPE; the texts both are checked on.
/// </summary>
public static class TokenizerFolders
{
    /// <summary>Byte-level BPE, SentencePiece-style, added and special tokens, whitespace, Unicode.</summary>
    public static readonly string[] Texts =
    [
        "The sparse mode keeps the first block, the local window and the top blocks.",
        "Hello, world! 0123456789",
        "  two spaces,\ttab\nnewline  ",
        "héllo wörld — ✓ 日本語 🙂",
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
        "a <tool>call</tool> b",
        "<s>hi</s> there",
        "",
    ];

    /// <summary>Writes the tiny byte-level tokenizer (vocab 512 + three added tokens) and its config into <paramref name="folder"/>.</summary>
    /// <param name="folder">An existing folder.</param>
    /// <param name="normalizer">A tokenizer.json normalizer object (e.g. NFC), or null for none.</param>
    public static string ByteLevel(string folder, JsonObject? normalizer = null)
    {
        var json = JsonNode.Parse(TinyTokenizer.Json(512))!.AsObject();
        var added = json["added_tokens"]!.AsArray();
        foreach (var (id, content, special) in new[] { (512, "<|im_start|>", true), (513, "<|im_end|>", true), (514, "<tool>", false) })
            added.Add(new JsonObject
            {
                ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                ["normalized"] = !special, ["special"] = special,
            });
        if (normalizer is not null) json["normalizer"] = normalizer;
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), json.ToJsonString());
        TinyTokenizer.WriteConfig(folder);
        return folder;
    }

    /// <summary>Writes the tiny SentencePiece-style tokenizer (vocab 400) and its config into <paramref name="folder"/>.</summary>
    public static string SentencePieceStyle(string folder)
    {
        TinySentencePieceTokenizer.Write(folder, 400);
        return folder;
    }
}
