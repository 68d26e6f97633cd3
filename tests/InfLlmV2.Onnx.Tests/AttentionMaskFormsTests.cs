using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.Session;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// Masks built from the attention_mask input: causal AND key padding proven in the
/// three forms exporters write (optimum decomposed, Attention-23 attn_mask, the genai builder's MHA),
/// without value_info, rewritten with seqlens_k = ReduceSum(attention_mask) − 1; other masks refused.
/// </summary>
public class AttentionMaskFormsTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private const int Vocab = 64;

    private static TinyDecoderConfig Config(DecoderAttentionForm form, int heads, int kvHeads, int headSize) => new()
    {
        Form = form, PaddingMask = true, ValueInfo = false, Layers = 2, NumHeads = heads, KvNumHeads = kvHeads, HeadSize = headSize,
        Vocab = Vocab, Intermediate = 32, MaxPositions = 256, Seed = 7,
    };

    private static (List<AttentionSite> Sites, string Rewritten) Rewrite(TempDir dir, string original)
    {
        var model = OnnxModelFile.Load(original);
        var sites = AttentionRewriter.Rewrite(model, new RewriteOptions { AttentionModeInput = true });
        Directory.CreateDirectory(dir["out"]);
        var path = Path.Combine(dir["out"], "rewritten.onnx");
        if (sites.Any(s => s.Rewritten)) ModelWriter.Save(model, original, path, force: false);
        return (sites, path);
    }

    public static TheoryData<DecoderAttentionForm, int, int, int> Forms()
    {
        var data = new TheoryData<DecoderAttentionForm, int, int, int>();
        foreach (var form in new[] { DecoderAttentionForm.Decomposed, DecoderAttentionForm.OnnxAttention, DecoderAttentionForm.MultiHeadAttention })
            foreach (var (h, kv, d) in new[] { (2, 2, 8), (4, 2, 16), (4, 1, 8), (5, 1, 16) })  // G = 1, 2, 4, 5; head size 8 and 16
                data.Add(form, h, kv, d);
        return data;
    }

    [Theory]
    [MemberData(nameof(Forms))]
    public void AttentionMaskForm_WithoutValueInfo_IsRewritten_AndMatchesDense(DecoderAttentionForm form, int heads, int kvHeads, int headSize)
    {
        using var dir = new TempDir();
        var original = TinyDecoderGenerator.Generate(Config(form, heads, kvHeads, headSize));
        Assert.Empty(original.Graph.ValueInfo);
        TinyDecoderGenerator.Save(original, dir["original.onnx"], externalData: false);

        var inspected = AttentionRewriter.Inspect(original);
        Assert.Equal(2, inspected.Count);
        foreach (var site in inspected)
        {
            Assert.True(site.Rewritable, site.Reason);
            Assert.Contains("ones then zeros", site.Note);
            // The MHA form repeats K/V to every query head before the node (the cache holds them all).
            Assert.Equal((heads, form == DecoderAttentionForm.MultiHeadAttention ? heads : kvHeads, headSize), (site.NumHeads, site.KvNumHeads, site.HeadSize));
            // inspect reports the inferred shapes of q/k/v (no value_info in the model).
            Assert.All(site.Shapes.Take(3), s => Assert.DoesNotContain("?", s.Shape));
            Assert.All(site.Shapes.Take(3), s => Assert.Contains("sequence_length", s.Shape));
        }

        var (sites, rewritten) = Rewrite(dir, dir["original.onnx"]);
        Assert.All(sites, s => Assert.True(s.Rewritten, s.Reason));
        var graph = OnnxModelFile.Load(rewritten).Graph;
        Assert.Equal(2, graph.Node.Count(n => n.OpType == "SwitchableAttention"));
        // The lengths come from attention_mask once, shared by both layers.
        Assert.Single(graph.Node, n => n.OpType == "ReduceSum" && n.Input[0] == "attention_mask");

        using var a = DecoderModel.Open(dir["original.onnx"]);
        using var b = DecoderModel.Open(rewritten);
        var prompt = DecoderModels.Prompt(11).Select(t => t % Vocab).ToArray();
        var steps = ModelComparisonProbe.Run(a, b, prompt, decodeSteps: 4);
        output.WriteLine($"{form} H={heads} Hkv={kvHeads} D={headSize}: max |Δlogits| {steps.Max(s => s.MaxAbsDiff):g3} over {steps.Count} steps");
        Assert.All(steps, s => Assert.True(s.Top1, $"step {s.Step}: top-1 differs (greedy tokens would differ)"));
        Assert.All(steps, s => Assert.True(s.MaxAbsDiff <= 1e-4, $"step {s.Step}: max |Δlogits| {s.MaxAbsDiff}"));
    }

    private static string MhaFixture => Path.Combine(ModelRunner.FixturesRoot, "genai_tiny_random_llama_fp16_mha_modelbuilder");

    [Fact]
    public void GenAiMhaFixture_IsRewritten_AndKeepsItsGreedyTokens()
    {
        using var dir = new TempDir();
        var (sites, rewritten) = Rewrite(dir, Path.Combine(MhaFixture, "model.onnx"));
        Assert.Equal(2, sites.Count);
        Assert.All(sites, s => Assert.True(s.Rewritten, s.Reason));
        Assert.All(sites, s => Assert.Contains("ones then zeros", s.Note));
        using var a = DecoderModel.Open(Path.Combine(MhaFixture, "model.onnx"));
        using var b = DecoderModel.Open(rewritten);
        var steps = ModelComparisonProbe.Run(a, b, [1, 450, 4996, 17354, 1701, 29916, 12500, 975, 278, 17366, 11203, 29889], decodeSteps: 8);
        output.WriteLine($"fixture: max |Δlogits| {steps.Max(s => s.MaxAbsDiff):g3} over {steps.Count} steps");
        Assert.All(steps, s => Assert.True(s.Top1, $"step {s.Step}: top-1 differs"));
        Assert.All(steps, s => Assert.True(s.MaxAbsDiff <= 1e-3, $"step {s.Step}: max |Δlogits| {s.MaxAbsDiff} (fp16 logits)"));
    }

    /// <summary>
    /// The genai MHA fixture with its causal part dropped (padding only: a bidirectional mask), as a
    /// genai folder in <paramref name="folder"/>: nothing in it can be rewritten.
    /// </summary>
    public static string PaddingOnlyMhaFolder(string folder)
    {
        Directory.CreateDirectory(folder);
        foreach (var f in new[] { "model.onnx.data", "genai_config.json" })
        {
            File.Copy(Path.Combine(MhaFixture, f), Path.Combine(folder, f));
            File.SetAttributes(Path.Combine(folder, f), FileAttributes.Normal);
        }
        var model = OnnxModelFile.Load(Path.Combine(MhaFixture, "model.onnx"));
        var g = model.Graph;
        NodeProto Producer(string v) => g.Node.Single(n => n.Output.Contains(v));
        var mha = g.Node.First(n => n.OpType == "MultiHeadAttention");
        var tile = Producer(mha.Input[5]);
        var add = Producer(tile.Input[0]);
        tile.Input[0] = add.Input.Single(i => Producer(i).OpType == "Where");  // the padding part alone
        OnnxModelFile.Save(model, Path.Combine(folder, "model.onnx"));
        return folder;
    }

    [Fact]
    public void PaddingOnlyMask_IsRefusedAsBidirectional()
    {
        using var dir = new TempDir();
        var model = OnnxModelFile.Load(Path.Combine(PaddingOnlyMhaFolder(dir["padding-only"]), "model.onnx"));
        var sites = AttentionRewriter.Inspect(model);
        Assert.Equal(2, sites.Count);
        Assert.All(sites, s => Assert.False(s.Rewritable));
        Assert.All(sites, s => Assert.Contains("bidirectional", s.Reason));
    }

    public static TheoryData<string, string> GeneratedNearMisses() => new()
    {
        { "padding-only", "bidirectional" },          // causal part replaced by zeros
        { "left-shifted-causal", "not causal" },      // key ≤ past + q − 1: the diagonal masked
        { "user-mask", "data-dependent" },            // a float mask input
        { "or-padding", "not one conjunction" },      // causal OR padding
    };

    [Theory]
    [MemberData(nameof(GeneratedNearMisses))]
    public void OtherMasks_AreRefusedWithTheirReason(string change, string reason)
    {
        var model = TinyDecoderGenerator.Generate(Config(DecoderAttentionForm.Decomposed, 4, 2, 16) with { Layers = 1 });
        var g = model.Graph;
        NodeProto Producer(string v) => g.Node.Single(n => n.Output.Contains(v));
        switch (change)
        {
            case "padding-only":
                g.Initializer.Add(TensorProtos.Float("zeros", [], [0f]));
                foreach (var n in g.Node.Where(n => n.Input.Contains("hf_mask/causal")))
                    for (int i = 0; i < n.Input.Count; i++) if (n.Input[i] == "hf_mask/causal") n.Input[i] = "zeros";
                break;
            case "left-shifted-causal":
                // Trilu(k = 0) and arange ≥ cache_position: the query's own key is masked too.
                Producer("hf_mask/triu").Input[1] = "hf_mask/zero";
                Producer("hf_mask/after").OpType = "GreaterOrEqual";
                break;
            case "user-mask":
                g.Input.Add(GraphBuilder.Tensor("user_mask", TensorProto.Types.DataType.Float, null, 1, null, null));
                Producer("hf_mask/mask").Input[2] = "user_mask";
                break;
            case "or-padding":
            {
                // Where(padded AND NOT visible-by-causal ...) replaced by Or of the two boolean conditions.
                var where = Producer("hf_mask/mask");
                g.Node.Add(GraphBuilder.Node("Cast", "", ["hf_mask/am_4d"], ["or/am_bool"], [GraphBuilder.Attr("to", (long)TensorProto.Types.DataType.Bool)]));
                g.Node.Add(GraphBuilder.Node("Not", "", ["hf_mask/after"], ["or/causal_ok"]));
                g.Node.Add(GraphBuilder.Node("Or", "", ["or/causal_ok", "or/am_bool"], ["or/visible"]));
                g.Node.Add(GraphBuilder.Node("Not", "", ["or/visible"], ["or/hidden"]));
                where.Input[0] = "or/hidden";
                where.Input[2] = "hf_mask/zero_f";
                break;
            }
        }
        var site = Assert.Single(AttentionRewriter.Inspect(model));
        Assert.False(site.Rewritable, "accepted: " + site.Note);
        Assert.Contains(reason, site.Reason);
    }

    [Fact]
    public void SessionMask_IsOnesThenZeros_ForRaggedLengths()
    {
        int[] lengths = [3, 5, 1, 0];
        var mask = DecoderSession.AttentionMaskRows(lengths, 5);
        Assert.Equal(20, mask.Length);
        for (int b = 0; b < lengths.Length; b++)
        {
            var row = mask.AsSpan(b * 5, 5).ToArray();
            Assert.Equal(lengths[b], row.Sum());                                           // ReduceSum(row) = the entry's length
            Assert.Equal(Enumerable.Range(0, 5).Select(t => t < lengths[b] ? 1L : 0L), row);  // ones then zeros
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => DecoderSession.AttentionMaskRows([6], 5));
    }

    [Fact]
    public void GqaHeadSize8WithFusedRotary_FailsInOrt_RunsRewritten_AndMatchesTheDecomposedFormOfTheSameWeights()
    {
        using var dir = new TempDir();
        var shape = new TinyDecoderConfig { Layers = 2, NumHeads = 4, KvNumHeads = 2, HeadSize = 8, Vocab = Vocab, Intermediate = 32, MaxPositions = 256, Seed = 7 };
        TinyDecoderGenerator.Save(TinyDecoderGenerator.Generate(shape), dir["gqa.onnx"], externalData: false);
        // The same weights (same seed and draw order) with rotary and attention from plain ONNX ops: the independent result.
        TinyDecoderGenerator.Save(TinyDecoderGenerator.Generate(shape with { Form = DecoderAttentionForm.Decomposed }), dir["decomposed.onnx"], externalData: false);
        int[] prompt = DecoderModels.Prompt(9).Select(t => t % Vocab).ToArray();

        using (var gqa = DecoderModel.Open(dir["gqa.onnx"]))
        using (var session = new DecoderSession(gqa, new() { Capacity = 32 }))
        {
            var e = Assert.ThrowsAny<OnnxRuntimeException>(() => session.AppendTokens(prompt));
            output.WriteLine("ORT GroupQueryAttention, head size 8: " + e.Message);
            Assert.Contains("head_size", e.Message);
        }

        var (sites, rewritten) = Rewrite(dir, dir["gqa.onnx"]);
        Assert.All(sites, s => Assert.True(s.Rewritten, s.Reason));
        using var reference = DecoderModel.Open(dir["decomposed.onnx"]);
        using var ours = DecoderModel.Open(rewritten);
        var steps = ModelComparisonProbe.Run(reference, ours, prompt, decodeSteps: 4);
        output.WriteLine($"rewritten GQA (D=8) vs decomposed: max |Δlogits| {steps.Max(s => s.MaxAbsDiff):g3}");
        Assert.All(steps, s => Assert.True(s.Top1, $"step {s.Step}: top-1 differs"));
        Assert.All(steps, s => Assert.True(s.MaxAbsDiff <= 1e-4, $"step {s.Step}: max |Δlogits| {s.MaxAbsDiff}"));
    }
}
