using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Rewriting;

namespace InfLlmV2.Onnx.Tests;

/// <summary>Every real exported model in ../shared/fixtures/real-models is inspected; the rewritable ones reproduce their references.</summary>
public class ConformanceTests
{
    public static TheoryData<string> AllModels()
    {
        var data = new TheoryData<string>();
        foreach (var f in Directory.EnumerateFiles(ModelRunner.FixturesRoot, "*.onnx", SearchOption.AllDirectories).Order())
            data.Add(Path.GetRelativePath(ModelRunner.FixturesRoot, f));
        return data;
    }

    [Theory]
    [MemberData(nameof(AllModels))]
    public void Inspect_EveryFixture_ReportsEverySiteWithAVerdict(string relative)
    {
        var model = OnnxModelFile.Load(Path.Combine(ModelRunner.FixturesRoot, relative));
        var sites = AttentionRewriter.Inspect(model);
        Assert.All(sites, s => Assert.True(s.Rewritable || !string.IsNullOrEmpty(s.Reason), $"{s.Node}: refused without a reason"));
        bool hasAttention = model.Graph.Node.Any(n => n.OpType is "GroupQueryAttention" or "Attention" or "MultiHeadAttention" or "Softmax");
        if (hasAttention) Assert.NotEmpty(sites);
    }

    public static TheoryData<string, string> GqaReferenceSets() => new()
    {
        { "genai_tiny_random_llama_fp32_gqa_modelbuilder/model.onnx", "ref_ort1.30_cpu" },
        { "genai_tiny_qwen35_gqa_contrib_fp16/decoder.onnx", "ref_ort1.30_cpu" },
        { "genai_webgpu_tiny_gqa_contrib_fp16/model.onnx", "ref_ort1.30_cpu" },
    };

    [Theory]
    [MemberData(nameof(GqaReferenceSets))]
    public void GqaFixtures_Rewritten_ReproduceReferenceOutputs(string relative, string refs)
    {
        using var dir = new TempDir();
        var src = Path.Combine(ModelRunner.FixturesRoot, relative);
        var output = dir[Path.GetFileName(src)];
        var (code, stdout, err) = CliProcess.Run("rewrite", src, "-o", output);
        Assert.True(code == 0, stdout + err);
        bool fp16 = relative.Contains("fp16", StringComparison.Ordinal);
        foreach (var set in Directory.GetDirectories(Path.Combine(Path.GetDirectoryName(src)!, refs)).Order())
        {
            var run = CliProcess.Run("run", output, "--inputs", set, "--atol", fp16 ? "1e-3" : "1e-4");
            Assert.True(run.ExitCode == 0, $"{set}:\n{run.StdOut}\n{run.StdErr}");
        }
    }

    public static TheoryData<string, bool> AttentionNodeTests()
    {
        var data = new TheoryData<string, bool>();
        foreach (var d in Directory.GetDirectories(Path.Combine(ModelRunner.FixturesRoot, "onnx_backend_attention_node_tests")).Order())
        {
            var name = Path.GetFileName(d);
            // Causal without mask, cache or nonpad lengths: rewritten (rule 2, and rule 3 for the
            // _expanded decomposed form); everything else refused with a reason.
            if (name.Contains("gqa", StringComparison.Ordinal))
                data.Add(name, name.Contains("_causal", StringComparison.Ordinal) && !name.Contains("nonpad", StringComparison.Ordinal));
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(AttentionNodeTests))]
    public void OnnxAttentionGqaNodeTests_RewrittenAndMatch_OrRefusedWithReason(string test, bool expectRewrite)
    {
        using var dir = new TempDir();
        var src = Path.Combine(ModelRunner.FixturesRoot, "onnx_backend_attention_node_tests", test);
        var (code, stdout, err) = CliProcess.Run("rewrite", Path.Combine(src, "model.onnx"), "-o", dir["m.onnx"], "--report", dir["r.json"]);
        if (!expectRewrite)
        {
            Assert.True(code == 3, stdout + err);
            Assert.Contains("\"reason\": \"", File.ReadAllText(dir["r.json"]));
            return;
        }
        Assert.True(code == 0, stdout + err);
        var run = CliProcess.Run("run", dir["m.onnx"], "--inputs", Path.Combine(src, "test_data_set_0"), "--atol", "1e-4");
        Assert.True(run.ExitCode == 0, run.StdOut + run.StdErr);
    }
}
