using Google.Protobuf;
using InfLlmV2.Onnx.Cli.Text;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.Text;

namespace InfLlmV2.Onnx.Tests;

/// <summary>A tiny decoder (vocab 512) with the generated tokenizer.json, its rewritten twin, and a folder without a tokenizer.</summary>
public sealed class TextModels : IDisposable
{
    public static readonly TinyDecoderConfig Config = new() { Layers = 1, NumHeads = 2, KvNumHeads = 1, HeadSize = 16, Vocab = 512, Intermediate = 32, MaxPositions = 1024, Seed = 5 };
    private readonly TempDir _dir = new();

    public TextModels()
    {
        var model = TinyDecoderGenerator.Generate(Config);
        Directory.CreateDirectory(_dir["with"]);
        Directory.CreateDirectory(_dir["without"]);
        OriginalPath = Path.Combine(_dir["with"], "model.onnx");
        TinyDecoderGenerator.Save(model, OriginalPath, externalData: false);
        TinyTokenizer.Write(_dir["with"], Config.Vocab);
        var rw = model.Clone();
        AttentionRewriter.Rewrite(rw, new RewriteOptions { AttentionModeInput = true });
        RewrittenPath = Path.Combine(_dir["with"], "model.infllmv2.onnx");
        OnnxModelFile.Save(rw, RewrittenPath);
        NoTokenizerPath = Path.Combine(_dir["without"], "model.onnx");
        File.Copy(OriginalPath, NoTokenizerPath);
    }

    public string OriginalPath { get; }
    public string RewrittenPath { get; }
    public string NoTokenizerPath { get; }
    public string Folder => _dir["with"];
    public string Scratch(string name) => _dir[name];

    public void Dispose() => _dir.Dispose();
}

/// <summary>Text prompts: the model folder's tokenizer (the tokenizer graphs, or Microsoft.ML.Tokenizers), generate --prompt/--prompt-file, compare --prompt-file.</summary>
public class TextPromptTests(TextModels models) : IClassFixture<TextModels>
{
    [Theory]
    [InlineData("The sparse mode keeps the first block, the local window and the top blocks.")]
    [InlineData("Hello, world! 0123456789")]
    [InlineData("  two spaces,\ttab\nnewline")]
    [InlineData("héllo wörld — ✓ 日本語 🙂")]
    public void TinyTokenizer_RoundTripsText(string text)
    {
        var tokenizer = ModelTokenizer.ForModel(models.OriginalPath);
        Assert.Equal("byte-level BPE", tokenizer.Kind);
        var ids = tokenizer.Encode(text);
        Assert.All(ids, id => Assert.InRange(id, 0, TextModels.Config.Vocab - 1));
        Assert.Equal(text, tokenizer.Decode(ids));
    }

    [Fact]
    public void TinyTokenizer_UsesItsMerges_AndFillsTheVocabulary()
    {
        var tokenizer = ModelTokenizer.ForModel(models.Folder);
        const string text = "The model reads a long document and answers a question about it.";
        var ids = tokenizer.Encode(text);
        // Bytes alone would be one id per byte; the learned merges make whole words single tokens.
        Assert.True(ids.Length * 3 < text.Length, $"{ids.Length} tokens for {text.Length} bytes");
        Assert.Contains(ids, id => id >= 256);
        using var doc = System.Text.Json.JsonDocument.Parse(TinyTokenizer.Json(512));
        var vocab = doc.RootElement.GetProperty("model").GetProperty("vocab");
        Assert.InRange(vocab.EnumerateObject().Count(), 400, 512);  // bytes + merges until the text has no pairs left, + end-of-text
        Assert.Equal(511, vocab.GetProperty(TinyTokenizer.EndOfText).GetInt32());
        Assert.Equal(TinyTokenizer.Json(512), TinyTokenizer.Json(512));  // deterministic
    }

    [Fact]
    public void TinyTokenizer_SpecialTokenIsOneId()
    {
        var tokenizer = ModelTokenizer.ForModel(models.Folder);
        var ids = tokenizer.Encode("end" + TinyTokenizer.EndOfText);
        Assert.Equal(511, ids[^1]);
    }

    [Fact]
    public void NoTokenizer_ErrorNamesBothFilesLookedFor()
    {
        var e = Assert.Throws<FileNotFoundException>(() => ModelTokenizer.ForModel(models.NoTokenizerPath));
        var folder = Path.GetDirectoryName(models.NoTokenizerPath)!;
        Assert.Contains(Path.Combine(folder, "tokenizer.json"), e.Message);
        Assert.Contains(Path.Combine(folder, "tokenizer.model"), e.Message);
    }

    [Fact]
    public void SentencePieceModel_EncodesToKnownIds_AndDecodes()
    {
        var dir = models.Scratch("sp");
        Directory.CreateDirectory(dir);
        // Pieces in id order; a higher score merges first (SentencePiece BPE).
        (string Piece, float Score, int Type)[] pieces =
        [
            ("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3),
            ("he", 0, 1), ("ll", -1, 1), ("llo", -2, 1), ("hello", -3, 1), ("\u2581hello", -4, 1), ("\u2581", -5, 1),
            ("h", -6, 1), ("e", -7, 1), ("l", -8, 1), ("o", -9, 1), ("w", -10, 1), ("r", -11, 1), ("d", -12, 1),
            ("\u2581w", -13, 1), ("or", -14, 1), ("\u2581wor", -15, 1), ("ld", -16, 1), ("\u2581world", -17, 1),
        ];
        File.WriteAllBytes(Path.Combine(dir, "tokenizer.model"), SentencePieceBpeModel(pieces));
        var tokenizer = ModelTokenizer.ForModel(dir);
        Assert.Equal("SentencePiece", tokenizer.Kind);
        Assert.Equal([1, 7, 20], tokenizer.Encode("hello world"));   // <s> ▁hello ▁world
        Assert.Equal([1, 7, 8, 9], tokenizer.Encode("hello h"));      // <s> ▁hello ▁ h
        Assert.Equal("hello world", tokenizer.Decode([1, 7, 20]));
    }

    [Fact]
    public void SentencePieceStyleJsonWithoutModelFile_RunsOnTheTokenizerGraphs()
    {
        var dir = models.Scratch("spjson");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"),
            """{"model":{"type":"BPE","vocab":{"<unk>":0,"\u2581a":1,"a":2},"merges":[],"byte_fallback":true,"unk_token":"<unk>"},"pre_tokenizer":{"type":"Metaspace"},"decoder":{"type":"Metaspace"}}""");
        var tokenizer = ModelTokenizer.ForModel(dir);
        Assert.Equal(ModelTokenizer.ExtensionsEngine, tokenizer.Engine);
        Assert.Equal("SentencePiece-style BPE", tokenizer.Kind);
        Assert.Equal("a a", tokenizer.Decode([1, 1]));  // Metaspace: the first word's space is dropped
    }

    [Fact]
    public void UnsupportedJsonWithoutModelFile_IsRefusedWithBothReasons()
    {
        var dir = models.Scratch("wpjson");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"),
            """{"model":{"type":"WordPiece","vocab":{"a":0}},"pre_tokenizer":{"type":"BertPreTokenizer"},"decoder":{"type":"WordPiece"}}""");
        var e = Assert.Throws<NotSupportedException>(() => ModelTokenizer.ForModel(dir));
        Assert.Contains("tokenizer graphs do not support it", e.Message);
        Assert.Contains("not BPE", e.Message);
        Assert.Contains("tokenizer.model", e.Message);
    }

    [Fact]
    public void Generate_TextPrompt_StreamsTheTextOfTheSameTokensAsPromptIds()
    {
        const string prompt = "The sparse mode keeps the first block";
        var tokenizer = ModelTokenizer.ForModel(models.OriginalPath);
        var ids = tokenizer.Encode(prompt);
        var text = CliProcess.Run("generate", models.OriginalPath, "--prompt", prompt, "--max-new-tokens", "12");
        Assert.True(text.ExitCode == 0, text.StdErr);
        Assert.Contains($"prompt: {ids.Length} tokens", text.StdErr);
        Assert.Contains("(byte-level BPE via onnxruntime-extensions, ", text.StdErr);  // the tokenizer graphs by default
        var byIds = CliProcess.Run("generate", models.OriginalPath, "--prompt-ids", string.Join(',', ids), "--max-new-tokens", "12");
        Assert.Equal(0, byIds.ExitCode);
        var generated = byIds.StdOut.Trim().Split(',').Select(int.Parse).ToArray();
        Assert.Equal(12, generated.Length);
        Assert.Equal(tokenizer.Decode(generated), text.StdOut.TrimEnd('\n'));
        Assert.NotEmpty(text.StdOut.Trim());
    }

    [Fact]
    public void Generate_PromptFile_EqualsPromptText()
    {
        var file = models.Scratch("prompt.txt");
        File.WriteAllText(file, "Hello, world!");
        var a = CliProcess.Run("generate", models.RewrittenPath, "--prompt-file", file, "--max-new-tokens", "5");
        var b = CliProcess.Run("generate", models.RewrittenPath, "--prompt", "Hello, world!", "--max-new-tokens", "5");
        Assert.True(a.ExitCode == 0, a.StdErr);
        Assert.Equal(a.StdOut, b.StdOut);
    }

    [Fact]
    public void Generate_TextPromptWithoutTokenizer_ExitTwoNamingTheFiles()
    {
        var (code, _, err) = CliProcess.Run("generate", models.NoTokenizerPath, "--prompt", "hello");
        Assert.Equal(2, code);
        Assert.StartsWith("error: no tokenizer", err.Trim());
        Assert.Contains("tokenizer.json", err);
        Assert.Contains("tokenizer.model", err);
        Assert.Single(err.Trim().Split('\n'));
    }

    [Theory]
    [InlineData("--prompt", "", "--prompt is empty")]
    [InlineData("--prompt-file", "/nonexistent/prompt.txt", "Prompt file not found")]
    [InlineData("none", "", "give a prompt: one of --prompt, --prompt-file, --prompt-ids")]
    [InlineData("both", "", "give one prompt, not --prompt and --prompt-ids")]
    public void Generate_BadPrompt_ExitTwo(string option, string value, string message)
    {
        string[] args = option switch
        {
            "none" => ["generate", models.OriginalPath],
            "both" => ["generate", models.OriginalPath, "--prompt", "hi", "--prompt-ids", "1,2"],
            _ => ["generate", models.OriginalPath, option, value],
        };
        var (code, _, err) = CliProcess.Run(args);
        Assert.Equal(2, code);
        Assert.Contains(message, err);
    }

    [Fact]
    public void Generate_TokenizerLargerThanTheModelVocabulary_ExitTwo()
    {
        var dir = models.Scratch("mismatch");
        Directory.CreateDirectory(dir);
        var model = Path.Combine(dir, "model.onnx");
        File.Copy(models.OriginalPath, model);
        // The same tokenizer with its end-of-text token moved to id 600, past the model's 512 logits.
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), TinyTokenizer.Json(512).Replace(": 511", ": 600"));
        var (code, _, err) = CliProcess.Run("generate", model, "--prompt", "end" + TinyTokenizer.EndOfText);
        Assert.Equal(2, code);
        Assert.Contains("outside the model's vocabulary [0, 512)", err);
    }

    [Fact]
    public void Compare_PromptFile_DenseAgrees()
    {
        var file = models.Scratch("compare.txt");
        File.WriteAllText(file, string.Concat(Enumerable.Repeat("The session keeps the key and value cache. ", 8)));
        var (code, stdout, err) = CliProcess.Run("compare", models.OriginalPath, models.RewrittenPath, "--prompt-file", file, "--decode-steps", "3", "--mode", "dense");
        Assert.True(code == 0, stdout + err);
        Assert.Contains("prompt: " + file, stdout);
        Assert.Contains("top-1 agreement 4/4 (100%)", stdout);
    }

    [Theory]
    [InlineData("--prompt-ids")]
    [InlineData("--prompt-len")]
    public void Compare_PromptFileWithAnotherPrompt_ExitTwo(string other)
    {
        var file = models.Scratch("c2.txt");
        File.WriteAllText(file, "hello");
        var (code, _, err) = CliProcess.Run("compare", models.OriginalPath, models.RewrittenPath, "--prompt-file", file, other, "3");
        Assert.Equal(2, code);
        Assert.StartsWith("error:", err.Trim());
    }

    [Fact]
    public void Compare_PromptFileWithoutTokenizer_ExitTwo()
    {
        var file = models.Scratch("c3.txt");
        File.WriteAllText(file, "hello");
        var (code, _, err) = CliProcess.Run("compare", models.NoTokenizerPath, models.NoTokenizerPath, "--prompt-file", file);
        Assert.Equal(2, code);
        Assert.Contains("tokenizer.model", err);
    }

    /// <summary>A SentencePiece ModelProto (sentencepiece_model.proto field numbers) of a BPE model over <paramref name="pieces"/>.</summary>
    private static byte[] SentencePieceBpeModel((string Piece, float Score, int Type)[] pieces)
    {
        using var ms = new MemoryStream();
        var o = new CodedOutputStream(ms);
        foreach (var (piece, score, type) in pieces)
        {
            var p = Message(w =>
            {
                w.WriteTag(1, WireFormat.WireType.LengthDelimited); w.WriteString(piece);
                w.WriteTag(2, WireFormat.WireType.Fixed32); w.WriteFloat(score);
                w.WriteTag(3, WireFormat.WireType.Varint); w.WriteEnum(type);
            });
            o.WriteTag(1, WireFormat.WireType.LengthDelimited); o.WriteBytes(ByteString.CopyFrom(p));
        }
        var trainer = Message(w =>
        {
            w.WriteTag(3, WireFormat.WireType.Varint); w.WriteEnum(2);     // model_type = BPE
            w.WriteTag(40, WireFormat.WireType.Varint); w.WriteInt32(0);   // unk_id
            w.WriteTag(41, WireFormat.WireType.Varint); w.WriteInt32(1);   // bos_id
            w.WriteTag(42, WireFormat.WireType.Varint); w.WriteInt32(2);   // eos_id
            w.WriteTag(43, WireFormat.WireType.Varint); w.WriteInt32(-1);  // pad_id
        });
        o.WriteTag(2, WireFormat.WireType.LengthDelimited); o.WriteBytes(ByteString.CopyFrom(trainer));
        var normalizer = Message(w =>
        {
            w.WriteTag(1, WireFormat.WireType.LengthDelimited); w.WriteString("identity");
            w.WriteTag(3, WireFormat.WireType.Varint); w.WriteBool(true);  // add_dummy_prefix
            w.WriteTag(4, WireFormat.WireType.Varint); w.WriteBool(true);  // remove_extra_whitespaces
            w.WriteTag(5, WireFormat.WireType.Varint); w.WriteBool(true);  // escape_whitespaces
        });
        o.WriteTag(3, WireFormat.WireType.LengthDelimited); o.WriteBytes(ByteString.CopyFrom(normalizer));
        o.Flush();
        return ms.ToArray();

        static byte[] Message(Action<CodedOutputStream> write)
        {
            using var m = new MemoryStream();
            var w = new CodedOutputStream(m);
            write(w);
            w.Flush();
            return m.ToArray();
        }
    }
}

/// <summary>--device and version: the CPU EP always, CUDA only where it can run (else one line and exit 2).</summary>
public class DeviceCliTests(TextModels models) : IClassFixture<TextModels>
{
    [Fact]
    public void Version_PrintsOrt132_OpLibrary_AndProviders()
    {
        var (code, stdout, err) = CliProcess.Run("version");
        Assert.True(code == 0, err);
        Assert.Matches(@"onnxruntime\s+1\.32\.\d+ \(/.*libonnxruntime\.so\)", stdout);
        Assert.Contains(NativeOpLibrary.FileName, stdout);
        Assert.Contains("cpu         available", stdout);
        Assert.Matches(@"cuda\s+(available|not available: \S.*)", stdout);
        Assert.Equal(ExecutionProviders.CudaUnavailableReason is null, stdout.Contains("cuda        available"));
    }

    [Fact]
    public void CudaUnavailableReason_IsOneLine()
    {
        var why = ExecutionProviders.CudaUnavailableReason;
        if (why is null) return;  // a machine with CUDA 13 and a GPU: nothing to explain
        Assert.DoesNotContain('\n', why);
        Assert.DoesNotContain('\u001b', why);
    }

    [Theory]
    [InlineData("generate")]
    [InlineData("compare")]
    [InlineData("run")]
    [InlineData("bench")]
    public void DeviceCuda_WithoutCuda_FailsUpFrontWithOneLine(string command)
    {
        if (ExecutionProviders.CudaUnavailableReason is not { } why) return;  // CUDA runs here: covered by the GPU checks
        string[] args = command switch
        {
            "generate" => ["generate", models.OriginalPath, "--prompt-ids", "1,2", "--device", "cuda"],
            "compare" => ["compare", models.OriginalPath, models.RewrittenPath, "--device", "cuda"],
            "run" => ["run", models.OriginalPath, "--inputs", models.Folder, "--device", "cuda"],
            _ => ["bench", "--quick", "--device", "cuda"],
        };
        var (code, stdout, err) = CliProcess.Run(args);
        Assert.Equal(2, code);
        Assert.Equal($"error: CUDA is not available: {why}", err.Trim());
        Assert.Equal("", stdout.Trim());
    }

    [Fact]
    public void DeviceCpu_IsTheDefault_AndOtherNamesAreRefused()
    {
        var cpu = CliProcess.Run("generate", models.OriginalPath, "--prompt-ids", "1,2", "--max-new-tokens", "3", "--device", "cpu");
        var dflt = CliProcess.Run("generate", models.OriginalPath, "--prompt-ids", "1,2", "--max-new-tokens", "3");
        Assert.Equal(0, cpu.ExitCode);
        Assert.Equal(cpu.StdOut, dflt.StdOut);
        var bad = CliProcess.Run("generate", models.OriginalPath, "--prompt-ids", "1,2", "--device", "tpu");
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("tpu", bad.StdErr);
    }

    [Theory]
    [InlineData("windows", System.Runtime.InteropServices.Architecture.X64, "win-x64")]
    [InlineData("linux", System.Runtime.InteropServices.Architecture.Arm64, "linux-arm64")]
    [InlineData("osx", System.Runtime.InteropServices.Architecture.Arm64, "osx-arm64")]
    public void Cuda_IsRefused_OffLinuxX64_NamingThePlatform(string os, System.Runtime.InteropServices.Architecture arch, string rid)
    {
        var why = ExecutionProviders.CudaPlatformRefusal(NativeOpLibrary.ParseOS(os), arch);
        Assert.NotNull(why);
        Assert.StartsWith("CUDA kernels are built for linux-x64 only; ", why);
        Assert.Contains($"this is {rid}", why);
        Assert.Contains("--device cpu", why);
        Assert.DoesNotContain('\n', why);
    }

    [Fact]
    public void Cuda_IsNotRefused_OnLinuxX64_ByThePlatform() =>
        Assert.Null(ExecutionProviders.CudaPlatformRefusal(System.Runtime.InteropServices.OSPlatform.Linux, System.Runtime.InteropServices.Architecture.X64));

    [Fact]
    public void ParseDevice_AcceptsCpuAndCudaOnly()
    {
        Assert.Equal(ExecutionDevice.Cpu, ExecutionProviders.Parse("CPU"));
        Assert.Equal(ExecutionDevice.Cuda, ExecutionProviders.Parse("cuda"));
        Assert.Throws<ArgumentException>(() => ExecutionProviders.Parse("gpu"));
    }
}
