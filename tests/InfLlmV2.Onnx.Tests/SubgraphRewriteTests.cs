using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.OpContract;
using Microsoft.ML.OnnxRuntime;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.Tests;

/// <summary>Attention inside If branches is found, rewritten in place, and still computes the same.</summary>
public class SubgraphRewriteTests
{
    private static ModelProto IfModel()
    {
        // Both branches run GQA on the outer graph's inputs; the then-branch also scales the result.
        var single = AttentionNodeModels.Build(new AttentionNodeConfig { Kind = AttentionOpKind.GroupQueryAttention, WithPast = false });
        var gqa = single.Graph.Node.Single();
        GraphProto Branch(string name, bool scale)
        {
            var b = new GraphProto { Name = name };
            var n = gqa.Clone();
            n.Output[0] = $"{name}_attn";
            n.Output[1] = $"{name}_pk";
            n.Output[2] = $"{name}_pv";
            b.Node.Add(n);
            if (scale)
            {
                b.Initializer.Add(TensorProtos.Float($"{name}_two", [], [2f]));
                b.Node.Add(Node("Mul", "", [$"{name}_attn", $"{name}_two"], [$"{name}_out"]));
            }
            else
            {
                b.Node.Add(Node("Identity", "", [$"{name}_attn"], [$"{name}_out"]));
            }
            b.Output.Add(Tensor($"{name}_out", TensorProto.Types.DataType.Float, null, null, null));
            return b;
        }
        var g = new GraphProto { Name = "main" };
        g.Input.AddRange(single.Graph.Input);
        g.Input.Add(Tensor("cond", TensorProto.Types.DataType.Bool));
        var iff = Node("If", "", ["cond"], ["y"]);
        iff.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("then", true) });
        iff.Attribute.Add(new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("else", false) });
        g.Node.Add(iff);
        g.Output.Add(Tensor("y", TensorProto.Types.DataType.Float, null, null, null));
        return Model(g, ("", 21), ("com.microsoft", 1));
    }

    private static float[] Run(ModelProto m, bool cond, AttentionCall call)
    {
        using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
        options.RegisterInfLlmV2Ops();
        using var s = new InferenceSession(OnnxModelFile.ToBytes(m), options);
        using var q = OrtValue.CreateTensorValueFromMemory(call.Query, [1, call.SeqLen, call.NumHeads * call.HeadSize]);
        using var k = OrtValue.CreateTensorValueFromMemory(call.Key!, [1, call.SeqLen, call.KvNumHeads * call.HeadSize]);
        using var v = OrtValue.CreateTensorValueFromMemory(call.Value!, [1, call.SeqLen, call.KvNumHeads * call.HeadSize]);
        using var seq = OrtValue.CreateTensorValueFromMemory(call.SeqlensK, [1]);
        using var total = OrtValue.CreateTensorValueFromMemory(new[] { call.TotalSequenceLength }, []);
        using var c = OrtValue.CreateTensorValueFromMemory(new[] { cond }, []);
        using var ro = new RunOptions();
        using var r = s.Run(ro, ["query", "key", "value", "seqlens_k", "total_sequence_length", "cond"], [q, k, v, seq, total, c], ["y"]);
        return r[0].GetTensorDataAsSpan<float>().ToArray();
    }

    [Fact]
    public void AttentionInIfBranches_IsRewritten_AndComputesTheSame()
    {
        var original = IfModel();
        var rewritten = original.Clone();
        var sites = AttentionRewriter.Rewrite(rewritten, new RewriteOptions());
        Assert.Equal(2, sites.Count(s => s.Rewritten));
        Assert.Equal(["then", "else"], sites.Select(s => s.Graph));
        var branches = rewritten.Graph.Node.Single().Attribute.Select(a => a.G).ToList();
        Assert.All(branches, b => Assert.Contains(b.Node, n => SwitchableAttentionOp.Is(n)));
        Assert.Contains(rewritten.OpsetImport, o => o.Domain == SwitchableAttentionOp.Domain);
        var call = AttentionCall.Random(5, 1, 7, 4, 2, 16, 0, [7]);
        foreach (var cond in new[] { true, false })
            Assert.True(ModelRunner.MaxAbsDiff(Run(original, cond, call), Run(rewritten, cond, call)) <= 1e-5f);
    }

    [Fact]
    public void ModeInputInsideSubgraph_IsRefusedWithReason()
    {
        var m = IfModel();
        var sites = AttentionRewriter.Rewrite(m, new RewriteOptions { AttentionModeInput = true });
        Assert.All(sites, s => Assert.Contains("subgraph", s.Reason));
        Assert.DoesNotContain(m.OpsetImport, o => o.Domain == SwitchableAttentionOp.Domain);
    }
}
