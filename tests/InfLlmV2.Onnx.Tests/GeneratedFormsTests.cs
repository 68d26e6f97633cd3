using Google.Protobuf;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.OpContract;
using InfLlmV2.Onnx.Session;

namespace InfLlmV2.Onnx.Tests;

/// <summary>The three generated forms: every attention is rewritten, and original and rewritten agree (dense) in prefill and decode.</summary>
public class GeneratedFormsTests
{
    [Theory]
    [InlineData(DecoderAttentionForm.GroupQueryAttention, false)]
    [InlineData(DecoderAttentionForm.GroupQueryAttention, true)]
    [InlineData(DecoderAttentionForm.OnnxAttention, false)]
    [InlineData(DecoderAttentionForm.OnnxAttention, true)]
    [InlineData(DecoderAttentionForm.Decomposed, false)]
    [InlineData(DecoderAttentionForm.Decomposed, true)]
    public void Form_RewritesEveryLayer_AndMatchesOriginal(DecoderAttentionForm form, bool externalData)
    {
        using var dir = new TempDir();
        var cfg = new TinyDecoderConfig { Form = form, Layers = 2, NumHeads = 6, KvNumHeads = 2, HeadSize = 16, Vocab = 96, Intermediate = 48, Seed = 21 };
        TinyDecoderGenerator.Save(TinyDecoderGenerator.Generate(cfg), dir["original.onnx"], externalData);
        var model = OnnxModelFile.Load(dir["original.onnx"]);
        var sites = AttentionRewriter.Rewrite(model, new RewriteOptions { Sparse = new() { TopKBlocks = 2, SparseWindowTokens = 64 }, AttentionModeInput = true });
        Assert.Equal(2, sites.Count);
        Assert.All(sites, s => Assert.True(s.Rewritten, s.Reason));
        Assert.All(sites, s => Assert.Equal((6, 2, 16), (s.NumHeads!.Value, s.KvNumHeads!.Value, s.HeadSize!.Value)));
        Directory.CreateDirectory(dir["out"]);
        var rewrittenPath = Path.Combine(dir["out"], "rewritten.onnx");
        ModelWriter.Save(model, dir["original.onnx"], rewrittenPath, force: false);

        using var a = DecoderModel.Open(dir["original.onnx"]);
        using var b = DecoderModel.Open(rewrittenPath);
        var prompt = DecoderModels.Prompt(90).Select(t => t % cfg.Vocab).ToArray();
        using var sa = new DecoderSession(a, new() { Capacity = 128 });
        using var sb = new DecoderSession(b, new() { Capacity = 128, Routing = RoutingPolicy.Always(AttentionMode.Dense) });
        sa.AppendTokens(prompt);
        sb.AppendTokens(prompt);
        Assert.True(ModelRunner.MaxAbsDiff(sa.LastLogits()!, sb.LastLogits()!) <= 1e-4f, "prefill");
        for (int i = 0; i < 5; i++)
        {
            int t = TokenSampler.ArgMax(sa.LastLogits()!);
            Assert.True(ModelRunner.MaxAbsDiff(sa.NextToken(t), sb.NextToken(t)) <= 1e-4f, $"decode {i}");
        }
        // Sparse mode runs too (small budget: selection active at this length).
        using var sc = new DecoderSession(b, new() { Capacity = 128, Routing = RoutingPolicy.Always(AttentionMode.Sparse) });
        sc.AppendTokens(prompt);
        Assert.Equal(AttentionMode.Sparse, sc.LastModes[0]);
        Assert.All(sc.LastLogits()!, x => Assert.True(float.IsFinite(x)));
    }

    [Fact]
    public void Forms_AreDeterministic()
    {
        foreach (var form in Enum.GetValues<DecoderAttentionForm>())
        {
            var cfg = new TinyDecoderConfig { Form = form, Seed = 4 };
            Assert.Equal(TinyDecoderGenerator.Generate(cfg).ToByteArray(), TinyDecoderGenerator.Generate(cfg).ToByteArray());
        }
    }
}
