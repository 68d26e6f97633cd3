using Google.Protobuf;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.OpContract;

namespace InfLlmV2.Onnx.Tests;

public class GroupQueryAttentionRuleTests
{
    private static readonly TinyDecoderConfig Config = new() { Layers = 3, NumHeads = 6, KvNumHeads = 2, HeadSize = 32, Seed = 7 };

    [Fact]
    public void Rewrite_GeneratedDecoder_SwapsEveryLayerAndKeepsEverythingElse()
    {
        var original = TinyDecoderGenerator.Generate(Config);
        var model = original.Clone();
        var sites = AttentionRewriter.Rewrite(model, new RewriteOptions { Sparse = new() { TopKBlocks = 32, DenseLen = 4096 } });

        Assert.Equal(3, sites.Count(s => s.Rewritten));
        Assert.All(sites, s => Assert.Equal((6, 2, 32), (s.NumHeads!.Value, s.KvNumHeads!.Value, s.HeadSize!.Value)));
        var attn = model.Graph.Node.Where(n => SwitchableAttentionOp.Is(n)).ToList();
        Assert.Equal(3, attn.Count);
        Assert.All(attn, n =>
        {
            Assert.Equal(SwitchableAttentionOp.Domain, n.Domain);
            Assert.Equal(32, n.Attribute.Single(a => a.Name == "topk").I);
            Assert.Equal(4096, n.Attribute.Single(a => a.Name == "dense_len").I);
            Assert.Equal(1, n.Attribute.Single(a => a.Name == "do_rotary").I);
        });
        Assert.DoesNotContain(model.Graph.Node, n => n.OpType == "GroupQueryAttention");
        Assert.Contains(model.OpsetImport, o => o.Domain == SwitchableAttentionOp.Domain && o.Version == 1);
        // Names, inputs, outputs and initializers unchanged.
        Assert.Equal(original.Graph.Input.Select(i => i.Name), model.Graph.Input.Select(i => i.Name));
        Assert.Equal(original.Graph.Output.Select(i => i.Name), model.Graph.Output.Select(i => i.Name));
        Assert.Equal(original.Graph.Initializer.Select(i => i.Name), model.Graph.Initializer.Select(i => i.Name));
        Assert.Equal(original.Graph.Node.Select(n => n.Name), model.Graph.Node.Select(n => n.Name));
    }

    [Theory]
    [InlineData("attention_bias", "attention_bias")]
    [InlineData("qk_output", "qk_output")]
    [InlineData("smooth_softmax", "smooth_softmax")]
    [InlineData("k_quant_type", "quantized KV cache")]
    [InlineData("head_sink", "head_sink")]
    [InlineData("unknown_attr", "unknown attribute")]
    public void Check_NearMiss_IsRefusedWithReason(string variant, string reason)
    {
        var model = AttentionNodeModels.Build(new AttentionNodeConfig { Kind = AttentionOpKind.GroupQueryAttention });
        var node = model.Graph.Node.Single();
        switch (variant)
        {
            case "attention_bias": while (node.Input.Count < 11) node.Input.Add(""); node.Input[10] = "bias"; break;
            case "head_sink": while (node.Input.Count < 12) node.Input.Add(""); node.Input[11] = "sink"; break;
            case "qk_output": node.Attribute.Add(GraphBuilder.Attr("qk_output", 1L)); node.Output.Add("qk"); break;
            case "smooth_softmax": node.Attribute.Add(GraphBuilder.Attr("smooth_softmax", 1L)); break;
            case "k_quant_type":
                node.Attribute.Add(new AttributeProto { Name = "k_quant_type", Type = AttributeProto.Types.AttributeType.String, S = Google.Protobuf.ByteString.CopyFromUtf8("PER_TENSOR") });
                break;
            case "unknown_attr": node.Attribute.Add(GraphBuilder.Attr("brand_new", 1L)); break;
        }
        var sites = AttentionRewriter.Rewrite(model, new RewriteOptions());
        var site = Assert.Single(sites);
        Assert.False(site.Rewritten);
        Assert.Contains(reason, site.Reason);
        Assert.Equal("GroupQueryAttention", model.Graph.Node.Single().OpType);  // untouched
    }

    [Fact]
    public void SlidingWindow_IsRewrittenDenseOnly_WithANote()
    {
        var model = AttentionNodeModels.Build(new AttentionNodeConfig { Kind = AttentionOpKind.GroupQueryAttention });
        model.Graph.Node.Single().Attribute.Add(GraphBuilder.Attr("local_window_size", 128L));
        var site = Assert.Single(AttentionRewriter.Rewrite(model, new RewriteOptions { Sparse = new() { DenseLen = 1024 } }));
        Assert.True(site.Rewritten, site.Reason);
        Assert.Contains("sliding window of 128 keys: rewritten dense-only", site.Note);
        var node = model.Graph.Node.Single();
        Assert.Equal(128, node.IntAttr("local_window_size"));
        Assert.Equal(int.MaxValue, node.IntAttr("dense_len"));  // wins over --dense-len
        Assert.Single(node.Attribute, a => a.Name == "dense_len");
    }

    [Fact]
    public void Rewritten_MatchesOriginal_PrefillAndDecode_DenseMode()
    {
        using var dir = new TempDir();
        var original = TinyDecoderGenerator.Generate(Config);
        TinyDecoderGenerator.Save(original, dir["orig.onnx"], externalData: false);
        var rewritten = original.Clone();
        AttentionRewriter.Rewrite(rewritten, new RewriteOptions());
        OnnxModelFile.Save(rewritten, dir["rewritten.onnx"]);

        using var a = ModelRunner.Open(dir["orig.onnx"]);
        using var b = ModelRunner.Open(dir["rewritten.onnx"]);
        long[] prompt = [5, 17, 42, 99, 3, 250, 7, 11, 64, 128, 1, 2, 3];
        var pa = ModelRunner.DecoderStep(a, prompt, 3, 2, 32, null);
        var pb = ModelRunner.DecoderStep(b, prompt, 3, 2, 32, null);
        Assert.True(ModelRunner.MaxAbsDiff(pa["logits"].Data, pb["logits"].Data) <= 1e-4f);
        var da = ModelRunner.DecoderStep(a, [77], 3, 2, 32, pa);
        var db = ModelRunner.DecoderStep(b, [77], 3, 2, 32, pb);
        Assert.True(ModelRunner.MaxAbsDiff(da["logits"].Data, db["logits"].Data) <= 1e-4f);
        Assert.True(ModelRunner.MaxAbsDiff(da["present.2.key"].Data, db["present.2.key"].Data) <= 1e-5f);
    }

    [Fact]
    public void CompressedStateAndModeInput_AddNamedGraphValues_AndDecodeEqualsStateless()
    {
        using var dir = new TempDir();
        var cfg = Config with { PackedQkv = true };
        var model = TinyDecoderGenerator.Generate(cfg);
        var withState = model.Clone();
        AttentionRewriter.Rewrite(withState, new RewriteOptions { Sparse = new() { TopKBlocks = 2, SparseWindowTokens = 64, DenseLen = -1 }, CompressedState = true, AttentionModeInput = true });
        var stateless = model.Clone();
        AttentionRewriter.Rewrite(stateless, new RewriteOptions { Sparse = new() { TopKBlocks = 2, SparseWindowTokens = 64, DenseLen = -1 }, AttentionModeInput = true });
        Assert.Contains(withState.Graph.Input, i => i.Name == "past_key_values.0.compressed_key");
        Assert.Contains(withState.Graph.Output, o => o.Name == "present.2.compressed_key");
        Assert.Single(withState.Graph.Input, i => i.Name == "attention_mode");
        OnnxModelFile.Save(withState, dir["state.onnx"]);
        OnnxModelFile.Save(stateless, dir["stateless.onnx"]);

        using var a = ModelRunner.Open(dir["state.onnx"]);
        using var b = ModelRunner.Open(dir["stateless.onnx"]);
        var prompt = Enumerable.Range(0, 300).Select(i => (long)(i * 37 % 256)).ToArray();
        var pa = ModelRunner.DecoderStep(a, prompt, 3, 2, 32, null, mode: 2);
        var pb = ModelRunner.DecoderStep(b, prompt, 3, 2, 32, null, mode: 2);
        Assert.True(ModelRunner.MaxAbsDiff(pa["logits"].Data, pb["logits"].Data) <= 1e-5f);
        var da = ModelRunner.DecoderStep(a, [9], 3, 2, 32, pa, mode: 2);
        var db = ModelRunner.DecoderStep(b, [9], 3, 2, 32, pb, mode: 2);
        Assert.True(ModelRunner.MaxAbsDiff(da["logits"].Data, db["logits"].Data) <= 1e-5f);
        Assert.Equal(new long[] { 1, 2, (301 - 32) / 16 + 1, 32 }, da["present.0.compressed_key"].Shape);
    }

    [Fact]
    public void Generator_IsDeterministic()
    {
        var a = TinyDecoderGenerator.Generate(TinyDecoderConfig.Default).ToByteArray();
        var b = TinyDecoderGenerator.Generate(TinyDecoderConfig.Default).ToByteArray();
        Assert.Equal(a, b);
        Assert.NotEqual(a, TinyDecoderGenerator.Generate(TinyDecoderConfig.Default with { Seed = 1 }).ToByteArray());
    }
}
