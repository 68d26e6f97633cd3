using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.OpContract;

namespace InfLlmV2.Onnx.Tests;

/// <summary>The shared exporter graphs (../shared/fixtures/real-graphs) rewrite every causal attention site.</summary>
public class RealGraphRewriteTests
{
    private static List<AttentionSite> RewriteAll(ModelProto model) => AttentionRewriter.Rewrite(model, new RewriteOptions());

    private static IEnumerable<NodeProto> AllNodes(GraphProto g) => g.Node.Concat(g.Node.SelectMany(GraphIndex.Subgraphs).SelectMany(AllNodes));

    [Fact]
    public void Gemma3OnnxCommunityGqaWithAttentionBiasRewritesAll34Layers()
    {
        if (RealGraphs.Folder() is null) return;
        using var dir = new TempDir();
        var model = RealGraphs.Load("onnxcommunity_gemma3_gqa_q4/decoder_model_merged_q4.onnx", dir);
        var sites = RewriteAll(model);
        Assert.Equal(34, sites.Count);
        Assert.All(sites, s => Assert.True(s.Rewritten, s.Reason));
        Assert.All(sites, s => Assert.Contains("attention_bias = key padding from 'attention_mask'", s.Note));
        // Gemma 3: five local (sliding-window) layers per global one (layers 5, 11, 17, 23, 29 are global).
        Assert.Equal(29, sites.Count(s => s.Note!.Contains("local_window_size=1024")));
        var nodes = AllNodes(model.Graph).ToList();
        Assert.DoesNotContain(nodes, n => n.OpType == "GroupQueryAttention");
        var ops = nodes.Where(n => n.OpType == SwitchableAttentionOp.OpType).ToList();
        Assert.Equal(34, ops.Count);
        // seqlens_k comes from the mask's row sums (one shared subgraph), the bias is gone.
        var index = new GraphIndex(model.Graph);
        Assert.All(ops, n => Assert.True(n.Input.Count <= SwitchableAttentionOp.Inputs.AttentionMode));
        Assert.Single(ops.Select(n => n.Input[5]).Distinct());
        Assert.Equal("ReduceSum", index.Producer(index.SkipPassThroughUp(index.Producer(ops[0].Input[5])!.Input[0]))!.OpType);
        Assert.DoesNotContain(nodes, n => n.Output.Any(o => o.Contains("gqa_attention_bias")));
        GraphCleanup.Validate(model.Graph, []);
    }

    [Fact]
    public void Phi35TorchExportDecomposedRewritesBothLayers()
    {
        if (RealGraphs.Folder() is null) return;
        using var dir = new TempDir();
        var model = RealGraphs.Load("custom_exporter_phi35_decomposed/model.onnx", dir);
        var inputs = model.Graph.Input.Select(i => i.Name).ToList();
        var outputs = model.Graph.Output.Select(o => o.Name).ToList();
        var sites = RewriteAll(model);
        Assert.Equal(2, sites.Count);
        Assert.All(sites, s => Assert.True(s.Rewritten, s.Reason));
        // Its mask: causal (Range/LessOrEqual), a sliding window of 262144 keys (Greater), and key padding
        // read from attention_mask through a flat Gather (And/Not), Slice'd to the key length.
        Assert.All(sites, s => Assert.Contains("local_window_size=262144", s.Note));
        Assert.All(sites, s => Assert.Contains("key padding from 'attention_mask'", s.Note));
        Assert.All(sites, s => Assert.Equal((32, 32, 96), (s.NumHeads, s.KvNumHeads, s.HeadSize)));
        Assert.Equal(2, model.Graph.Node.Count(n => n.OpType == SwitchableAttentionOp.OpType));
        Assert.DoesNotContain(model.Graph.Node, n => n.OpType == "Softmax");
        // The model's interface is unchanged (the op writes the presents the Concats wrote).
        Assert.Equal(inputs, model.Graph.Input.Select(i => i.Name));
        Assert.Equal(outputs, model.Graph.Output.Select(o => o.Name));
        GraphCleanup.Validate(model.Graph, []);
    }

    [Fact]
    public void Phi35_WithTheFlatGatherStrideNotTheMaskWidth_IsRefused()
    {
        if (RealGraphs.Folder() is null) return;
        using var dir = new TempDir();
        var model = RealGraphs.Load("custom_exporter_phi35_decomposed/model.onnx", dir);
        // b·W + k with W = 7 instead of attention_mask's width: the gather reads other rows.
        var index = new GraphIndex(model.Graph);
        var gather = model.Graph.Node.Single(n => n.OpType == "Gather" && index.Producer(n.Input[0])?.OpType == "Reshape"
            && index.SkipPassThroughUp(index.Producer(n.Input[0])!.Input[0]) == "attention_mask");
        var add = index.Producer(index.Producer(gather.Input[1])!.Input[0])!;
        var mul = add.Input.Select(index.Producer).Single(p => p?.OpType == "Mul")!;
        model.Graph.Initializer.Add(TensorProtos.Int64("seven", [1], [7]));
        mul.Input[1] = "seven";
        var sites = AttentionRewriter.Inspect(model);
        Assert.Equal(2, sites.Count);
        Assert.All(sites, s => Assert.False(s.Rewritable));
        Assert.All(sites, s => Assert.Contains("Gather", s.Reason));
    }
}
