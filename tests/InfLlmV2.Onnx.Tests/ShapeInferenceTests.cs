using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.Tests;

/// <summary>The symbolic shape pass: small graphs with known answers, and exported decoders with value_info stripped.</summary>
public class ShapeInferenceTests
{
    private const TensorProto.Types.DataType F32 = TensorProto.Types.DataType.Float;
    private const TensorProto.Types.DataType I64 = TensorProto.Types.DataType.Int64;

    private static ValueInfoProto Sym(string name, TensorProto.Types.DataType type, params object[] dims)
    {
        var v = Tensor(name, type, dims.Select(d => d is long l ? l : (long?)null).ToArray());
        for (int i = 0; i < dims.Length; i++)
            if (dims[i] is string s) v.Type.TensorType.Shape.Dim[i].DimParam = s;
        return v;
    }

    private static string Shape(GraphIndex g, string value) => ShapeInference.Format(g.Shape(value));

    [Fact]
    public void ProjectionSplitIntoHeads_ThroughShapeArithmetic()
    {
        // x [batch_size, sequence_length, 64] → MatMul [64, 64] → Reshape to Concat(Shape(x)[0:2], [4, -1]) → Transpose.
        var g = new GraphProto { Name = "g" };
        g.Input.Add(Sym("x", F32, "batch_size", "sequence_length", 64L));
        g.Initializer.Add(TensorProtos.Float("w", [64, 64], new float[64 * 64]));
        g.Initializer.Add(TensorProtos.Int64("heads_rest", [2], [4, -1]));
        g.Node.Add(Node("MatMul", "", ["x", "w"], ["q"]));
        g.Node.Add(Node("Shape", "", ["x"], ["x_shape"], [Attr("start", 0L), Attr("end", 2L)]));
        g.Node.Add(Node("Concat", "", ["x_shape", "heads_rest"], ["target"], [Attr("axis", 0L)]));
        g.Node.Add(Node("Reshape", "", ["q", "target"], ["q4"]));
        g.Node.Add(Node("Transpose", "", ["q4"], ["q_bnsd"], [Ints("perm", 0, 2, 1, 3)]));
        g.Node.Add(Node("Softmax", "", ["q_bnsd"], ["p"]));
        var index = new GraphIndex(g);
        Assert.Equal("[batch_size, sequence_length, 64]", Shape(index, "q"));
        Assert.Equal("[batch_size, sequence_length, 4, 16]", Shape(index, "q4"));
        Assert.Equal("[batch_size, 4, sequence_length, 16]", Shape(index, "p"));
        Assert.Equal(F32, index.ElementType("p"));
        Assert.Equal(["batch_size", "sequence_length", 4L, -1L], index.Inferred.Get("target").Values!);
    }

    [Fact]
    public void CacheConcat_Range_Expand_Gather_Slice_Unsqueeze()
    {
        var g = new GraphProto { Name = "g" };
        g.Input.Add(Sym("past", F32, "batch_size", 2L, "past_sequence_length", 8L));
        g.Input.Add(Sym("new", F32, "batch_size", 2L, "sequence_length", 8L));
        g.Input.Add(Sym("ids", I64, "batch_size", "sequence_length"));
        g.Initializer.Add(TensorProtos.Int64("zero", [], [0]));
        g.Initializer.Add(TensorProtos.Int64("one", [], [1]));
        g.Initializer.Add(TensorProtos.Int64("two", [], [2]));
        g.Initializer.Add(TensorProtos.Int64("ax2", [1], [2]));
        g.Initializer.Add(TensorProtos.Float("table", [100, 4], new float[400]));
        g.Node.Add(Node("Concat", "", ["past", "new"], ["present"], [Attr("axis", 2L)]));
        g.Node.Add(Node("Shape", "", ["present"], ["ps"]));
        g.Node.Add(Node("Gather", "", ["ps", "two"], ["total"], [Attr("axis", 0L)]));
        g.Node.Add(Node("Range", "", ["zero", "total", "one"], ["cols"]));
        g.Node.Add(Node("Unsqueeze", "", ["present", "ax2"], ["u"]));
        g.Node.Add(Node("Shape", "", ["u"], ["us"]));
        g.Node.Add(Node("Expand", "", ["u", "us"], ["e"]));
        g.Node.Add(Node("Gather", "", ["table", "ids"], ["rows"]));
        g.Initializer.Add(TensorProtos.Int64("s0", [1], [0]));
        g.Initializer.Add(TensorProtos.Int64("s1", [1], [2]));
        g.Initializer.Add(TensorProtos.Int64("ax3", [1], [3]));
        g.Node.Add(Node("Slice", "", ["new", "s0", "s1", "ax3"], ["half"]));
        g.Node.Add(Node("Neg", "", ["half"], ["neg"]));
        g.Node.Add(Node("ConstantOfShape", "", ["us"], ["zeros"]));
        g.Node.Add(Node("MysteryOp", "", ["new"], ["mystery"]));
        var index = new GraphIndex(g);
        Assert.Equal("[batch_size, 2, past_sequence_length + sequence_length, 8]", Shape(index, "present"));
        Assert.Equal("[past_sequence_length + sequence_length]", Shape(index, "cols"));
        Assert.Equal("[batch_size, 2, 1, past_sequence_length + sequence_length, 8]", Shape(index, "e"));
        Assert.Equal("[batch_size, sequence_length, 4]", Shape(index, "rows"));
        Assert.Equal("[batch_size, 2, sequence_length, 2]", Shape(index, "neg"));
        Assert.Equal("[batch_size, 2, 1, past_sequence_length + sequence_length, 8]", Shape(index, "zeros"));
        Assert.Null(index.Shape("mystery"));  // unknown ops are never guessed
        Assert.Null(index.ElementType("mystery"));
    }

    [Fact]
    public void ContribAttentionOps_HaveTheirOutputShapes()
    {
        var g = new GraphProto { Name = "g" };
        g.Input.Add(Sym("q", F32, "batch_size", "sequence_length", 48L));
        g.Input.Add(Sym("k", F32, "batch_size", "sequence_length", 48L));
        g.Input.Add(Sym("past_k", F32, "batch_size", 3L, "past_sequence_length", 16L));
        g.Node.Add(Node("MultiHeadAttention", "com.microsoft", ["q", "k", "k", "", "", "", "past_k", "past_k"], ["y", "pk", "pv"], [Attr("num_heads", 3L)]));
        g.Node.Add(Node("RotaryEmbedding", "com.microsoft", ["q", "pos", "cos", "sin"], ["q_rot"]));
        g.Node.Add(Node("GroupQueryAttention", "com.microsoft", ["q", "k", "k"], ["gy", "gk", "gv"], [Attr("num_heads", 3L), Attr("kv_num_heads", 3L)]));
        var index = new GraphIndex(g);
        Assert.Equal("[batch_size, sequence_length, 48]", Shape(index, "y"));
        Assert.Equal("[batch_size, 3, past_sequence_length + sequence_length, 16]", Shape(index, "pk"));
        Assert.Equal("[batch_size, sequence_length, 48]", Shape(index, "q_rot"));
        Assert.Equal("[batch_size, sequence_length, 48]", Shape(index, "gy"));
        Assert.Equal("[batch_size, 3, ?, 16]", Shape(index, "gk"));
    }

    [Theory]
    [InlineData(DecoderAttentionForm.Decomposed, 6, 2, 16)]
    [InlineData(DecoderAttentionForm.Decomposed, 4, 4, 8)]
    [InlineData(DecoderAttentionForm.OnnxAttention, 5, 1, 16)]
    [InlineData(DecoderAttentionForm.OnnxAttention, 8, 2, 8)]
    public void ExportWithoutValueInfo_IsStillRewritten_WithInferredHeads(DecoderAttentionForm form, int heads, int kvHeads, int headSize)
    {
        var cfg = new TinyDecoderConfig { Form = form, Layers = 2, NumHeads = heads, KvNumHeads = kvHeads, HeadSize = headSize, Vocab = 64, Intermediate = 32, MaxPositions = 64 };
        var model = TinyDecoderGenerator.Generate(cfg);
        model.Graph.ValueInfo.Clear();  // as optimum / transformers.js exports: no shape information inside the graph
        var sites = AttentionRewriter.Inspect(model);
        Assert.Equal(2, sites.Count);
        foreach (var s in sites)
        {
            Assert.True(s.Rewritable, s.Reason);
            Assert.Equal((heads, kvHeads, headSize), (s.NumHeads, s.KvNumHeads, s.HeadSize));
            Assert.Contains(s.Shapes, x => x.Shape == $"[batch_size, {heads}, sequence_length, {headSize}]");
        }
    }
}

/// <summary><c>inspect</c> prints each site's operands with their inferred shapes.</summary>
public class InspectShapesCliTests
{
    [Fact]
    public void Inspect_ReportsInferredShapes_TextAndJson()
    {
        using var dir = new TempDir();
        var cfg = new TinyDecoderConfig { Form = DecoderAttentionForm.OnnxAttention, Layers = 1, NumHeads = 4, KvNumHeads = 2, HeadSize = 8, Vocab = 32, Intermediate = 16, MaxPositions = 32 };
        var model = TinyDecoderGenerator.Generate(cfg);
        model.Graph.ValueInfo.Clear();
        OnnxModelFile.Save(model, dir["m.onnx"]);
        var text = CliProcess.Run("inspect", dir["m.onnx"]);
        Assert.Equal(0, text.ExitCode);
        Assert.Contains("shapes: ", text.StdOut);
        Assert.Contains("[batch_size, 4, sequence_length, 8]", text.StdOut);
        Assert.Contains("past_key_values.0.key [batch_size, 2, past_sequence_length, 8]", text.StdOut);
        var json = CliProcess.Run("inspect", dir["m.onnx"], "--json");
        Assert.Equal(0, json.ExitCode);
        Assert.Contains("\"shape\": \"[batch_size, 2, sequence_length, 8]\"", json.StdOut);
    }
}
