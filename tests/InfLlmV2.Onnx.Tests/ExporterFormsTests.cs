using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.OpContract;
using InfLlmV2.Onnx.Session;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// The generated exporter forms (GQA attention_bias padding, FusedMatMul, TorchScript GPT-2, functions, merged decoders): every attention site is
/// rewritten, and original and rewritten (dense) agree over a prefill and decode steps.
/// </summary>
public class ExporterFormsTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private const int Vocab = 64;

    internal static TinyDecoderConfig Config(DecoderAttentionForm form) => new()
    {
        Form = form, ValueInfo = false, Layers = 2, NumHeads = 4, KvNumHeads = 2, HeadSize = 16,
        Vocab = Vocab, Intermediate = 32, MaxPositions = 256, Seed = 9,
    };

    /// <summary>Rewrites <paramref name="original"/>, checks every site was rewritten, and compares the two through the session (dense).</summary>
    private List<AttentionSite> RewriteAndCompare(ModelProto original, int sites, double tolerance = 1e-4)
    {
        using var dir = new TempDir();
        TinyDecoderGenerator.Save(original, dir["original.onnx"], externalData: false);
        var model = OnnxModelFile.Load(dir["original.onnx"]);
        var report = AttentionRewriter.Rewrite(model, new RewriteOptions { AttentionModeInput = true });
        Assert.Equal(sites, report.Count);
        Assert.All(report, s => Assert.True(s.Rewritten, s.Reason));
        Directory.CreateDirectory(dir["out"]);
        var path = Path.Combine(dir["out"], "rewritten.onnx");
        ModelWriter.Save(model, dir["original.onnx"], path, force: false);
        using var a = DecoderModel.Open(dir["original.onnx"]);
        using var b = DecoderModel.Open(path);
        var prompt = DecoderModels.Prompt(13).Select(t => t % Vocab).ToArray();
        var steps = ModelComparisonProbe.Run(a, b, prompt, decodeSteps: 4);
        output.WriteLine($"max |Δlogits| {steps.Max(s => s.MaxAbsDiff):g3} over {steps.Count} steps");
        Assert.All(steps, s => Assert.True(s.Top1, $"step {s.Step}: top-1 differs"));
        Assert.All(steps, s => Assert.True(s.MaxAbsDiff <= tolerance, $"step {s.Step}: max |Δlogits| {s.MaxAbsDiff}"));
        return report;
    }

    [Fact]
    public void GqaAttentionBiasPadding_IsRewrittenWithSeqlensFromTheMask_AndMatchesDense()
    {
        var original = TinyDecoderGenerator.Generate(Config(DecoderAttentionForm.GroupQueryAttention) with { AttentionBias = true });
        Assert.Equal(2, original.Graph.Node.Count(n => n.OpType == "GroupQueryAttention" && n.Input.Count > 10 && n.Input[10].Length > 0));
        var sites = RewriteAndCompare(original, 2);
        Assert.All(sites, s => Assert.Contains("attention_bias = key padding from 'attention_mask'", s.Note));
    }

    [Fact]
    public void GqaAttentionBias_ThatIsNotPaddingFromTheMask_IsRefusedWithWhatWasFound()
    {
        // The bias made from a constant instead of attention_mask: not key padding.
        var model = TinyDecoderGenerator.Generate(Config(DecoderAttentionForm.GroupQueryAttention) with { AttentionBias = true });
        var cast = model.Graph.Node.Single(n => n.OpType == "Cast" && n.Input[0] == "attention_mask");
        model.Graph.Initializer.Add(TensorProtos.Float("ones_bias", [1, 1], [1f]));
        cast.OpType = "Identity";
        cast.Attribute.Clear();
        cast.Input[0] = "ones_bias";
        var sites = AttentionRewriter.Inspect(model);
        Assert.All(sites, s => Assert.False(s.Rewritable));
        Assert.All(sites, s => Assert.StartsWith("uses input 10 (attention_bias): ", s.Reason));

        // seqlens_k that is not T − 1 (here T − 2): the op's own causal offset would differ.
        var shifted = TinyDecoderGenerator.Generate(Config(DecoderAttentionForm.GroupQueryAttention) with { AttentionBias = true });
        var sub = shifted.Graph.Node.Single(n => n.Output[0] == "gqa_attention_bias/width_minus_one");
        shifted.Graph.Initializer.Add(TensorProtos.Int64("two", [], [2]));
        sub.Input[1] = "two";
        var refused = AttentionRewriter.Inspect(shifted);
        Assert.All(refused, s => Assert.Contains("seqlens_k is neither", s.Reason));
    }

    [Fact]
    public void FusedMatMulScores_AreRewrittenWithAlphaAsTheScale_AndMatchDense()
    {
        var original = TinyDecoderGenerator.Generate(Config(DecoderAttentionForm.FusedMatMul));
        Assert.Equal(2, original.Graph.Node.Count(n => n.OpType == "FusedMatMul"));
        RewriteAndCompare(original, 2);
    }

    [Fact]
    public void FusedMatMul_WithTransA_IsRefusedWithWhatWasFound()
    {
        var model = TinyDecoderGenerator.Generate(Config(DecoderAttentionForm.FusedMatMul));
        foreach (var n in model.Graph.Node.Where(n => n.OpType == "FusedMatMul")) n.Attribute.Add(GraphTools.GraphBuilder.Attr("transA", 1L));
        var sites = AttentionRewriter.Inspect(model);
        Assert.Equal(2, sites.Count);
        Assert.All(sites, s => Assert.Contains("FusedMatMul for Q·Kᵀ with transA", s.Reason));
    }

    [Fact]
    public void TorchScriptGpt2BufferMask_IsRewritten_AndMatchesDense()
    {
        var original = TinyDecoderGenerator.Generate(Config(DecoderAttentionForm.TorchScriptGpt2));
        Assert.Equal(4, original.Graph.Node.Count(n => n.OpType == "Slice" && n.Output[0].Contains("bias_rows") || n.Output[0].Contains("causal_u8")));
        var sites = RewriteAndCompare(original, 2);
        Assert.All(sites, s => Assert.Contains("ones then zeros", s.Note));
    }

    [Theory]
    [InlineData("upper")]       // the buffer is upper-triangular: not causal
    [InlineData("rows_from_0")] // rows sliced [0, T) instead of [T − S, T): the queries' positions ignore the past
    public void TorchScriptGpt2_WithAnotherBufferOrSlice_IsRefused(string plant)
    {
        var model = TinyDecoderGenerator.Generate(Config(DecoderAttentionForm.TorchScriptGpt2));
        var g = model.Graph;
        if (plant == "upper")
        {
            var bias = g.Initializer.Single(t => t.Name == "gpt2/bias");
            long n = bias.Dims[^1];
            var bytes = bias.RawData.ToByteArray();
            for (long i = 0; i < n; i++)
                for (long j = 0; j < n; j++) bytes[i * n + j] = (byte)(j >= i ? 1 : 0);
            bias.RawData = Google.Protobuf.ByteString.CopyFrom(bytes);
        }
        else
        {
            foreach (var slice in g.Node.Where(x => x.Output[0].EndsWith("/bias_rows"))) slice.Input[1] = "gpt2/zero_1d";
        }
        var sites = AttentionRewriter.Inspect(model);
        Assert.Equal(2, sites.Count);
        Assert.All(sites, s => Assert.False(s.Rewritable));
        output.WriteLine(sites[0].Reason);
        Assert.All(sites, s => Assert.Contains(plant == "upper" ? "mask not provably causal" : "a Slice of a table's rows", s.Reason));
    }

    [Fact]
    public void AttentionInsideAModelLocalFunction_IsInlinedAndRewritten_AndMatchesDense()
    {
        var original = TinyDecoderGenerator.Generate(Config(DecoderAttentionForm.Function));
        Assert.Single(original.Functions);
        Assert.Equal(2, original.Graph.Node.Count(n => n.OpType == "CausalAttention"));
        // Inspect sees the sites without modifying the model.
        var before = original.Clone();
        Assert.All(AttentionRewriter.Inspect(original), s => Assert.True(s.Rewritable, s.Reason));
        Assert.Equal(before, original);
        var sites = RewriteAndCompare(original, 2);
        Assert.All(sites, s => Assert.StartsWith("/layers.", s.Node));
    }

    [Fact]
    public void HybridModel_GqaLayersAreRewritten_AndTheLinearAttentionScanIsLeftUntouched()
    {
        // A GQA decoder beside a linear-attention layer in a Scan (state S += kᵀv, y = q·S per token):
        // products of computed values without a Softmax; the rewrite must neither report nor touch it.
        const int D = 8;
        var model = TinyDecoderGenerator.Generate(Config(DecoderAttentionForm.GroupQueryAttention));
        var f32 = TensorProto.Types.DataType.Float;
        var body = new GraphProto { Name = "linear_attention_step" };
        body.Input.Add(GraphTools.GraphBuilder.Tensor("state", f32, D, D));
        body.Input.Add(GraphTools.GraphBuilder.Tensor("x", f32, D));
        body.Initializer.Add(TensorProtos.Int64("axis0", [1], [0]));
        body.Initializer.Add(TensorProtos.Int64("axis1", [1], [1]));
        body.Node.Add(GraphTools.GraphBuilder.Node("Unsqueeze", "", ["x", "axis1"], ["k"]));
        body.Node.Add(GraphTools.GraphBuilder.Node("Unsqueeze", "", ["x", "axis0"], ["v"]));
        body.Node.Add(GraphTools.GraphBuilder.Node("MatMul", "", ["k", "v"], ["kv"]));
        body.Node.Add(GraphTools.GraphBuilder.Node("Add", "", ["state", "kv"], ["state_next"]));
        body.Node.Add(GraphTools.GraphBuilder.Node("MatMul", "", ["v", "state_next"], ["y"]));
        body.Output.Add(GraphTools.GraphBuilder.Tensor("state_next", f32, D, D));
        body.Output.Add(GraphTools.GraphBuilder.Tensor("y", f32, 1, D));
        var scan = GraphTools.GraphBuilder.Node("Scan", "", ["linear/state0", "linear_input"], ["linear/state", "linear_output"],
            [GraphTools.GraphBuilder.Attr("num_scan_inputs", 1L)], "linear_attention");
        scan.Attribute.Add(new AttributeProto { Name = "body", Type = AttributeProto.Types.AttributeType.Graph, G = body });
        model.Graph.Initializer.Add(TensorProtos.Float("linear/state0", [D, D], new float[D * D]));
        model.Graph.Input.Add(GraphTools.GraphBuilder.Tensor("linear_input", f32, null, D));
        model.Graph.Node.Add(scan);
        model.Graph.Output.Add(GraphTools.GraphBuilder.Tensor("linear_output", f32, null, 1, D));
        var scanBefore = scan.Clone();

        var sites = AttentionRewriter.Rewrite(model, new RewriteOptions());
        Assert.Equal(2, sites.Count);
        Assert.All(sites, s => Assert.True(s.Rewritten, s.Reason));
        Assert.All(sites, s => Assert.Equal(model.Graph.Name, s.Graph));
        Assert.Equal(2, model.Graph.Node.Count(n => n.OpType == SwitchableAttentionOp.OpType));
        Assert.Equal(scanBefore, Assert.Single(model.Graph.Node, n => n.OpType == "Scan"));
        Assert.Contains(model.Graph.Output, o => o.Name == "linear_output");
    }

    [Fact]
    public void RewrittenFunctionModel_HasNoCallsLeft_AndKeepsOtherFunctions()
    {
        var model = TinyDecoderGenerator.Generate(Config(DecoderAttentionForm.Function));
        var unrelated = new FunctionProto { Name = "Unused", Domain = "pkg.other" };
        unrelated.Input.Add("x");
        unrelated.Output.Add("y");
        unrelated.Node.Add(GraphTools.GraphBuilder.Node("Relu", "", ["x"], ["y"]));
        model.Functions.Add(unrelated);
        var sites = AttentionRewriter.Rewrite(model, new RewriteOptions());
        Assert.All(sites, s => Assert.True(s.Rewritten, s.Reason));
        Assert.DoesNotContain(model.Graph.Node, n => n.OpType == "CausalAttention");
        Assert.Equal(["Unused"], model.Functions.Select(f => f.Name));
        Assert.Equal(2, model.Graph.Node.Count(n => n.OpType == SwitchableAttentionOp.OpType));
    }

    [Fact]
    public void FunctionImportingAnotherOpsetVersion_IsNotInlined_AndTheReportSaysWhy()
    {
        var model = TinyDecoderGenerator.Generate(Config(DecoderAttentionForm.Function));
        model.Functions[0].OpsetImport[0].Version = 18;
        var sites = AttentionRewriter.Inspect(model);
        var site = Assert.Single(sites);
        Assert.False(site.Rewritable);
        Assert.Contains("model-local function 'pkg.torch_lib::CausalAttention', not inlined: it imports domain 'ai.onnx' at version 18, the model at 23", site.Reason);
    }

    // The merged model with use_cache_branch fixed to one branch (the session feeds no such input).
    private static ModelProto Branch(ModelProto merged, bool useCache)
    {
        var m = merged.Clone();
        var input = m.Graph.Input.Single(i => i.Name == "use_cache_branch");
        m.Graph.Input.Remove(input);
        m.Graph.Initializer.Add(TensorProtos.Create<byte>("use_cache_branch", TensorProto.Types.DataType.Bool, [1], [(byte)(useCache ? 1 : 0)]));
        return m;
    }

    [Theory]
    [InlineData(DecoderAttentionForm.GroupQueryAttention)]
    [InlineData(DecoderAttentionForm.Decomposed)]
    [InlineData(DecoderAttentionForm.TorchScriptGpt2)]
    public void MergedDecoder_BothBranchesAreRewritten_AndEachMatchesDense(DecoderAttentionForm form)
    {
        using var dir = new TempDir();
        var original = TinyDecoderGenerator.Generate(Config(form) with { Merged = true });
        Assert.Single(original.Graph.Node, n => n.OpType == "If");
        var rewritten = original.Clone();
        var sites = AttentionRewriter.Rewrite(rewritten, new RewriteOptions());
        Assert.Equal(4, sites.Count);
        Assert.All(sites, s => Assert.True(s.Rewritten, s.Reason));
        Assert.Equal(["no_past", "no_past", "with_past", "with_past"], sites.Select(s => s.Graph).Order());
        var iff = rewritten.Graph.Node.Single(n => n.OpType == "If");
        Assert.All(iff.Attribute, a => Assert.Equal(2, a.G.Node.Count(n => n.OpType == SwitchableAttentionOp.OpType)));
        // Attention-mode input cannot be added inside a branch: compare through the session's Auto routing (dense at this length).
        foreach (var useCache in new[] { true, false })
        {
            var a = dir[$"a_{useCache}.onnx"];
            var b = dir[$"b_{useCache}.onnx"];
            OnnxModelFile.Save(Branch(original, useCache), a);
            OnnxModelFile.Save(Branch(rewritten, useCache), b);
            using var ma = DecoderModel.Open(a);
            using var mb = DecoderModel.Open(b);
            using var sa = new DecoderSession(ma, new() { Capacity = 32 });
            using var sb = new DecoderSession(mb, new() { Capacity = 32 });
            var prompt = DecoderModels.Prompt(13).Select(t => t % Vocab).ToArray();
            sa.AppendTokens(prompt);
            sb.AppendTokens(prompt);
            double worst = ModelRunner.MaxAbsDiff(sa.LastLogits()!, sb.LastLogits()!);
            // The no-past branch ignores the cache: only its prefill is a meaningful step.
            for (int i = 0; useCache && i < 4; i++)
            {
                int t = TokenSampler.ArgMax(sa.LastLogits()!);
                worst = Math.Max(worst, ModelRunner.MaxAbsDiff(sa.NextToken(t), sb.NextToken(t)));
            }
            output.WriteLine($"{form} use_cache_branch={useCache}: max |Δlogits| {worst:g3}");
            Assert.True(worst <= 1e-4, $"use_cache_branch={useCache}: max |Δlogits| {worst}");
        }
    }
}
