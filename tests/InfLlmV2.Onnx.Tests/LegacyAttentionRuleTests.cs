using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.OpContract;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// The legacy <c>com.microsoft::Attention</c> of ORT's transformers optimizer (GPT-2 family) →
/// SwitchableAttention: the generated form and the shared real graph, compared through ORT on
/// test-data folders (<c>compare --inputs</c>; totals far below dense_len, so the op runs dense).
/// </summary>
public class LegacyAttentionRuleTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private const string Atol = "1e-5";  // observed: at most 1e-6 (generated), 1.2e-7 (real GPT-2)

    private static TinyDecoderConfig Config => new()
    {
        Form = DecoderAttentionForm.LegacyAttention, Layers = 2, NumHeads = 4, KvNumHeads = 4, HeadSize = 16, Vocab = 64, Intermediate = 64,
        MaxPositions = 64, Seed = 17,
    };

    /// <summary>The shared real graphs (read in place, never copied into the repository).</summary>
    public static string RealGraph(params string[] parts)
    {
        foreach (var root in new[] { Path.Combine(ModelRunner.RepoRoot, "..", "shared"), Environment.GetEnvironmentVariable("INFLLMV2_SHARED_DIR") ?? "", "/work/shared" })
        {
            if (root.Length == 0) continue;
            var path = Path.GetFullPath(Path.Combine([root, "fixtures", "real-graphs", .. parts]));
            if (File.Exists(path)) return path;
        }
        throw new FileNotFoundException($"real graph {string.Join("/", parts)} not found under ../shared, INFLLMV2_SHARED_DIR or /work/shared");
    }

    private static string Gpt2 => RealGraph("ortopt_gpt2_contrib_attention", "past.onnx");

    /// <summary>
    /// A test-data folder for a GPT-2-style model: int32 input_ids, position_ids (past..past+S-1) and
    /// an all-ones attention_mask [1, past + S], and every 5-D past [2, 1, H, past, D] random.
    /// </summary>
    private static string WriteInputs(string dir, ModelProto model, int past, int seq, int vocab, int seed = 3)
    {
        Directory.CreateDirectory(dir);
        var rng = new Random(seed);
        var tensors = new List<TensorProto>();
        foreach (var input in model.Graph.Input.Where(i => model.Graph.Initializer.All(t => t.Name != i.Name)))
        {
            var dims = input.Type.TensorType.Shape.Dim;
            TensorProto t = input.Name switch
            {
                "input_ids" => TensorProtos.Int32(input.Name, [1, seq], Enumerable.Range(0, seq).Select(_ => rng.Next(vocab)).ToArray()),
                "position_ids" => TensorProtos.Int32(input.Name, [1, seq], Enumerable.Range(past, seq).ToArray()),
                "attention_mask" => TensorProtos.Int32(input.Name, [1, past + seq], Enumerable.Repeat(1, past + seq).ToArray()),
                _ => RandomPast(input.Name, dims[2].DimValue, past, dims[4].DimValue),
            };
            tensors.Add(t);
        }
        for (int i = 0; i < tensors.Count; i++) OnnxTestData.WriteTensor(tensors[i], Path.Combine(dir, $"input_{i}.pb"));
        return dir;

        TensorProto RandomPast(string name, long heads, int p, long d)
        {
            var data = new float[2 * heads * p * d];
            for (int i = 0; i < data.Length; i++) data[i] = (float)(rng.NextDouble() * 2 - 1);
            return TensorProtos.Float(name, [2, 1, heads, p, d], data);
        }
    }

    private void AssertCompareMatches(string original, string rewritten, string inputs)
    {
        var r = CliProcess.Run("compare", original, rewritten, "--inputs", inputs, "--atol", Atol);
        output.WriteLine(r.StdOut);
        Assert.True(r.ExitCode == 0, r.StdOut + r.StdErr);
        Assert.Contains("present_", r.StdOut);
        Assert.Contains("logits", r.StdOut);
    }

    private static void AssertSameInterface(ModelProto a, ModelProto b)
    {
        Assert.Equal(a.Graph.Input.ToList(), b.Graph.Input.ToList());
        Assert.Equal(a.Graph.Output.ToList(), b.Graph.Output.ToList());
    }

    [Theory]
    [InlineData(0, 5)]   // prefill: empty past
    [InlineData(6, 1)]   // decode
    [InlineData(6, 3)]   // a chunk after a past
    public void Generated_EveryLayerRewritten_SameInterface_CompareMatches(int past, int seq)
    {
        using var dir = new TempDir();
        var model = TinyDecoderGenerator.Generate(Config);
        OnnxModelFile.Save(model, dir["orig.onnx"]);
        var report = ModelRewriter.RewriteFile(dir["orig.onnx"], dir["rw.onnx"]);
        Assert.Equal(2, report.RewrittenCount);
        Assert.All(report.Sites, s => Assert.Equal((AttentionForm.LegacyAttention, 4, 4, 16), (s.Form, s.NumHeads!.Value, s.KvNumHeads!.Value, s.HeadSize!.Value)));
        var rewritten = OnnxModelFile.Load(dir["rw.onnx"]);
        AssertSameInterface(model, rewritten);
        Assert.DoesNotContain(rewritten.Graph.Node, n => n.OpType == "Attention");
        Assert.All(rewritten.Graph.Node.Where(SwitchableAttentionOp.Is), n =>
        {
            Assert.Equal(4, n.IntAttr("num_heads"));
            Assert.Equal(4, n.IntAttr("kv_num_heads"));
            Assert.Null(n.FloatAttr("scale"));
        });
        AssertCompareMatches(dir["orig.onnx"], dir["rw.onnx"], WriteInputs(dir["data"], model, past, seq, Config.Vocab));
    }

    /// <summary>The real GPT-2 graph (ORT transformers optimizer 1.17, weights embedded): all five layers.</summary>
    [Fact]
    public void RealGpt2_EverySiteRewritten_SameInterface_CompareMatches()
    {
        using var dir = new TempDir();
        var report = ModelRewriter.RewriteFile(Gpt2, dir["rw.onnx"]);
        Assert.Equal(5, report.Sites.Count);
        Assert.All(report.Sites, s =>
        {
            Assert.True(s.Rewritten, s.Reason);
            Assert.Equal((AttentionForm.LegacyAttention, 4, 4, 8), (s.Form, s.NumHeads!.Value, s.KvNumHeads!.Value, s.HeadSize!.Value));
            Assert.Contains("key padding from 'attention_mask'", s.Note);
        });
        var original = OnnxModelFile.Load(Gpt2);
        var rewritten = OnnxModelFile.Load(dir["rw.onnx"]);
        AssertSameInterface(original, rewritten);
        Assert.Equal(5, rewritten.Graph.Node.Count(SwitchableAttentionOp.Is));
        // One seqlens/total subgraph for all layers.
        Assert.Single(rewritten.Graph.Node, n => n.OpType == "ReduceSum");
        AssertCompareMatches(Gpt2, dir["rw.onnx"], WriteInputs(dir["data"], original, past: 6, seq: 4, vocab: 1000));
    }

    /// <summary>Without a mask the lengths come from the past's shape; a scale that is not 1/√D is carried (and changes the outputs).</summary>
    [Fact]
    public void NoMask_AndNonDefaultScale_Carried_CompareMatches()
    {
        using var dir = new TempDir();
        var model = TinyDecoderGenerator.Generate(Config);
        foreach (var n in model.Graph.Node.Where(n => n.OpType == "Attention"))
        {
            n.Input[3] = "";
            n.Attribute.Add(Attr("scale", 0.4f));
        }
        model.Graph.Input.Remove(model.Graph.Input.Single(i => i.Name == "attention_mask"));
        OnnxModelFile.Save(model, dir["orig.onnx"]);
        var report = ModelRewriter.RewriteFile(dir["orig.onnx"], dir["rw.onnx"]);
        Assert.Equal(2, report.RewrittenCount);
        Assert.All(report.Sites, s => Assert.Null(s.Note));
        var rewritten = OnnxModelFile.Load(dir["rw.onnx"]);
        Assert.All(rewritten.Graph.Node.Where(SwitchableAttentionOp.Is), n => Assert.Equal(0.4f, n.FloatAttr("scale")));
        AssertSameInterface(model, rewritten);
        AssertCompareMatches(dir["orig.onnx"], dir["rw.onnx"], WriteInputs(dir["data"], model, past: 5, seq: 3, vocab: Config.Vocab));
    }

    /// <summary>
    /// With --attention-mode-input the rewritten model runs in every mode: dense gives the original's
    /// outputs, sparse (a block size of 16 and a window of one block over 70 keys: selection active)
    /// runs, and the first layer's present is exact (past plus the new keys either way; later layers'
    /// new keys follow the sparse outputs before them).
    /// </summary>
    [Fact]
    public void AttentionModeInput_DenseMatches_SparseRuns()
    {
        using var dir = new TempDir();
        var model = TinyDecoderGenerator.Generate(Config with { MaxPositions = 128 });
        OnnxModelFile.Save(model, dir["orig.onnx"]);
        var options = new RewriteOptions
        {
            AttentionModeInput = true,
            Sparse = new SparseAttentionSettings { BlockSize = 16, CompressKernel = 16, CompressStride = 8, InitBlocks = 1, SparseWindowTokens = 16, TopKBlocks = 2 },
        };
        Assert.Equal(2, ModelRewriter.RewriteFile(dir["orig.onnx"], dir["rw.onnx"], options).RewrittenCount);
        var inputs = WriteInputs(dir["data"], model, past: 64, seq: 6, Config.Vocab);
        var feeds = OnnxTestData.ReadAll(inputs, "input").ToDictionary(t => t.Name);
        using var original = ModelRunner.Open(dir["orig.onnx"]);
        using var rewritten = ModelRunner.Open(dir["rw.onnx"]);
        var expected = Run(original, feeds, null);
        foreach (var mode in new[] { AttentionMode.Dense, AttentionMode.Sparse })
        {
            var got = Run(rewritten, feeds, mode);
            foreach (var (name, want) in expected)
            {
                double diff = want.Zip(got[name]).Max(p => Math.Abs(p.First - p.Second));
                if (mode == AttentionMode.Dense || name == LegacyAttentionDecoder.PresentName(0))
                    Assert.True(diff <= 1e-5, $"{mode} {name}: max |diff| {diff}");
                else
                    Assert.All(got[name], x => Assert.True(double.IsFinite(x)));
            }
        }

        static Dictionary<string, double[]> Run(Microsoft.ML.OnnxRuntime.InferenceSession session, Dictionary<string, TensorProto> feeds, AttentionMode? mode)
        {
            var values = feeds.Values.Select(t => OnnxTestData.ToOrtValue(t)).ToList();
            var names = feeds.Keys.ToList();
            if (mode is { } m)
            {
                names.Add(RewriteOptions.AttentionModeInputName);
                values.Add(Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(new[] { (int)m }, []));
            }
            try
            {
                using var ro = new Microsoft.ML.OnnxRuntime.RunOptions();
                using var results = session.Run(ro, names, values, session.OutputNames);
                return session.OutputNames.Select((n, i) => (n, TensorProtos.ToDoubles(OnnxTestData.FromOrtValue(n, results[i]))))
                    .ToDictionary(p => p.n, p => p.Item2);
            }
            finally
            {
                foreach (var v in values) v.Dispose();
            }
        }
    }

    public static TheoryData<string, string> Refusals => new()
    {
        { "unidirectional0", "unidirectional=0: bidirectional (encoder or vision) attention cannot be expressed by a causal op" },
        { "noUnidirectional", "unidirectional is not set (default 0)" },
        { "qkvSizes", "qkv_hidden_sizes [32, 32, 16]: Q, K and V of different widths are not rewritten" },
        { "doRotary", "do_rotary=1: the node's built-in rotary" },
        { "shareBuffer", "past_present_share_buffer=1" },
        { "attentionBias", "uses attention_bias (input 5)" },
        { "mask3d", "mask_index is 3-D (a per-query mask)" },
        { "mask1d", "mask_index is 1-D (per-batch end/start positions)" },
        { "headSize", "head size 4 is not a multiple of 8 up to 256" },
        { "unknownAttribute", "unknown attribute 'future_flag'" },
        { "weightsInput", "the fused QKV weights 'h0_c_attn_w' are a graph input (a training or parameter-fed export)" },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public void Refused_WithAReasonNamingWhatWasFound(string change, string reason)
    {
        // 4 heads of 8 (hidden 32): 8 heads make a head size of 4.
        var model = TinyDecoderGenerator.Generate(Config with { HeadSize = 8 });
        var node = model.Graph.Node.First(n => n.OpType == "Attention");
        void Set(string name, long v)
        {
            if (node.Attribute.SingleOrDefault(a => a.Name == name) is { } old) node.Attribute.Remove(old);
            node.Attribute.Add(Attr(name, v));
        }
        void MaskInput(params long?[] dims)
        {
            model.Graph.Input.Add(Tensor("other_mask", TensorProto.Types.DataType.Int32, dims));
            node.Input[3] = "other_mask";
        }
        switch (change)
        {
            case "unidirectional0": Set("unidirectional", 0); break;
            case "noUnidirectional": node.Attribute.Remove(node.Attribute.Single(a => a.Name == "unidirectional")); break;
            case "qkvSizes": node.Attribute.Add(Ints("qkv_hidden_sizes", 32, 32, 16)); break;
            case "doRotary": Set("do_rotary", 1); break;
            case "shareBuffer": Set("past_present_share_buffer", 1); break;
            case "attentionBias":
                model.Graph.Input.Add(Tensor("bias_in", TensorProto.Types.DataType.Float, 1, 4, null, null));
                node.Input.Add("bias_in");
                break;
            case "mask3d": MaskInput(null, null, null); break;
            case "mask1d": MaskInput(new long?[] { null }); break;
            case "headSize": Set("num_heads", 8); break;
            case "unknownAttribute": Set("future_flag", 1); break;
            case "weightsInput":
                var w = model.Graph.Initializer.Single(t => t.Name == node.Input[1]);
                model.Graph.Initializer.Remove(w);
                model.Graph.Input.Add(Tensor(w.Name, TensorProto.Types.DataType.Float, w.Dims[0], w.Dims[1]));
                break;
        }
        var site = AttentionRewriter.Inspect(model).First();
        Assert.Equal(AttentionForm.LegacyAttention, site.Form);
        Assert.False(site.Rewritable);
        Assert.Contains(reason, site.Reason);
    }
}
