using System.Text.Json;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.OpContract;
using InfLlmV2.Onnx.Session;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.Tests;

/// <summary>Rule 5: com.microsoft::MultiHeadAttention (+ RotaryEmbedding), as the ORT transformer optimizer fuses it.</summary>
public class MultiHeadAttentionRuleTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static TinyDecoderConfig Config(int heads, int kvHeads, int headSize) => new()
    {
        Form = DecoderAttentionForm.MultiHeadAttention, Layers = 2, NumHeads = heads, KvNumHeads = kvHeads, HeadSize = headSize,
        Vocab = 80, Intermediate = 40, MaxPositions = 256, Seed = 7,
    };

    private static string Write(TempDir dir, ModelProto original)
    {
        TinyDecoderGenerator.Save(original, dir["original.onnx"], externalData: false);
        var model = original.Clone();
        var sites = AttentionRewriter.Rewrite(model, new RewriteOptions { AttentionModeInput = true });
        Assert.Equal(2, sites.Count);
        Assert.All(sites, s => Assert.True(s.Rewritten, s.Reason));
        Directory.CreateDirectory(dir["out"]);
        var path = Path.Combine(dir["out"], "rewritten.onnx");
        ModelWriter.Save(model, dir["original.onnx"], path, force: false);
        return path;
    }

    [Theory]
    [InlineData(4, 4, 8)]    // G = 1, head size 8 (ORT's CPU GQA refuses 8 with fused rotary; our op runs it)
    [InlineData(6, 3, 16)]   // G = 2
    [InlineData(8, 2, 8)]    // G = 4
    [InlineData(4, 1, 16)]   // G = 4, one kv head
    public void GeneratedMha_RewrittenAndComparedDense(int heads, int kvHeads, int headSize)
    {
        using var dir = new TempDir();
        var original = TinyDecoderGenerator.Generate(Config(heads, kvHeads, headSize));
        var rewritten = Write(dir, original);
        var m = OnnxModelFile.Load(rewritten);
        Assert.DoesNotContain(m.Graph.Node, n => n.OpType == "MultiHeadAttention");
        Assert.Equal(4, m.Graph.Node.Count(n => n.OpType == "RotaryEmbedding"));  // rotary stays before the op
        foreach (var node in m.Graph.Node.Where(n => n.OpType == "SwitchableAttention"))
        {
            // K/V repeated before MHA: the op sees every query head, as the cache holds them.
            Assert.Equal(heads, node.Attribute.Single(a => a.Name == "num_heads").I);
            Assert.Equal(heads, node.Attribute.Single(a => a.Name == "kv_num_heads").I);
        }

        using var a = DecoderModel.Open(dir["original.onnx"]);
        using var b = DecoderModel.Open(rewritten);
        var prompt = DecoderModels.Prompt(37).Select(t => t % 80).ToArray();
        var steps = ModelComparisonProbe.Run(a, b, prompt, decodeSteps: 6);
        output.WriteLine($"H={heads} Hkv={kvHeads} D={headSize}: max |Δlogits| {steps.Max(s => s.MaxAbsDiff):g3} over {steps.Count} steps");
        Assert.All(steps, s => Assert.True(s.Top1, $"step {s.Step}: top-1 differs"));
        Assert.All(steps, s => Assert.True(s.MaxAbsDiff <= 1e-4, $"step {s.Step}: max |Δlogits| {s.MaxAbsDiff}"));
    }

    [Fact]
    public void Cli_CompareDense_AndGreedyTokensIdentical()
    {
        using var dir = new TempDir();
        var rewritten = Write(dir, TinyDecoderGenerator.Generate(Config(8, 2, 16)));
        var (code, stdout, err) = CliProcess.Run("compare", dir["original.onnx"], rewritten, "--prompt-len", "29", "--decode-steps", "5",
            "--mode", "dense", "--json", dir["c.json"]);
        Assert.True(code == 0, stdout + err);
        Assert.Contains("top-1 agreement 6/6 (100%)", stdout);
        using var json = JsonDocument.Parse(File.ReadAllText(dir["c.json"]));
        Assert.All(json.RootElement.GetProperty("steps").EnumerateArray(), s => Assert.True(s.GetProperty("max_abs_diff").GetDouble() <= 1e-4, s.ToString()));
        var ga = CliProcess.Run("generate", dir["original.onnx"], "--prompt-ids", "1,2,3,4,5,6,7", "--max-new-tokens", "8");
        var gb = CliProcess.Run("generate", rewritten, "--prompt-ids", "1,2,3,4,5,6,7", "--max-new-tokens", "8", "--mode", "dense");
        Assert.Equal((0, 0), (ga.ExitCode, gb.ExitCode));
        Assert.Equal(ga.StdOut, gb.StdOut);
    }

    private static ModelProto Mutate(Action<GraphProto, NodeProto> change)
    {
        var m = TinyDecoderGenerator.Generate(Config(4, 2, 16) with { Layers = 1 });
        change(m.Graph, m.Graph.Node.Single(n => n.OpType == "MultiHeadAttention"));
        return m;
    }

    public static TheoryData<string, string> NearMisses() => new()
    {
        { "no-mask", "bidirectional" },
        { "unidirectional", "" },
        { "padding", "key_padding_mask" },
        { "bias", "bias input" },
        { "mask-no-past-offset", "not at the past length" },
        { "data-mask", "not provably causal" },
    };

    [Theory]
    [MemberData(nameof(NearMisses))]
    public void NearMisses_AreRefusedWithReason_OrAcceptedWhenCausal(string change, string reason)
    {
        var m = Mutate((g, n) =>
        {
            switch (change)
            {
                case "no-mask": n.Input[5] = ""; break;
                case "unidirectional": n.Input[5] = ""; n.Attribute.Add(Attr("unidirectional", 1L)); break;
                case "padding": n.Input[4] = "attention_mask"; break;
                case "bias": n.Input[3] = "cos_cache"; break;
                case "mask-no-past-offset":
                    // rows not offset by the past: Add(rows, past) → rows
                    var add = g.Node.Single(x => x.Output[0] == "mask/positions");
                    add.OpType = "Identity";
                    add.Input.RemoveAt(1);
                    break;
                case "data-mask":
                    g.Node.Add(Node("Cast", "", ["attention_mask"], ["mask/float"], [Attr("to", (long)TensorProto.Types.DataType.Float)]));
                    n.Input[5] = "mask/float";
                    break;
            }
        });
        var site = Assert.Single(AttentionRewriter.Inspect(m));
        Assert.Equal(AttentionForm.MultiHeadAttention, site.Form);
        if (reason.Length == 0)
        {
            Assert.True(site.Rewritable, site.Reason);
            return;
        }
        Assert.False(site.Rewritable);
        Assert.Contains(reason, site.Reason);
        Assert.Equal((4, 16), (site.NumHeads, site.HeadSize));  // known from the shape pass even when refused
    }
}

/// <summary>Original vs rewritten through the session wrapper, greedy from the original (what <c>compare</c> does).</summary>
internal static class ModelComparisonProbe
{
    public sealed record Result(int Step, double MaxAbsDiff, bool Top1);

    public static List<Result> Run(DecoderModel original, DecoderModel rewritten, int[] prompt, int decodeSteps)
    {
        using var sa = new DecoderSession(original, new() { Capacity = prompt.Length + decodeSteps + 8 });
        using var sb = new DecoderSession(rewritten, new() { Capacity = prompt.Length + decodeSteps + 8, Routing = RoutingPolicy.Always(AttentionMode.Dense) });
        sa.AppendTokens(prompt);
        sb.AppendTokens(prompt);
        var steps = new List<Result>();
        float[] la = sa.LastLogits()!, lb = sb.LastLogits()!;
        for (int i = 0; ; i++)
        {
            int t = TokenSampler.ArgMax(la);
            steps.Add(new Result(i, ModelRunner.MaxAbsDiff(la, lb), t == TokenSampler.ArgMax(lb)));
            if (i == decodeSteps) return steps;
            la = sa.NextToken(t);
            lb = sb.NextToken(t);
        }
    }
}
