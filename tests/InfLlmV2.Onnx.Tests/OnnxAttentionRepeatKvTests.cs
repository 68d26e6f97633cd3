using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// ONNX Attention with repeat_kv outside the node (K/V expanded from 3 to 9 heads before it): the
/// rule strips the repeat so that the op groups 3 query heads per kv head, as the model does, and
/// the output still matches the ONNX reference data of the GQA node test.
/// </summary>
public class OnnxAttentionRepeatKvTests
{
    private static string TestDir => Path.Combine(ModelRunner.FixturesRoot, "onnx_backend_attention_node_tests", "test_attention_4d_gqa_causal");

    private static ModelProto WithRepeatKvOutside(bool breakGrouping)
    {
        var model = OnnxModelFile.Load(Path.Combine(TestDir, "model.onnx"));
        var g = model.Graph;
        var attention = g.Node.Single(n => n.OpType == "Attention");
        g.Initializer.Add(TensorProtos.Int64("axis2", [1], [2]));
        g.Initializer.Add(TensorProtos.Int64("expand_shape", [5], [2, 3, 3, 6, 8]));
        g.Initializer.Add(TensorProtos.Int64("merged_shape", [4], [2, 9, 6, 8]));
        int at = g.Node.IndexOf(attention);
        foreach (var (x, i) in new[] { ("K", 1), ("V", 2) })
        {
            var nodes = new List<NodeProto>
            {
                GraphBuilder.Node("Unsqueeze", "", [x, "axis2"], [$"{x}_unsq"], name: $"{x}_unsq"),
                GraphBuilder.Node("Expand", "", [$"{x}_unsq", "expand_shape"], [$"{x}_exp"], name: $"{x}_exp"),
            };
            if (breakGrouping)
            {
                // Transpose (kv head, repeat) before merging: head h then reads kv head h % 3.
                nodes.Add(GraphBuilder.Node("Transpose", "", [$"{x}_exp"], [$"{x}_t"], [GraphBuilder.Ints("perm", 0, 2, 1, 3, 4)], $"{x}_t"));
                nodes.Add(GraphBuilder.Node("Reshape", "", [$"{x}_t", "merged_shape"], [$"{x}_rep"], name: $"{x}_rep"));
            }
            else
            {
                nodes.Add(GraphBuilder.Node("Reshape", "", [$"{x}_exp", "merged_shape"], [$"{x}_rep"], name: $"{x}_rep"));
            }
            for (int k = 0; k < nodes.Count; k++) g.Node.Insert(at++, nodes[k]);
            attention.Input[i] = $"{x}_rep";
        }
        return model;
    }

    [Fact]
    public void RepeatKvOutside_IsStripped_AndMatchesTheReference()
    {
        using var dir = new TempDir();
        var model = WithRepeatKvOutside(breakGrouping: false);
        var site = Assert.Single(AttentionRewriter.Rewrite(model, new RewriteOptions()));
        Assert.True(site.Rewritten, site.Reason);
        Assert.Equal((9, 3), (site.NumHeads, site.KvNumHeads));
        Assert.Contains("repeat_kv", site.Note);
        var op = model.Graph.Node.Single(n => n.OpType == "SwitchableAttention");
        Assert.Equal(3, op.IntAttr("kv_num_heads"));
        Assert.DoesNotContain(model.Graph.Node, n => n.Name is "K_exp" or "V_exp" or "K_rep" or "V_rep");  // the repeat is dead code now
        OnnxModelFile.Save(model, dir["m.onnx"]);
        RunComparison.AssertMatches(dir["m.onnx"], Path.Combine(TestDir, "test_data_set_0"), "1e-4", expectedCompared: 1);
    }

    [Fact]
    public void InterleavedRepeat_IsNotTakenForRepeatKv_AndStillMatchesTheOriginal()
    {
        // A transpose between Expand and Reshape is not repeat_kv: the node is rewritten with 9 kv
        // heads (what it computes), never with the wrong grouping.
        using var dir = new TempDir();
        var original = WithRepeatKvOutside(breakGrouping: true);
        OnnxModelFile.Save(original, dir["orig.onnx"]);
        var model = original.Clone();
        var site = Assert.Single(AttentionRewriter.Rewrite(model, new RewriteOptions()));
        Assert.True(site.Rewritten, site.Reason);
        Assert.Equal(9, site.KvNumHeads);
        OnnxModelFile.Save(model, dir["m.onnx"]);
        var outputs = dir["expected"];
        var reference = CliProcess.Run("run", dir["orig.onnx"], "--inputs", Path.Combine(TestDir, "test_data_set_0"), "--outputs", outputs, "--atol", "1e9");
        Assert.True(reference.ExitCode == 0, reference.StdOut + reference.StdErr);
        foreach (var f in Directory.GetFiles(Path.Combine(TestDir, "test_data_set_0"), "input_*.pb")) File.Copy(f, Path.Combine(outputs, Path.GetFileName(f)));
        RunComparison.AssertMatches(dir["m.onnx"], outputs, "1e-4", expectedCompared: 1);
    }
}
