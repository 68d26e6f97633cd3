using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.OpContract;
using InfLlmV2.Onnx.Session;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// Every attribute that changes the math is carried into SwitchableAttention or refused: each form
/// with non-default values (a scale that is not 1/√D as Gemma 2 and Granite use, a softcap, interleaved
/// rotary, a sliding window), the rewritten model run against the original through ORT (a prompt of 9,
/// then decode steps after it; dense: totals far below dense_len).
/// </summary>
public class AttributeFidelityTests
{
    private const float Scale = 0.3f;  // 1/√32 = 0.177

    private static TinyDecoderConfig Config(DecoderAttentionForm form) => new()
    {
        Form = form, Layers = 2, NumHeads = 4, KvNumHeads = 2, HeadSize = 32, Vocab = 64, Intermediate = 64, MaxPositions = 64, Seed = 23,
    };

    private static void Set(NodeProto n, AttributeProto a)
    {
        if (n.Attribute.FirstOrDefault(x => x.Name == a.Name) is { } old) n.Attribute.Remove(old);
        n.Attribute.Add(a);
    }

    public static TheoryData<DecoderAttentionForm, string> Cases => new()
    {
        { DecoderAttentionForm.GroupQueryAttention, "scale" },
        { DecoderAttentionForm.GroupQueryAttention, "softcap" },
        { DecoderAttentionForm.GroupQueryAttention, "rotary_interleaved" },
        { DecoderAttentionForm.GroupQueryAttention, "local_window_size" },
        { DecoderAttentionForm.OnnxAttention, "scale" },
        { DecoderAttentionForm.OnnxAttention, "softcap" },
        { DecoderAttentionForm.MultiHeadAttention, "scale" },
        { DecoderAttentionForm.Decomposed, "scale" },
    };

    /// <summary>The generated model with the attribute set to a non-default value on every attention; the value the rewritten node must hold.</summary>
    private static (ModelProto Model, string Attribute, object Expected) WithNonDefault(DecoderAttentionForm form, string attribute)
    {
        var c = Config(form);
        var model = TinyDecoderGenerator.Generate(c);
        var nodes = model.Graph.Node.Where(n => n.OpType is "GroupQueryAttention" or "Attention" or "MultiHeadAttention").ToList();
        switch (attribute)
        {
            case "scale" when form == DecoderAttentionForm.Decomposed:
                // The decomposed form scales Q and Kᵀ by √scale each.
                foreach (var t in model.Graph.Initializer.Where(t => t.Name.EndsWith("/scale_sqrt", StringComparison.Ordinal)).ToList())
                {
                    model.Graph.Initializer.Remove(t);
                    model.Graph.Initializer.Add(TensorProtos.Float(t.Name, [], [MathF.Sqrt(Scale)]));
                }
                return (model, SwitchableAttentionOp.Attributes.Scale, Scale);
            case "scale":
                nodes.ForEach(n => Set(n, Attr("scale", Scale)));
                return (model, SwitchableAttentionOp.Attributes.Scale, Scale);
            case "softcap":
                nodes.ForEach(n => Set(n, Attr("softcap", 2.5f)));
                return (model, SwitchableAttentionOp.Attributes.Softcap, 2.5f);
            case "rotary_interleaved":
                nodes.ForEach(n => Set(n, Attr("rotary_interleaved", 1L)));
                return (model, SwitchableAttentionOp.Attributes.RotaryInterleaved, 1L);
            case "local_window_size":
                nodes.ForEach(n => Set(n, Attr("local_window_size", 3L)));
                return (model, SwitchableAttentionOp.Attributes.SlidingWindow, 3L);
            default: throw new ArgumentException(attribute);
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void NonDefaultAttribute_IsCarried_AndTheRewrittenModelMatchesTheOriginal(DecoderAttentionForm form, string attribute)
    {
        var (model, name, expected) = WithNonDefault(form, attribute);
        var c = Config(form);
        using var dir = new TempDir();
        OnnxModelFile.Save(model, dir["orig.onnx"]);
        var rewritten = model.Clone();
        var sites = AttentionRewriter.Rewrite(rewritten, new RewriteOptions { AttentionModeInput = true });
        Assert.All(sites, s => Assert.True(s.Rewritten, s.Reason));
        var ops = rewritten.Graph.Node.Where(SwitchableAttentionOp.Is).ToList();
        Assert.Equal(c.Layers, ops.Count);
        Assert.All(ops, n =>
        {
            var a = n.Attribute.Single(x => x.Name == name);
            if (expected is float f) Assert.Equal(f, a.F, 1e-6f);
            else Assert.Equal((long)expected, a.I);
        });
        OnnxModelFile.Save(rewritten, dir["rw.onnx"]);

        // A 9-token prompt, then 3 decode steps (the window of 3 cuts in on both).
        using var original = DecoderModel.Open(dir["orig.onnx"]);
        using var converted = DecoderModel.Open(dir["rw.onnx"]);
        var steps = ModelComparisonProbe.Run(original, converted, DecoderModels.Prompt(9).Select(t => t % c.Vocab).ToArray(), decodeSteps: 3);
        Assert.All(steps, s => Assert.True(s.MaxAbsDiff <= 1e-4, $"step {s.Step}: max |Δlogits| {s.MaxAbsDiff}"));
    }

    [Fact]
    public void NonDefaultScale_ChangesTheOutputs()
    {
        // The cases above would pass with the attribute ignored if it did not matter: it does.
        var c = Config(DecoderAttentionForm.GroupQueryAttention);
        using var dir = new TempDir();
        OnnxModelFile.Save(TinyDecoderGenerator.Generate(c), dir["default.onnx"]);
        var scaled = WithNonDefault(c.Form, "scale").Model;
        AttentionRewriter.Rewrite(scaled, new RewriteOptions { AttentionModeInput = true });
        OnnxModelFile.Save(scaled, dir["scaled.onnx"]);
        using var a = DecoderModel.Open(dir["default.onnx"]);
        using var b = DecoderModel.Open(dir["scaled.onnx"]);
        var steps = ModelComparisonProbe.Run(a, b, DecoderModels.Prompt(9).Select(t => t % c.Vocab).ToArray(), decodeSteps: 1);
        Assert.All(steps, s => Assert.True(s.MaxAbsDiff > 1e-3, $"step {s.Step}: max |Δlogits| {s.MaxAbsDiff}"));
    }

    public static TheoryData<string, string> OnnxAttentionRefusals => new()
    {
        { "left_window_size", "left_window_size=4 (a sliding window) is not rewritten for this form yet" },
        { "right_window_size", "right_window_size=0 (a sliding window) is not rewritten for this form yet" },
        { "future", "unknown attribute 'future'" },
    };

    [Theory]
    [MemberData(nameof(OnnxAttentionRefusals))]
    public void OnnxAttention_AttributeItCannotExpress_IsRefused(string attribute, string reason)
    {
        var model = TinyDecoderGenerator.Generate(Config(DecoderAttentionForm.OnnxAttention));
        var node = model.Graph.Node.First(n => n.OpType == "Attention");
        Set(node, Attr(attribute, attribute == "right_window_size" ? 0L : 4L));
        var sites = AttentionRewriter.Inspect(model);
        Assert.Contains(reason, sites[0].Reason);
        Assert.True(sites[1].Rewritable, sites[1].Reason);
    }
}
