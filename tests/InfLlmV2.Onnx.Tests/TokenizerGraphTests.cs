using System.Text;
using System.Text.Json.Nodes;
using Google.Protobuf;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.TestSupport;
using InfLlmV2.Onnx.Text;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// The tokenizer graphs (ONNX Runtime Extensions): a folder's tokenizer.json runs as an ONNX model
/// that encodes and one that decodes, the default engine of <see cref="ModelTokenizer"/>; the ids
/// are those of Microsoft.ML.Tokenizers on byte-level BPE (and those of onnxruntime-genai's own
/// tokenizer in the GenAi test project); text round-trips, streams, and the written graphs run in a
/// plain ORT app; a model with an <c>ai.onnx.contrib</c> op runs through <c>infllmv2 run</c>.
/// </summary>
public class TokenizerGraphTests
{
    private static readonly string[] Texts = TokenizerFolders.Texts;

    public static string ByteLevelFolder(TempDir dir, bool normalizer = true)
    {
        Directory.CreateDirectory(dir["bytelevel"]);
        return TokenizerFolders.ByteLevel(dir["bytelevel"], normalizer ? new JsonObject { ["type"] = "NFC" } : null);
    }

    public static string SentencePieceFolder(TempDir dir)
    {
        Directory.CreateDirectory(dir["spm"]);
        return TokenizerFolders.SentencePieceStyle(dir["spm"]);
    }

    [Fact]
    public void ByteLevelFolder_RunsOnTheExtensionsGraphs_WithTheIdsOfMicrosoftMLTokenizers()
    {
        using var dir = new TempDir();
        // Without the normalizer both engines read the same rules: the ids must be equal.
        var folder = ByteLevelFolder(dir, normalizer: false);
        var tokenizer = ModelTokenizer.ForModel(folder);
        Assert.Equal(ModelTokenizer.ExtensionsEngine, tokenizer.Engine);
        Assert.Equal("byte-level BPE", tokenizer.Kind);
        Assert.Equal("GPT2Tokenizer", tokenizer.Graphs!.TokenizerClass);  // the config names none
        var ml = MLOnly(folder);
        foreach (var text in Texts)
        {
            var ids = tokenizer.Encode(text);
            // Microsoft.ML.Tokenizers splits out special added tokens only: "<tool>" (not special) is bytes there.
            if (!text.Contains("<tool>", StringComparison.Ordinal)) Assert.Equal(ml.Encode(text), ids);
            Assert.Equal(text, tokenizer.Decode(ids));
        }
        // Added tokens are one id each, special or not.
        Assert.Equal([512], tokenizer.Encode("<|im_start|>"));
        Assert.Equal([514], tokenizer.Encode("<tool>"));
        // An id past the tokenizer (a larger embedding) decodes to nothing.
        Assert.Equal("ab", tokenizer.Decode([.. tokenizer.Encode("a"), 9999, .. tokenizer.Encode("b")]));
    }

    /// <summary>
    /// A known difference from Hugging Face: the Extensions 0.14 op (like onnxruntime-genai 0.20's
    /// tokenizer, see GenAiTokenizerTests) does not apply a Unicode normalizer such as NFC.
    /// </summary>
    [Fact]
    public void ByteLevelFolder_WithAnNfcNormalizer_IsNotNormalized_AsInGenAi()
    {
        using var dir = new TempDir();
        var tokenizer = ModelTokenizer.ForModel(ByteLevelFolder(dir));
        Assert.Equal(ModelTokenizer.ExtensionsEngine, tokenizer.Engine);
        Assert.NotEqual(tokenizer.Encode("caf\u00e9"), tokenizer.Encode("cafe\u0301"));
        foreach (var text in Texts) Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text)));
    }

    [Fact]
    public void SentencePieceStyleFolder_EncodesWithItsBos_ByteFallback_AndDecodesWithoutTheLeadingSpace()
    {
        using var dir = new TempDir();
        var tokenizer = ModelTokenizer.ForModel(SentencePieceFolder(dir));
        Assert.Equal(ModelTokenizer.ExtensionsEngine, tokenizer.Engine);
        Assert.Equal("SentencePiece-style BPE", tokenizer.Kind);
        foreach (var text in Texts.Where(t => !t.Contains('<') && t.Length > 0 && t[0] != ' '))
        {
            var ids = tokenizer.Encode(text);
            Assert.Equal(1, ids[0]);  // <s> from the post-processor
            Assert.Equal(ids[1..], tokenizer.Encode(text, addSpecialTokens: false));
            Assert.Equal(text, tokenizer.Decode(ids[1..]));
        }
        // 日 is not in the vocabulary: its three UTF-8 bytes come back as <0xE6> <0x97> <0xA5> (ids 3 + byte).
        var japanese = tokenizer.Encode("日", addSpecialTokens: false);
        Assert.Equal([3 + 0xE6, 3 + 0x97, 3 + 0xA5], japanese[^3..]);
        Assert.Equal("日", tokenizer.Decode(japanese));
    }

    /// <summary>
    /// The SentencePiece-style ids equal those of Hugging Face's BPE algorithm written out here: the
    /// normalizer (prepend "▁", spaces to "▁"), the lowest-ranked merge first over Unicode scalars,
    /// byte fallback for pieces outside the vocabulary, &lt;s&gt; first.
    /// </summary>
    [Fact]
    public void SentencePieceStyleFolder_IdsEqualAReferenceBpe()
    {
        using var dir = new TempDir();
        var folder = SentencePieceFolder(dir);
        var tokenizer = ModelTokenizer.ForModel(folder);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "tokenizer.json")))!;
        var vocab = json["model"]!["vocab"]!.AsObject().ToDictionary(p => p.Key, p => (int)p.Value!);
        var rank = json["model"]!["merges"]!.AsArray().Select((m, i) => (Pair: (string)m!, Rank: i)).ToDictionary(m => m.Pair, m => m.Rank);
        foreach (var text in Texts.Where(t => !t.Contains('<')).Append("Hello, world!").Append("  two  x"))
        {
            var symbols = (text.Length == 0 ? "" : "\u2581" + text.Replace(" ", "\u2581", StringComparison.Ordinal)).EnumerateRunes().Select(r => r.ToString()).ToList();
            while (true)
            {
                int best = -1, bestRank = int.MaxValue;
                for (int i = 0; i + 1 < symbols.Count; i++)
                    if (rank.TryGetValue(symbols[i] + " " + symbols[i + 1], out var r) && r < bestRank) (best, bestRank) = (i, r);
                if (best < 0) break;
                symbols[best] += symbols[best + 1];
                symbols.RemoveAt(best + 1);
            }
            var expected = new List<int> { 1 };
            foreach (var piece in symbols)
                if (vocab.TryGetValue(piece, out var id)) expected.Add(id);
                else expected.AddRange(Encoding.UTF8.GetBytes(piece).Select(b => vocab[$"<0x{b:X2}>"]));
            Assert.Equal(expected, tokenizer.Encode(text));
        }
    }

    [Theory]
    [InlineData("bytelevel")]
    [InlineData("spm")]
    public void StreamingDecoder_PrintsTheFullTextPieceByPiece_NeverHalfACharacter(string kind)
    {
        using var dir = new TempDir();
        var tokenizer = ModelTokenizer.ForModel(kind == "spm" ? SentencePieceFolder(dir) : ByteLevelFolder(dir));
        const string text = "The model reads 日本語 🙂 and héllo, then stops.";
        var ids = tokenizer.Encode(text, addSpecialTokens: false);
        var stream = new StreamingDecoder(tokenizer);
        var printed = new StringBuilder();
        foreach (var id in ids)
        {
            var piece = stream.Add(id);
            Assert.DoesNotContain('\uFFFD', piece);
            printed.Append(piece);
        }
        printed.Append(stream.Flush());
        Assert.Equal(tokenizer.Decode(ids), printed.ToString());
        Assert.Equal(text, printed.ToString());
    }

    [Fact]
    public void WrittenGraphs_RunInAPlainOrtApp_WithBothLibrariesRegisteredInOneCall()
    {
        using var dir = new TempDir();
        var folder = ByteLevelFolder(dir);
        var tokenizer = ModelTokenizer.ForModel(folder);
        var written = tokenizer.Graphs!.Write(folder, force: false);
        Assert.Equal([Path.Combine(folder, TokenizerGraphs.EncoderFile), Path.Combine(folder, TokenizerGraphs.DecoderFile)], written);
        Assert.Throws<IOException>(() => tokenizer.Graphs.Write(folder, force: false));

        using var options = new SessionOptions();
        options.RegisterAllOps();
        using var encoder = new InferenceSession(written[0], options);
        using var decoder = new InferenceSession(written[1], options);
        const string text = "Hello <|im_start|> héllo";
        using var results = encoder.Run([NamedOnnxValue.CreateFromTensor("text", new DenseTensor<string>(new[] { text }, [1]))]);
        var ids = results.First().AsTensor<long>().ToArray();
        Assert.Equal(tokenizer.Encode(text), ids.Select(i => (int)i));
        using var back = decoder.Run([NamedOnnxValue.CreateFromTensor("ids", new DenseTensor<long>(ids, [ids.Length]))]);
        Assert.Equal(text, back.First().AsTensor<string>().Single());
    }

    [Fact]
    public void UnsupportedDecoder_FallsBackToMicrosoftMLTokenizers_WithTheReason()
    {
        using var dir = new TempDir();
        var folder = dir["wordpiece"];
        Directory.CreateDirectory(folder);
        var json = JsonNode.Parse(TinyTokenizer.Json(512))!.AsObject();
        json["decoder"] = new JsonObject { ["type"] = "Sequence", ["decoders"] = new JsonArray(new JsonObject { ["type"] = "ByteLevel" }, new JsonObject { ["type"] = "CTC" }) };
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), json.ToJsonString());
        var tokenizer = ModelTokenizer.ForModel(folder);
        Assert.Equal(ModelTokenizer.MLTokenizersEngine, tokenizer.Engine);
        Assert.Contains("'CTC'", tokenizer.GraphsRefusal);
        Assert.Equal("Hello", tokenizer.Decode(tokenizer.Encode("Hello")));
    }

    [Fact]
    public void Run_AModelWithAnExtensionsOp_RegistersTheExtensionsLibrary()
    {
        using var dir = new TempDir();
        // ai.onnx.contrib::StringUpper then StringLength: text in, text and lengths out.
        var g = new GraphProto { Name = "contrib" };
        g.Node.Add(GraphBuilder.Node("StringUpper", ExtensionsOpLibrary.Domain, ["text"], ["upper"]));
        g.Node.Add(GraphBuilder.Node("StringLength", ExtensionsOpLibrary.Domain, ["upper"], ["length"]));
        g.Input.Add(GraphBuilder.Tensor("text", TensorProto.Types.DataType.String, 2));
        g.Output.Add(GraphBuilder.Tensor("upper", TensorProto.Types.DataType.String, 2));
        g.Output.Add(GraphBuilder.Tensor("length", TensorProto.Types.DataType.Int64, 2));
        var model = GraphBuilder.Model(g, ("", 17), (ExtensionsOpLibrary.Domain, 1));
        File.WriteAllBytes(dir["contrib.onnx"], model.ToByteArray());
        var data = dir["data"];
        Directory.CreateDirectory(data);
        OnnxTestData.WriteTensor(Strings("text", "abc", "hello"), Path.Combine(data, "input_0.pb"));
        OnnxTestData.WriteTensor(Strings("upper", "ABC", "HELLO"), Path.Combine(data, "output_0.pb"));
        var lengths = new TensorProto { Name = "length", DataType = (int)TensorProto.Types.DataType.Int64 };
        lengths.Dims.Add(2);
        lengths.Int64Data.AddRange([3, 5]);
        OnnxTestData.WriteTensor(lengths, Path.Combine(data, "output_1.pb"));

        var (code, stdout, stderr) = CliProcess.Run("run", dir["contrib.onnx"], "--inputs", data, "--atol", "0");
        Assert.True(code == 0, stdout + stderr);
        Assert.Contains("upper", stdout);
        Assert.Equal(2, stdout.Split('\n').Count(l => l.TrimEnd().EndsWith("ok", StringComparison.Ordinal)));

        // A wrong expected text fails the comparison (exit 1), so the strings were really compared.
        OnnxTestData.WriteTensor(Strings("upper", "ABC", "HELLx"), Path.Combine(data, "output_0.pb"));
        var (failed, failOut, _) = CliProcess.Run("run", dir["contrib.onnx"], "--inputs", data, "--atol", "0");
        Assert.Equal(1, failed);
        Assert.Contains("FAIL", failOut);
    }

    [Fact]
    public void RewriteGenAiFolder_WithTokenizerGraphs_WritesThemNextToTheModel()
    {
        using var dir = new TempDir();
        var folder = GenAiFolderWriter.Write(new TinyDecoderConfig { Seed = 3, Vocab = 515, MaxPositions = 512 }, dir["genai"]);
        TokenizerFolders.ByteLevel(folder);
        var (code, stdout, stderr) = CliProcess.Run("rewrite", "--genai-folder", folder, "-o", dir["out"], "--tokenizer-graphs");
        Assert.True(code == 0, stdout + stderr);
        Assert.Contains("tokenizer graphs", stdout);
        using var options = new SessionOptions();
        options.RegisterAllOps();
        using var encoder = new InferenceSession(Path.Combine(dir["out"], TokenizerGraphs.EncoderFile), options);
        using var decoder = new InferenceSession(Path.Combine(dir["out"], TokenizerGraphs.DecoderFile), options);
        const string text = "<|im_start|>user\nhéllo<|im_end|>";
        using var results = encoder.Run([NamedOnnxValue.CreateFromTensor("text", new DenseTensor<string>(new[] { text }, [1]))]);
        var ids = results.First().AsTensor<long>().ToArray();
        Assert.Equal(ModelTokenizer.ForModel(folder).Encode(text), ids.Select(i => (int)i));
        using var back = decoder.Run([NamedOnnxValue.CreateFromTensor("ids", new DenseTensor<long>(ids, [ids.Length]))]);
        Assert.Equal(text, back.First().AsTensor<string>().Single());
    }

    [Fact]
    public void Rewrite_WithTokenizerGraphs_WithoutATokenizerJson_IsAUsageError_AndWritesNothing()
    {
        using var dir = new TempDir();
        var folder = GenAiFolderWriter.Write(new TinyDecoderConfig { Seed = 3, Vocab = 515, MaxPositions = 512 }, dir["genai"]);
        var (code, _, stderr) = CliProcess.Run("rewrite", "--genai-folder", folder, "-o", dir["out"], "--tokenizer-graphs");
        Assert.Equal(2, code);
        Assert.Contains("--tokenizer-graphs", stderr);
        Assert.Contains("tokenizer.json not found", stderr);
        Assert.False(Directory.Exists(dir["out"]) && Directory.EnumerateFileSystemEntries(dir["out"]).Any());
    }

    private static TensorProto Strings(string name, params string[] values)
    {
        var t = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.String };
        t.Dims.Add(values.Length);
        foreach (var v in values) t.StringData.Add(ByteString.CopyFromUtf8(v));
        return t;
    }

    // The same folder read by Microsoft.ML.Tokenizers alone (the graphs refused through an unsupported decoder step is
    // not wanted here): a copy without tokenizer_config.json whose decoder the graphs do not take.
    private static ModelTokenizer MLOnly(string folder)
    {
        var copy = folder + "-ml";
        Directory.CreateDirectory(copy);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "tokenizer.json")))!.AsObject();
        json["decoder"] = new JsonObject { ["type"] = "Sequence", ["decoders"] = new JsonArray(new JsonObject { ["type"] = "ByteLevel" }, new JsonObject { ["type"] = "CTC" }) };
        File.WriteAllText(Path.Combine(copy, "tokenizer.json"), json.ToJsonString());
        var ml = ModelTokenizer.ForModel(copy);
        Assert.Equal(ModelTokenizer.MLTokenizersEngine, ml.Engine);
        return ml;
    }
}
