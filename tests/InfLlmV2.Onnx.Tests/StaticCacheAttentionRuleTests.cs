using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// Rule 2b on the real static-cache export (ONNX Attention-24 + TensorScatter, 3-D BSNH cache of 16,
/// sliding-window mask of 8, nonpad_kv_seqlen): golden data, original vs rewritten over lengths where
/// the window and the ragged/padded batch rows matter, and near misses made by editing the mask or
/// the scatters.
/// </summary>
public class StaticCacheAttentionRuleTests
{
    private const int Layers = 2, CacheLength = 16, KvHidden = 32, Vocab = 256;

    private static string FixtureDir => Path.Combine(ModelRunner.FixturesRoot, "genai_static_scatter_mistral_attn_op24");

    private static ModelProto LoadFixture() => OnnxModelFile.Load(Path.Combine(FixtureDir, "model.onnx"));

    [Fact]
    public void Fixture_IsRewritten_DenseOnlyWithTheMasksWindow()
    {
        var model = LoadFixture();
        var sites = AttentionRewriter.Rewrite(model, new RewriteOptions());
        Assert.Equal(2, sites.Count);
        Assert.All(sites, s =>
        {
            Assert.True(s.Rewritten, s.Reason);
            Assert.Equal((4, 2, 16), (s.NumHeads, s.KvNumHeads, s.HeadSize));
            Assert.Contains("sliding window of 8 keys", s.Note);
        });
        var ops = model.Graph.Node.Where(n => n.OpType == "SwitchableAttention").ToList();
        Assert.Equal(2, ops.Count);
        Assert.All(ops, n =>
        {
            Assert.Equal(8, n.IntAttr("local_window_size"));
            Assert.Equal(int.MaxValue, n.IntAttr("dense_len"));
            Assert.Equal(0.25f, n.FloatAttr("scale"));
        });
        Assert.DoesNotContain(model.Graph.Node, n => n.OpType == "Attention");
        // The scatters stay: they produce the cache outputs.
        Assert.Equal(4, model.Graph.Node.Count(n => n.OpType == "TensorScatter"));
        // One shared lengths subgraph for both layers.
        Assert.Single(model.Graph.Node, n => n.OpType == "ReduceMax");
        var original = LoadFixture();
        Assert.Equal(original.Graph.Input.Select(i => i.Name), model.Graph.Input.Select(i => i.Name));
        Assert.Equal(original.Graph.Output.Select(i => i.Name), model.Graph.Output.Select(i => i.Name));
    }

    [Fact]
    public void Fixture_Rewritten_ReproducesGoldenPrefillAndDecode()
    {
        using var dir = new TempDir();
        var (code, stdout, err) = CliProcess.Run("rewrite", Path.Combine(FixtureDir, "model.onnx"), "-o", dir["m.onnx"]);
        Assert.True(code == 0, stdout + err);
        var sets = Directory.GetDirectories(FixtureDir, "golden_test_data_set_*").Order().Select(d => Path.GetFileName(d)).ToArray();
        Assert.Equal(["golden_test_data_set_0_prefill", "golden_test_data_set_1_decode"], sets);
        // logits and the updated key/value caches of both layers
        foreach (var set in sets) RunComparison.AssertMatches(dir["m.onnx"], Path.Combine(FixtureDir, set), "1e-4", expectedCompared: 5);
    }

    [Fact]
    public void CompareOnTestData_OriginalVsRewritten_ExitCodes()
    {
        using var dir = new TempDir();
        var model = Path.Combine(FixtureDir, "model.onnx");
        Assert.Equal(0, CliProcess.Run("rewrite", model, "-o", dir["m.onnx"]).ExitCode);
        var set = Path.Combine(FixtureDir, "golden_test_data_set_1_decode");
        var ok = CliProcess.Run("compare", model, dir["m.onnx"], "--inputs", set);
        Assert.True(ok.ExitCode == 0, ok.StdOut + ok.StdErr);
        Assert.Contains("updated_key_cache.1", ok.StdOut);
        // fp32 rounding differs a little (the op sums in another order): atol 0 must report it.
        var strict = CliProcess.Run("compare", model, dir["m.onnx"], "--inputs", set, "--atol", "0");
        Assert.True(strict.ExitCode == 1, strict.StdOut + strict.StdErr);
        Assert.Contains("FAIL", strict.StdOut);
        var usage = CliProcess.Run("compare", model, dir["m.onnx"], "--inputs", set, "--decode-steps", "2");
        Assert.Equal(2, usage.ExitCode);
        Assert.Contains("--decode-steps does not apply with --inputs", usage.StdErr);
    }

    /// <summary>
    /// Batch of 2 over three calls: a 12-token prompt (row 1 right-padded to 7 valid tokens), a decode
    /// step and a 3-token chunk, so the window of 8 cuts in and the rows sit at different positions.
    /// Logits of valid rows and every cache output must match the original.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Rewritten_MatchesOriginal_WindowRaggedRowsAndChunks(bool withoutWindow)
    {
        using var dir = new TempDir();
        var original = LoadFixture();
        if (withoutWindow) RemoveWindow(original);
        OnnxModelFile.Save(original, dir["orig.onnx"]);
        var rewritten = original.Clone();
        var sites = AttentionRewriter.Rewrite(rewritten, new RewriteOptions());
        Assert.All(sites, s => Assert.True(s.Rewritten, s.Reason));
        Assert.All(sites, s => Assert.Equal(withoutWindow, s.Note is null));
        OnnxModelFile.Save(rewritten, dir["rewritten.onnx"]);
        using var a = ModelRunner.Open(dir["orig.onnx"]);
        using var b = ModelRunner.Open(dir["rewritten.onnx"]);

        var rng = new Random(5);
        float[][] caches = Enumerable.Range(0, 2 * Layers).Select(_ => new float[2 * CacheLength * KvHidden]).ToArray();
        (long[] Write, long[] Valid, int S)[] steps = [([0, 0], [12, 7], 12), ([12, 7], [1, 1], 1), ([13, 8], [3, 3], 3)];
        foreach (var (write, valid, s) in steps)
        {
            var ids = Enumerable.Range(0, 2 * s).Select(_ => (long)rng.Next(3, Vocab)).ToArray();
            var ra = Step(a, ids, write, valid, s, caches);
            var rb = Step(b, ids, write, valid, s, caches);
            for (int row = 0; row < 2; row++)
                for (int i = 0; i < valid[row]; i++)
                {
                    var offset = ((row * s) + i) * Vocab;
                    var diff = ModelRunner.MaxAbsDiff(ra["logits"][offset..(offset + Vocab)], rb["logits"][offset..(offset + Vocab)]);
                    Assert.True(diff <= 1e-4f, $"write {write[row]} row {row} token {i}: logits differ by {diff}");
                }
            // Cache rows below nonpad_kv_seqlen must match; the padded rows' keys of layer 1 come
            // from padded hidden states, which may differ (and are overwritten by the next write).
            for (int l = 0; l < Layers; l++)
                foreach (var kv in new[] { "key", "value" })
                {
                    var name = $"updated_{kv}_cache.{l}";
                    for (int row = 0; row < 2; row++)
                    {
                        int from = row * CacheLength * KvHidden, to = from + (int)(write[row] + valid[row]) * KvHidden;
                        Assert.True(ModelRunner.MaxAbsDiff(ra[name][from..to], rb[name][from..to]) <= 1e-4f, $"{name} row {row}");
                    }
                }
            caches = Enumerable.Range(0, Layers).SelectMany(l => new[] { ra[$"updated_key_cache.{l}"], ra[$"updated_value_cache.{l}"] }).ToArray();
        }
    }

    public static TheoryData<string, string> NearMisses() => new()
    {
        { "circular", "circular mode" },
        { "mask-offset-from-nonpad", "not the same positions" },
        { "mask-not-additive", "not an additive mask" },
        { "mask-or", "no causal constraint" },  // causal OR window: every key passes one of them (the analysis models Or)
        { "mask-from-input", "data-dependent" },
        { "mask-and-attention-mask", "key padding from an attention_mask" },
        { "is-causal", "is_causal=1" },
        { "scatters-disagree", "different positions" },
    };

    [Theory]
    [MemberData(nameof(NearMisses))]
    public void NearMiss_IsRefusedWithReason_AndLeftUntouched(string variant, string reason)
    {
        var model = LoadFixture();
        var g = model.Graph;
        NodeProto Producer(string v) => g.Node.Single(n => n.Output.Contains(v));
        var attention = g.Node.First(n => n.OpType == "Attention");
        var mask = attention.Input[3];
        switch (variant)
        {
            case "circular":
                foreach (var n in g.Node.Where(n => n.OpType == "TensorScatter"))
                    n.Attribute.Add(new AttributeProto { Name = "mode", Type = AttributeProto.Types.AttributeType.String, S = Google.Protobuf.ByteString.CopyFromUtf8("circular") });
                break;
            case "mask-offset-from-nonpad":
                // Queries placed at nonpad_kv_seqlen + row instead of the write position.
                foreach (var n in g.Node.Where(n => n.OpType == "Unsqueeze" && n.Input[0] == "write_indices")) n.Input[0] = "nonpad_kv_seqlen";
                break;
            case "mask-not-additive":
            {
                var where = g.Node.Single(n => n.OpType == "Where");
                g.Initializer.Add(TensorProtos.Float("one_f32", [], [1f]));
                where.Input[1] = "one_f32";
                break;
            }
            case "mask-or":
                g.Node.First(n => n.OpType == "And").OpType = "Or";
                break;
            case "mask-from-input":
                g.Input.Add(GraphBuilder.Tensor("user_mask", TensorProto.Types.DataType.Float, null, 1, null, CacheLength));
                foreach (var n in g.Node.Where(n => n.OpType == "Attention")) n.Input[3] = "user_mask";
                break;
            case "mask-and-attention-mask":
                // The proven mask AND an HF attention_mask [B, cache] read as key padding.
                g.Input.Add(GraphBuilder.Tensor("attention_mask", TensorProto.Types.DataType.Int64, null, CacheLength));
                g.Initializer.Add(TensorProtos.Int64("am_axes", [2], [1, 2]));
                g.Node.Add(GraphBuilder.Node("Unsqueeze", "", ["attention_mask", "am_axes"], ["am_4d"]));
                g.Node.Add(GraphBuilder.Node("Cast", "", ["am_4d"], ["am_bool"], [GraphBuilder.Attr("to", (long)TensorProto.Types.DataType.Bool)]));
                g.Initializer.Add(TensorProtos.Float("am_zero", [], [0f]));
                g.Initializer.Add(TensorProtos.Float("am_min", [], [float.MinValue]));
                g.Node.Add(GraphBuilder.Node("Where", "", ["am_bool", "am_zero", "am_min"], ["am_additive"]));
                g.Node.Add(GraphBuilder.Node("Add", "", [mask, "am_additive"], ["mask_and_am"]));
                foreach (var n in g.Node.Where(n => n.OpType == "Attention")) n.Input[3] = "mask_and_am";
                break;
            case "is-causal":
                attention.Attribute.Single(a => a.Name == "is_causal").I = 1;
                break;
            case "scatters-disagree":
            {
                var valueScatter = Producer(attention.Input[2]);
                valueScatter.Input[2] = "nonpad_kv_seqlen";
                break;
            }
        }
        Assert.NotNull(mask);
        var sites = AttentionRewriter.Rewrite(model, new RewriteOptions());
        var site = sites.First(s => s.Node == attention.Name);
        Assert.False(site.Rewritable);
        Assert.False(site.Rewritten);
        Assert.Contains(reason, site.Reason);
        Assert.Contains(g.Node, n => n.Name == attention.Name && n.OpType == "Attention");
    }

    [Fact]
    public void CompressedStateOption_IsRefusedWithReason()
    {
        var sites = AttentionRewriter.Inspect(LoadFixture(), new RewriteOptions { CompressedState = true });
        Assert.All(sites, s => Assert.Contains("--compressed-state", s.Reason));
    }

    /// <summary>Drops the sliding-window constraint from the mask: And(causal, window) → causal.</summary>
    private static void RemoveWindow(ModelProto model)
    {
        var g = model.Graph;
        var windowAnd = g.Node.Single(n => n.OpType == "And" && n.Input.Any(i => g.Node.Single(p => p.Output.Contains(i)).OpType == "Less"
            && g.Node.Single(p => p.Output.Contains(i)).Input.Any(x => g.Node.Any(s => s.OpType == "Sub" && s.Output.Contains(x)))));
        var causal = windowAnd.Input.First(i => g.Node.Single(p => p.Output.Contains(i)).OpType == "GreaterOrEqual");
        foreach (var n in g.Node)
            for (int i = 0; i < n.Input.Count; i++)
                if (n.Input[i] == windowAnd.Output[0]) n.Input[i] = causal;
        g.Node.Remove(windowAnd);
    }

    private static Dictionary<string, float[]> Step(InferenceSession session, long[] ids, long[] write, long[] valid, int s, float[][] caches)
    {
        var values = new Dictionary<string, OrtValue>
        {
            ["input_ids"] = OrtValue.CreateTensorValueFromMemory(ids, [2, s]),
            ["position_ids"] = OrtValue.CreateTensorValueFromMemory(
                Enumerable.Range(0, 2 * s).Select(i => write[i / s] + (i % s)).ToArray(), [2, s]),
            ["write_indices"] = OrtValue.CreateTensorValueFromMemory((long[])write.Clone(), [2]),
            ["nonpad_kv_seqlen"] = OrtValue.CreateTensorValueFromMemory(write.Zip(valid, (w, v) => w + v).ToArray(), [2]),
        };
        for (int l = 0; l < Layers; l++)
        {
            values[$"key_cache.{l}"] = OrtValue.CreateTensorValueFromMemory((float[])caches[2 * l].Clone(), [2, CacheLength, KvHidden]);
            values[$"value_cache.{l}"] = OrtValue.CreateTensorValueFromMemory((float[])caches[2 * l + 1].Clone(), [2, CacheLength, KvHidden]);
        }
        try
        {
            using var ro = new RunOptions();
            var names = session.InputNames.ToList();
            using var results = session.Run(ro, names, names.Select(n => values[n]).ToList(), session.OutputNames);
            return session.OutputNames.Select((n, i) => (n, results[i].GetTensorDataAsSpan<float>().ToArray())).ToDictionary(x => x.n, x => x.Item2);
        }
        finally
        {
            foreach (var v in values.Values) v.Dispose();
        }
    }
}
