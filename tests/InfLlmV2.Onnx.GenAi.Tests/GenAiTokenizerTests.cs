using System.Text.Json.Nodes;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.TestSupport;
using InfLlmV2.Onnx.Text;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace InfLlmV2.Onnx.GenAi.Tests;

/// <summary>
/// Our tokenizer graphs (ONNX Runtime Extensions 0.14, <see cref="ModelTokenizer"/>'s default engine)
/// against onnxruntime-genai 0.20's own tokenizer on the same genai folder. Byte-level BPE (GPT-2,
/// Llama-3, Qwen style) with special and plain added tokens, whitespace and Unicode: the same ids,
/// and the same text back (genai's Decode drops special tokens, ours keeps them: compared where the
/// text has none). SentencePiece-style BPE: the same text back (but for genai's leading space), not
/// the same ids (docs/architecture.md, "Tokenizers": genai's newer Extensions code adds no &lt;s&gt;
/// from the post-processor and splits some words differently from the file's merges; ours follow
/// them, TokenizerGraphTests checks that against a reference BPE).
/// </summary>
public class GenAiTokenizerTests
{
    private static (ModelTokenizer Ours, Model Model, Tokenizer GenAi) Open(TempDir dir, Func<string, string> write)
    {
        var folder = GenAiFolderWriter.Write(new TinyDecoderConfig { Seed = 3, Vocab = 515, MaxPositions = 512 }, dir["genai"]);
        write(folder);
        var ours = ModelTokenizer.ForModel(folder);
        Assert.Equal(ModelTokenizer.ExtensionsEngine, ours.Engine);
        var model = new Model(folder);
        return (ours, model, new Tokenizer(model));
    }

    private static bool HasSpecial(string text) => text.Contains("<|im_", StringComparison.Ordinal) || text.Contains("<s>", StringComparison.Ordinal);

    [Fact]
    public void ByteLevel_ExtensionsGraphs_GiveGenAisIds_AndItsText()
    {
        using var dir = new TempDir();
        var (ours, model, genai) = Open(dir, f => TokenizerFolders.ByteLevel(f));
        using (model)
        using (genai)
            foreach (var text in TokenizerFolders.Texts)
            {
                using var sequences = genai.Encode(text);
                var expected = sequences[0].ToArray();
                var ids = ours.Encode(text);
                Assert.True(expected.SequenceEqual(ids), $"\"{text}\": genai [{string.Join(" ", expected)}], ours [{string.Join(" ", ids)}]");
                Assert.Equal(text, ours.Decode(ids));
                if (!HasSpecial(text)) Assert.Equal(genai.Decode(expected), ours.Decode(ids));
            }
    }

    [Fact]
    public void SentencePieceStyle_BothDecodeTheirIdsToTheSameText()
    {
        using var dir = new TempDir();
        var (ours, model, genai) = Open(dir, TokenizerFolders.SentencePieceStyle);
        using (model)
        using (genai)
            foreach (var text in TokenizerFolders.Texts.Where(t => !HasSpecial(t) && !t.StartsWith(' ')))
            {
                using var sequences = genai.Encode(text);
                Assert.Equal(text, ours.Decode(ours.Encode(text, addSpecialTokens: false)));
                // genai keeps the space the decoder's Strip removes (Hugging Face removes it, as we do).
                Assert.Equal(text.Length == 0 ? "" : " " + text, genai.Decode(sequences[0]));
            }
    }

    /// <summary>
    /// A Unicode normalizer (NFC): neither genai's tokenizer nor the Extensions 0.14 op applies it
    /// (Hugging Face's would): the ids still agree, "e" + U+0301 stays two characters.
    /// </summary>
    [Fact]
    public void NfcNormalizer_IdsAgreeWithGenAi()
    {
        using var dir = new TempDir();
        var (ours, model, genai) = Open(dir, f => TokenizerFolders.ByteLevel(f, new JsonObject { ["type"] = "NFC" }));
        using (model)
        using (genai)
            foreach (var text in new[] { "cafe\u0301", "caf\u00e9", "A\u030angstr\u00f6m" })
            {
                using var sequences = genai.Encode(text);
                Assert.Equal(sequences[0].ToArray(), ours.Encode(text));
            }
    }
}
