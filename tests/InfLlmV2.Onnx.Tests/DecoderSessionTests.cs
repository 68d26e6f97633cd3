using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.OpContract;
using InfLlmV2.Onnx.Session;

namespace InfLlmV2.Onnx.Tests;

/// <summary>Shared fixtures: one generated decoder, original and rewritten (small sparse budget, mode input, with/without compressed state).</summary>
public sealed class DecoderModels : IDisposable
{
    public static readonly TinyDecoderConfig Config = new() { Layers = 2, NumHeads = 4, KvNumHeads = 2, HeadSize = 16, Vocab = 128, Intermediate = 64, Seed = 11 };
    private readonly TempDir _dir = new();

    public DecoderModels()
    {
        var model = TinyDecoderGenerator.Generate(Config);
        OriginalPath = _dir["original.onnx"];
        TinyDecoderGenerator.Save(model, OriginalPath, externalData: true);
        var options = new RewriteOptions { Sparse = new() { TopKBlocks = 2, SparseWindowTokens = 64, DenseLen = 256 }, AttentionModeInput = true };
        var rw = model.Clone();
        AttentionRewriter.Rewrite(rw, options);
        RewrittenPath = _dir["rewritten.onnx"];
        OnnxModelFile.Save(rw, RewrittenPath);
        var st = model.Clone();
        AttentionRewriter.Rewrite(st, options with { CompressedState = true });
        StatefulPath = _dir["stateful.onnx"];
        OnnxModelFile.Save(st, StatefulPath);
        Original = DecoderModel.Open(OriginalPath);
        Rewritten = DecoderModel.Open(RewrittenPath);
        Stateful = DecoderModel.Open(StatefulPath);
    }

    public string OriginalPath { get; }
    public string RewrittenPath { get; }
    public string StatefulPath { get; }
    public DecoderModel Original { get; }
    public DecoderModel Rewritten { get; }
    public DecoderModel Stateful { get; }

    public static int[] Prompt(int n, int seed = 5)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => rng.Next(Config.Vocab)).ToArray();
    }

    public void Dispose()
    {
        Original.Dispose();
        Rewritten.Dispose();
        Stateful.Dispose();
        _dir.Dispose();
    }
}

public class DecoderSessionTests(DecoderModels models) : IClassFixture<DecoderModels>
{
    private static float Diff(float[] a, float[] b) => ModelRunner.MaxAbsDiff(a, b);

    [Theory]
    [InlineData(AttentionMode.Dense)]
    [InlineData(AttentionMode.Sparse)]
    public void DecodeAfterPrefill_EqualsFullRecompute(AttentionMode routing)
    {
        var prompt = DecoderModels.Prompt(600);
        var options = new DecoderSessionOptions { Capacity = 1024, Routing = RoutingPolicy.Always(routing) };
        using var stepwise = new DecoderSession(models.Rewritten, options);
        stepwise.AppendTokens(prompt.AsSpan(0, 590));
        float[] logits = [];
        foreach (var t in prompt[590..]) logits = stepwise.NextToken(t);
        using var full = new DecoderSession(models.Rewritten, options);
        full.AppendTokens(prompt);
        Assert.True(Diff(logits, full.LastLogits()!) <= 1e-4f);
        Assert.Equal(routing == AttentionMode.Sparse ? AttentionMode.Sparse : AttentionMode.Dense, stepwise.LastModes[0]);
    }

    [Fact]
    public void ChunkedPrefill_EqualsOneShot()
    {
        var prompt = DecoderModels.Prompt(700);
        using var oneShot = new DecoderSession(models.Rewritten, new() { Capacity = 1024 });
        using var chunked = new DecoderSession(models.Rewritten, new() { Capacity = 1024, ChunkSize = 96 });
        oneShot.AppendTokens(prompt);
        chunked.AppendTokens(prompt);
        Assert.True(Diff(oneShot.LastLogits()!, chunked.LastLogits()!) <= 1e-4f);
        Assert.Equal(AttentionMode.Sparse, chunked.LastModes[0]);  // 700 >= dense_len 256
    }

    [Fact]
    public void RewindThenRegenerate_ReproducesTokens()
    {
        var prompt = DecoderModels.Prompt(40);
        var options = new GenerationOptions { MaxNewTokens = 12 };
        using var s = new DecoderSession(models.Rewritten, new() { Capacity = 256 });
        var first = s.Generate(prompt, options).ToList();
        s.RewindTo(prompt.Length - 1);
        var again = s.Generate([prompt[^1]], options).ToList();
        Assert.Equal(first, again);
        Assert.Equal(12, first.Count);
    }

    [Fact]
    public void RaggedBatch_EqualsSeparateRequests()
    {
        int[][] prompts = [DecoderModels.Prompt(5, 1), DecoderModels.Prompt(9, 2), DecoderModels.Prompt(300, 3)];
        using var batch = new DecoderSession(models.Rewritten, new() { BatchSize = 3, Capacity = 512 });
        batch.AppendTokens(prompts);
        int[] next = [7, 8, 9];
        var batchLogits = batch.NextTokens(next);
        Assert.Equal(new[] { 6, 10, 301 }, batch.Lengths);
        for (int b = 0; b < 3; b++)
        {
            using var single = new DecoderSession(models.Rewritten, new() { Capacity = 512 });
            single.AppendTokens(prompts[b]);
            var l = single.NextToken(next[b]);
            Assert.True(Diff(batchLogits[b], l) <= 1e-4f, $"request {b}");
        }
        Assert.Equal([AttentionMode.Dense, AttentionMode.Dense, AttentionMode.Sparse], batch.LastModes);
    }

    [Fact]
    public void CompressedStateDecode_EqualsStateless()
    {
        var prompt = DecoderModels.Prompt(500);
        var options = new DecoderSessionOptions { Capacity = 1024, Routing = RoutingPolicy.Always(AttentionMode.Sparse) };
        using var withState = new DecoderSession(models.Stateful, options);
        using var stateless = new DecoderSession(models.Rewritten, options);
        withState.AppendTokens(prompt);
        stateless.AppendTokens(prompt);
        for (int i = 0; i < 40; i++)  // crosses several new windows
        {
            var a = withState.NextToken(i);
            var b = stateless.NextToken(i);
            Assert.True(Diff(a, b) <= 1e-5f, $"step {i}");
        }
    }

    [Fact]
    public void OriginalModel_SameCode_DenseAgreesWithRewritten()
    {
        var prompt = DecoderModels.Prompt(100);
        using var a = new DecoderSession(models.Original, new() { Capacity = 256 });
        using var b = new DecoderSession(models.Rewritten, new() { Capacity = 256, Routing = RoutingPolicy.Always(AttentionMode.Dense) });
        Assert.True(a.UsesSharedBuffers);
        var ta = a.Generate(prompt, new GenerationOptions { MaxNewTokens = 10 }).ToList();
        var tb = b.Generate(prompt, new GenerationOptions { MaxNewTokens = 10 }).ToList();
        Assert.Equal(ta, tb);
        Assert.True(Diff(a.LastLogits()!, b.LastLogits()!) <= 1e-4f);
    }

    [Fact]
    public void GrowingCacheFallback_EqualsSharedBuffers()
    {
        var prompt = DecoderModels.Prompt(80);
        using var shared = new DecoderSession(models.Stateful, new() { Capacity = 256, Routing = RoutingPolicy.Always(AttentionMode.Sparse) });
        using var growing = new DecoderSession(models.Stateful, new() { Capacity = 256, SharedBuffers = false, Routing = RoutingPolicy.Always(AttentionMode.Sparse) });
        Assert.False(growing.UsesSharedBuffers);
        var ta = shared.Generate(prompt, new GenerationOptions { MaxNewTokens = 8 }).ToList();
        var tb = growing.Generate(prompt, new GenerationOptions { MaxNewTokens = 8 }).ToList();
        Assert.Equal(ta, tb);
        Assert.True(Diff(shared.LastLogits()!, growing.LastLogits()!) <= 1e-5f);
    }

    [Fact]
    public void ConcurrentSessions_OverOneModel_AreIndependent()
    {
        var prompts = Enumerable.Range(0, 4).Select(i => DecoderModels.Prompt(50 + 30 * i, i)).ToArray();
        var expected = prompts.Select(p =>
        {
            using var s = new DecoderSession(models.Rewritten, new() { Capacity = 256 });
            return s.Generate(p, new GenerationOptions { MaxNewTokens = 6 }).ToList();
        }).ToArray();
        var got = new List<int>[prompts.Length];
        Parallel.For(0, prompts.Length, i =>
        {
            using var s = new DecoderSession(models.Rewritten, new() { Capacity = 256 });
            got[i] = s.Generate(prompts[i], new GenerationOptions { MaxNewTokens = 6 }).ToList();
        });
        for (int i = 0; i < prompts.Length; i++) Assert.Equal(expected[i], got[i]);
    }

    [Fact]
    public void Sampling_IsSeededAndStops_AndCancellationWorks()
    {
        var prompt = DecoderModels.Prompt(20);
        var o = new GenerationOptions { MaxNewTokens = 15, Temperature = 0.8f, TopKTokens = 20, TopP = 0.9f, Seed = 42 };
        using var s1 = new DecoderSession(models.Rewritten, new() { Capacity = 128 });
        using var s2 = new DecoderSession(models.Rewritten, new() { Capacity = 128 });
        var a = s1.Generate(prompt, o).ToList();
        var b = s2.Generate(prompt, o).ToList();
        Assert.Equal(a, b);
        using var s3 = new DecoderSession(models.Rewritten, new() { Capacity = 128 });
        var stopped = s3.Generate(prompt, o with { StopTokens = [a[3]] }).ToList();
        Assert.Equal(a.Take(stopped.Count), stopped);
        Assert.Contains(a[3], stopped);
        using var s4 = new DecoderSession(models.Rewritten, new() { Capacity = 128 });
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.Throws<OperationCanceledException>(() => s4.Generate(prompt, o, cts.Token).ToList());
    }

    // Threads: every core unless asked; a count given is set on the caller's options too; the
    // tokens do not depend on it.
    [Fact]
    public void Open_ThreadCount_DefaultsToEveryCore_AndDoesNotChangeTokens()
    {
        Assert.Equal(Environment.ProcessorCount, DecoderModel.DefaultThreads);
        Assert.Equal(Environment.ProcessorCount, models.Rewritten.Threads);
        using var one = DecoderModel.Open(models.RewrittenPath, threads: 1);
        Assert.Equal(1, one.Threads);
        // One options object per model: the op library is registered on it once.
        using (var options = new Microsoft.ML.OnnxRuntime.SessionOptions { IntraOpNumThreads = 2 })
        using (var own = DecoderModel.Open(models.RewrittenPath, options))
        {
            Assert.Null(own.Threads);  // the caller's options decide
            Assert.Equal(2, options.IntraOpNumThreads);
        }
        using (var options = new Microsoft.ML.OnnxRuntime.SessionOptions { IntraOpNumThreads = 2 })
        using (var set = DecoderModel.Open(models.RewrittenPath, options, threads: 1))
        {
            Assert.Equal(1, set.Threads);
            Assert.Equal(1, options.IntraOpNumThreads);
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => DecoderModel.Open(models.RewrittenPath, threads: 0));
        var prompt = DecoderModels.Prompt(40);
        using var s1 = new DecoderSession(one, new() { Capacity = 64 });
        using var sAll = new DecoderSession(models.Rewritten, new() { Capacity = 64 });
        Assert.Equal(sAll.Generate(prompt, new GenerationOptions { MaxNewTokens = 8 }).ToList(), s1.Generate(prompt, new GenerationOptions { MaxNewTokens = 8 }).ToList());
    }

    [Fact]
    public void BadUse_GivesClearErrors()
    {
        Assert.Throws<ArgumentException>(() => new DecoderSession(models.Original, new() { Routing = RoutingPolicy.Always(AttentionMode.Sparse) }));
        using var s = new DecoderSession(models.Rewritten, new() { Capacity = 16 });
        var e = Assert.Throws<InvalidOperationException>(() => s.AppendTokens(DecoderModels.Prompt(20)));
        Assert.Contains("capacity", e.Message);
    }
}

/// <summary>A request never grows past the positions the model can encode (the rows of its position table).</summary>
public class MaxPositionsTests
{
    [Theory]
    [InlineData(DecoderAttentionForm.GroupQueryAttention, false)]  // rotary cos table of GroupQueryAttention
    [InlineData(DecoderAttentionForm.GroupQueryAttention, true)]   // ... of SwitchableAttention
    [InlineData(DecoderAttentionForm.OnnxAttention, false)]        // table gathered by position_ids
    [InlineData(DecoderAttentionForm.Decomposed, true)]
    public void Session_StopsAtTheModelsPositions(DecoderAttentionForm form, bool rewritten)
    {
        var cfg = new TinyDecoderConfig { Form = form, Layers = 1, NumHeads = 4, KvNumHeads = 2, HeadSize = 16, Vocab = 128, Intermediate = 32, MaxPositions = 40, Seed = 8 };
        var proto = TinyDecoderGenerator.Generate(cfg);
        if (rewritten) AttentionRewriter.Rewrite(proto, new RewriteOptions { Sparse = new() { TopKBlocks = 2, SparseWindowTokens = 64, DenseLen = 256 } });
        using var dir = new TempDir();
        OnnxModelFile.Save(proto, dir["m.onnx"]);
        using var model = DecoderModel.Open(dir["m.onnx"]);
        Assert.Equal(40, model.MaxPositions);

        using var session = new DecoderSession(model, new() { Capacity = 100 });
        var e = Assert.Throws<InvalidOperationException>(() => session.AppendTokens(DecoderModels.Prompt(41)));
        Assert.Contains("40 positions", e.Message);
        Assert.Equal(0, session.Lengths[0]);  // nothing was run

        // Generation asked for more than fits stops when the request fills the table (40 tokens fed, 41 yielded).
        var tokens = session.Generate(DecoderModels.Prompt(30), new GenerationOptions { MaxNewTokens = 50 }).ToList();
        Assert.Equal(11, tokens.Count);
        Assert.Equal(40, session.Lengths[0]);
    }

    [Fact]
    public void RealFixture_StatesItsPositions()
    {
        using var model = DecoderModel.Open(Path.Combine(ModelRunner.FixturesRoot, "genai_tiny_random_llama_fp32_gqa_modelbuilder/model.onnx"));
        Assert.Equal(2048, model.MaxPositions);  // its genai_config.json says context_length 2048
    }

    [Fact]
    public void Cli_RefusesRequestsBeyondThePositions_Upfront()
    {
        var cfg = new TinyDecoderConfig { Layers = 1, NumHeads = 4, KvNumHeads = 2, HeadSize = 16, Vocab = 128, Intermediate = 32, MaxPositions = 40, Seed = 8 };
        using var dir = new TempDir();
        TinyDecoderGenerator.Save(TinyDecoderGenerator.Generate(cfg), dir["m.onnx"], externalData: false);
        var ok = CliProcess.Run("generate", dir["m.onnx"], "--prompt-ids", "1,2,3", "--max-new-tokens", "38");
        Assert.True(ok.ExitCode == 0, ok.StdErr);
        Assert.Equal(38, ok.StdOut.Trim().Split(',').Length);
        foreach (var args in new[]
        {
            new[] { "generate", dir["m.onnx"], "--prompt-ids", "1,2,3", "--max-new-tokens", "39" },
            ["generate", dir["m.onnx"], "--prompt-ids", "1,2,3", "--capacity", "2"],
            ["compare", dir["m.onnx"], dir["m.onnx"], "--prompt-len", "35", "--decode-steps", "6"],
        })
        {
            var r = CliProcess.Run(args);
            Assert.True(r.ExitCode == 2, string.Join(" ", args) + ": " + r.StdErr);
            Assert.StartsWith("error:", r.StdErr.Trim());
            Assert.Single(r.StdErr.Trim().Split('\n'));
            Assert.Equal("", r.StdOut.Trim());
        }
    }
}

/// <summary>The session reproduces the reference prefill and decode sets of the real fixtures it supports.</summary>
public class DecoderSessionFixtureTests
{
    [Theory]
    [InlineData("genai_tiny_random_llama_fp32_gqa_modelbuilder/model.onnx", false, 1e-4)]
    [InlineData("genai_tiny_random_llama_fp32_gqa_modelbuilder/model.onnx", true, 1e-4)]
    [InlineData("genai_webgpu_tiny_gqa_contrib_fp16/model.onnx", false, 2e-3)]
    [InlineData("genai_webgpu_tiny_gqa_contrib_fp16/model.onnx", true, 2e-3)]
    public void GenaiFixtures_ReferenceSets_Reproduced(string relative, bool rewritten, float atol)
    {
        var path = Path.Combine(ModelRunner.FixturesRoot, relative);
        var dir = Path.GetDirectoryName(path)!;
        using var tmp = new TempDir();
        if (rewritten)
        {
            var m = OnnxModelFile.Load(path);
            AttentionRewriter.Rewrite(m, new RewriteOptions());
            ModelWriter.Save(m, path, tmp["model.onnx"], force: false);
            path = tmp["model.onnx"];
        }
        using var model = DecoderModel.Open(path);
        using var session = new DecoderSession(model, new() { Capacity = 64 });
        foreach (var set in new[] { "test_data_set_0_prefill", "test_data_set_1_decode" })
        {
            var folder = Path.Combine(dir, "ref_ort1.30_cpu", set);
            var inputs = OnnxTestData.ReadAll(folder, "input");
            var outputs = OnnxTestData.ReadAll(folder, "output");
            var ids = TensorProtos.ToDoubles(inputs.Single(t => t.Name == "input_ids")).Select(x => (int)x).ToArray();
            session.AppendTokens(ids);
            var logits = outputs.Single(t => t.Name == "logits");
            var want = TensorProtos.ToDoubles(logits);
            int vocab = (int)logits.Dims[^1];
            var last = want.Skip(want.Length - vocab).Select(x => (float)x).ToArray();
            Assert.True(ModelRunner.MaxAbsDiff(session.LastLogits()!, last) <= atol, set);
        }
    }
}
