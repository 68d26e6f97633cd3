using System.Text.Json;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.OpContract;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// <c>rewrite --preset</c> / <c>--score-precision</c> and <c>inspect</c>'s preset line: the named
/// attribute sets (docs/op-spec.md, "Compatibility with the official implementation"), explicit
/// flags winning over a preset, an unknown name refused with the known ones.
/// </summary>
public class PresetTests
{
    private static string Generate(TempDir dir)
    {
        var path = dir["m.onnx"];
        TinyDecoderGenerator.Save(TinyDecoderGenerator.Generate(new TinyDecoderConfig { Seed = 3 }), path, false);
        return path;
    }

    private static List<SparseAttentionSettings> NodeSettings(string model) =>
        OnnxModelFile.Load(model).Graph.Node.Where(SwitchableAttentionOp.Is).Select(SparseAttentionSettings.Of).ToList();

    [Fact]
    public void Presets_AreTheDocumentedMappings()
    {
        // The old scheme with a W-block window and a top-K that includes the init block:
        // window_size = (W - 1) block_size, topk = K + 1, lse_approx = 0.
        Assert.Equal(SparseAttentionSettings.Defaults, SparsePresets.Find("minicpm4.1")!.Settings);
        var m4 = SparsePresets.Find("minicpm4")!.Settings;
        Assert.Equal((32 - 1) * 64, m4.SparseWindowTokens);
        Assert.Equal(64 + 1, m4.TopKBlocks);
        Assert.False(m4.LseApprox);
        Assert.Equal(64 + 32, m4.BlockBudget);
        Assert.Equal(SparseAttentionSettings.Defaults with { SparseWindowTokens = 1984, TopKBlocks = 65, LseApprox = false }, m4);
        var cpmcu = SparsePresets.Find("cpmcu")!.Settings;
        Assert.Equal(SparseAttentionSettings.Defaults with { SparseWindowTokens = 1984, TopKBlocks = 33, LseApprox = false, DenseLen = 8224 }, cpmcu);
        Assert.All(SparsePresets.All, p => Assert.Null(p.Settings.Validate()));
        Assert.Equal("minicpm4.1, minicpm4, cpmcu", SparsePresets.Names);
    }

    [Theory]
    [InlineData("minicpm4")]
    [InlineData("cpmcu")]
    [InlineData("minicpm4.1")]
    public void Rewrite_Preset_WritesItsAttributes_AndInspectNamesIt(string preset)
    {
        using var dir = new TempDir();
        var input = Generate(dir);
        var (code, stdout, err) = CliProcess.Run("rewrite", input, "-o", dir["out.onnx"], "--preset", preset, "--report", dir["r.json"]);
        Assert.True(code == 0, err);
        var expected = SparsePresets.Find(preset)!.Settings;
        Assert.All(NodeSettings(dir["out.onnx"]), s => Assert.Equal(expected, s));
        Assert.Contains($"preset {preset}: {SparsePresets.Describe(expected)}", stdout);
        Assert.Contains($"(= preset {preset})", stdout);
        using var report = JsonDocument.Parse(File.ReadAllText(dir["r.json"]));
        var options = report.RootElement.GetProperty("options");
        Assert.Equal(preset, options.GetProperty("preset").GetString());
        Assert.Equal(preset, options.GetProperty("matches_preset").GetString());
        Assert.Equal(expected.TopKBlocks, options.GetProperty("preset_attributes").GetProperty("topk").GetInt64());
        Assert.Equal(0, options.GetProperty("overridden_by_flags").GetArrayLength());

        var (icode, iout, ierr) = CliProcess.Run("inspect", dir["out.onnx"]);
        Assert.True(icode == 0, ierr);
        Assert.Contains($"2 node(s): {SparsePresets.Describe(expected)} -> preset: {preset}", iout);
        var (jcode, jout, _) = CliProcess.Run("inspect", dir["out.onnx"], "--json");
        Assert.Equal(0, jcode);
        using var json = JsonDocument.Parse(jout);
        var group = Assert.Single(json.RootElement.GetProperty("switchable_attention").EnumerateArray());
        Assert.Equal(preset, group.GetProperty("preset").GetString());
    }

    [Fact]
    public void Rewrite_ExplicitFlagsWinOverThePreset()
    {
        using var dir = new TempDir();
        var input = Generate(dir);
        var (code, stdout, err) = CliProcess.Run("rewrite", input, "-o", dir["out.onnx"], "--preset", "minicpm4", "--topk", "70",
            "--score-precision", "bf16", "--report", dir["r.json"]);
        Assert.True(code == 0, err);
        var expected = SparsePresets.Find("minicpm4")!.Settings with { TopKBlocks = 70, ScorePrecision = ScorePrecision.Bf16 };
        Assert.All(NodeSettings(dir["out.onnx"]), s => Assert.Equal(expected, s));
        Assert.Contains("explicit flags override the preset: --topk 70, --score-precision bf16", stdout);
        Assert.Contains("(custom)", stdout);
        using var report = JsonDocument.Parse(File.ReadAllText(dir["r.json"]));
        var options = report.RootElement.GetProperty("options");
        Assert.Equal("custom", options.GetProperty("matches_preset").GetString());
        Assert.Equal(2, options.GetProperty("overridden_by_flags").GetArrayLength());
        var (_, iout, _) = CliProcess.Run("inspect", dir["out.onnx"]);
        Assert.Contains("-> preset: custom (closest: minicpm4, differs in topk=70 score_precision=1)", iout);
    }

    [Fact]
    public void Rewrite_FlagEqualToTheDefaultStillWinsOverThePreset()
    {
        // --topk 64 is the op's default but given explicitly: it replaces the preset's 65.
        using var dir = new TempDir();
        var (code, _, err) = CliProcess.Run("rewrite", Generate(dir), "-o", dir["out.onnx"], "--preset", "minicpm4", "--topk", "64");
        Assert.True(code == 0, err);
        Assert.All(NodeSettings(dir["out.onnx"]), s => Assert.Equal(64, s.TopKBlocks));
        Assert.All(NodeSettings(dir["out.onnx"]), s => Assert.Equal(1984, s.SparseWindowTokens));
    }

    [Theory]
    [InlineData("--preset", "minicpm5", "known presets: minicpm4.1, minicpm4, cpmcu")]
    [InlineData("--score-precision", "fp16", "--score-precision must be fp32 or bf16")]
    public void Rewrite_UnknownPresetOrPrecision_ExitsTwo_NamingTheKnownOnes(string flag, string value, string message)
    {
        using var dir = new TempDir();
        var (code, _, err) = CliProcess.Run("rewrite", Generate(dir), "-o", dir["out.onnx"], flag, value);
        Assert.Equal(2, code);
        Assert.Contains(message, err);
        Assert.Single(err.Trim().Split('\n'));
        Assert.False(File.Exists(dir["out.onnx"]));
    }

    [Fact]
    public void Rewrite_WithoutPreset_IsTheDefaultsAndSaysSo()
    {
        using var dir = new TempDir();
        var (code, stdout, err) = CliProcess.Run("rewrite", Generate(dir), "-o", dir["out.onnx"]);
        Assert.True(code == 0, err);
        Assert.DoesNotContain("explicit flags override", stdout);
        Assert.Contains("(= preset minicpm4.1)", stdout);
        Assert.All(NodeSettings(dir["out.onnx"]), s => Assert.Equal(SparseAttentionSettings.Defaults, s));
    }
}
