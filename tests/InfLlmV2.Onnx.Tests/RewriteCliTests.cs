using InfLlmV2.Onnx.Models;

namespace InfLlmV2.Onnx.Tests;

/// <summary>`infllmv2 rewrite` and `inspect`: exit codes and failure modes (nothing is ever lost).</summary>
public class RewriteCliTests
{
    private static string Generate(TempDir dir, string name, bool external)
    {
        var path = dir[name];
        TinyDecoderGenerator.Save(TinyDecoderGenerator.Generate(new TinyDecoderConfig { Seed = 3 }), path, external);
        return path;
    }

    [Fact]
    public void Rewrite_Success_ExitsZero_WritesReport()
    {
        using var dir = new TempDir();
        var input = Generate(dir, "m.onnx", external: false);
        var (code, stdout, _) = CliProcess.Run("rewrite", input, "-o", dir["out.onnx"], "--report", dir["r.json"], "--topk", "16");
        Assert.Equal(0, code);
        Assert.Contains("2 of 2", stdout);
        Assert.True(File.Exists(dir["out.onnx"]));
        Assert.Contains("\"rewritten\": true", File.ReadAllText(dir["r.json"]));
    }

    [Fact]
    public void Rewrite_ExternalData_ToOtherFolder_CopiesDataByteIdentical_AndRuns()
    {
        using var dir = new TempDir();
        var input = Generate(dir, "m.onnx", external: true);
        Directory.CreateDirectory(dir["out"]);
        var output = Path.Combine(dir["out"], "rewritten.onnx");
        var (code, _, err) = CliProcess.Run("rewrite", input, "-o", output);
        Assert.True(code == 0, err);
        Assert.Equal(File.ReadAllBytes(dir["m.onnx.data"]), File.ReadAllBytes(Path.Combine(dir["out"], "m.onnx.data")));
        using var a = ModelRunner.Open(input);
        using var b = ModelRunner.Open(output);
        long[] ids = [1, 2, 3, 4, 5];
        var ra = ModelRunner.DecoderStep(a, ids, 2, 2, 32, null);
        var rb = ModelRunner.DecoderStep(b, ids, 2, 2, 32, null);
        Assert.True(ModelRunner.MaxAbsDiff(ra["logits"].Data, rb["logits"].Data) <= 1e-4f);
    }

    [Fact]
    public void Rewrite_NeverOverwritesInput()
    {
        using var dir = new TempDir();
        var input = Generate(dir, "m.onnx", external: false);
        var before = File.ReadAllBytes(input);
        var (code, _, err) = CliProcess.Run("rewrite", input, "-o", input, "--force");
        Assert.Equal(2, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.Equal(before, File.ReadAllBytes(input));
    }

    [Fact]
    public void Rewrite_ExistingOutput_NeedsForce()
    {
        using var dir = new TempDir();
        var input = Generate(dir, "m.onnx", external: false);
        File.WriteAllText(dir["out.onnx"], "keep me");
        var (code, _, err) = CliProcess.Run("rewrite", input, "-o", dir["out.onnx"]);
        Assert.Equal(2, code);
        Assert.Contains("--force", err);
        Assert.Equal("keep me", File.ReadAllText(dir["out.onnx"]));
        Assert.Equal(0, CliProcess.Run("rewrite", input, "-o", dir["out.onnx"], "--force").ExitCode);
        Assert.NotEqual("keep me", File.ReadAllText(dir["out.onnx"]));
    }

    [Fact]
    public void Rewrite_NothingRewritable_ExitsThree_NoOutput()
    {
        using var dir = new TempDir();
        // The genai MHA fixture with a padding-only (bidirectional) mask: nothing a causal op can express.
        using var inputDir = new TempDir();  // a genai folder: the output must lie outside it
        var model = Path.Combine(AttentionMaskFormsTests.PaddingOnlyMhaFolder(inputDir["padding-only"]), "model.onnx");
        var (code, stdout, err) = CliProcess.Run("rewrite", model, "-o", dir["out.onnx"], "--report", dir["r.json"]);
        Assert.Equal(3, code);
        Assert.Contains("MultiHeadAttention", stdout + err);
        Assert.False(File.Exists(dir["out.onnx"]));
        Assert.Contains("bidirectional", File.ReadAllText(dir["r.json"]));
    }

    [Theory]
    [InlineData("missing-input")]
    [InlineData("not-onnx")]
    [InlineData("bad-option")]
    [InlineData("no-output-flag")]
    public void Rewrite_BadInputOrUsage_ExitsTwo_WithOneLine_NoOutput(string kind)
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["junk.onnx"], "this is not a protobuf model \u0001\u0002\u0003");
        var input = kind switch { "missing-input" => dir["nope.onnx"], "not-onnx" => dir["junk.onnx"], _ => Generate(dir, "m.onnx", false) };
        string[] args = kind switch
        {
            "bad-option" => ["rewrite", input, "-o", dir["out.onnx"], "--block-size", "40"],
            "no-output-flag" => ["rewrite", input],
            _ => ["rewrite", input, "-o", dir["out.onnx"]],
        };
        var (code, _, err) = CliProcess.Run(args);
        Assert.Equal(2, code);
        Assert.StartsWith("error:", err.Trim());
        Assert.False(File.Exists(dir["out.onnx"]));
    }

    [Fact]
    public void Rewrite_ExternalDataEscapingFolder_IsRefused()
    {
        using var dir = new TempDir();
        var model = TinyDecoderGenerator.Generate(new TinyDecoderConfig());
        TinyDecoderGenerator.Save(model, dir["m.onnx"], externalData: true);
        var m = InfLlmV2.Onnx.GraphTools.OnnxModelFile.Load(dir["m.onnx"]);
        var t = m.Graph.Initializer.First(i => i.ExternalData.Count > 0);
        t.ExternalData.Single(e => e.Key == "location").Value = "../m.onnx.data";
        InfLlmV2.Onnx.GraphTools.OnnxModelFile.Save(m, dir["evil.onnx"]);
        var (code, _, err) = CliProcess.Run("rewrite", dir["evil.onnx"], "-o", dir["out.onnx"]);
        Assert.Equal(2, code);
        Assert.Contains("escapes the model folder", err);
        Assert.False(File.Exists(dir["out.onnx"]));
    }

    [Fact]
    public void Inspect_Json_ListsSites()
    {
        using var dir = new TempDir();
        var input = Generate(dir, "m.onnx", external: false);
        var (code, stdout, _) = CliProcess.Run("inspect", input, "--json");
        Assert.Equal(0, code);
        Assert.Contains("\"form\": \"GroupQueryAttention\"", stdout);
        Assert.Contains("\"head_size\": 32", stdout);
    }

    // Weights whose external data file is not there (real exporters' graphs shipped without them):
    // inspect lists the sites from the graph and names the missing file; rewrite still refuses.
    [Fact]
    public void Inspect_ExternalDataMissing_ListsSitesAndNamesTheFile_RewriteRefuses()
    {
        using var dir = new TempDir();
        var input = Generate(dir, "m.onnx", external: true);
        var data = Directory.GetFiles(dir.Path).Single(f => f != input);
        File.Delete(data);
        string name = Path.GetFileName(data);

        var (code, stdout, err) = CliProcess.Run("inspect", input);
        Assert.True(code == 0, stdout + err);
        Assert.Contains("2 attention site(s), 2 rewritable", stdout);
        Assert.Contains($"external data not here ('{name}')", stdout);

        var (jcode, jout, _) = CliProcess.Run("inspect", input, "--json");
        Assert.Equal(0, jcode);
        using var doc = System.Text.Json.JsonDocument.Parse(jout);
        Assert.Equal([name], doc.RootElement.GetProperty("missing_external_data").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(2, doc.RootElement.GetProperty("sites").GetArrayLength());

        var (rcode, _, rerr) = CliProcess.Run("rewrite", input, "-o", dir["out.onnx"]);
        Assert.Equal(2, rcode);
        Assert.Contains(name, rerr);
        Assert.False(File.Exists(dir["out.onnx"]));
    }

    // `inspect --json MODEL`: the option takes the model path as its value; an existing model is
    // read as MODEL (JSON on stdout) and left as it was. Without any model: exit 2 saying so.
    [Fact]
    public void Inspect_JsonOptionBeforeTheModel_ReadsTheModel_LeavesItUntouched()
    {
        using var dir = new TempDir();
        var input = Generate(dir, "m.onnx", external: false);
        var before = File.ReadAllBytes(input);
        var (code, stdout, err) = CliProcess.Run("inspect", "--json", input);
        Assert.True(code == 0, stdout + err);
        using var doc = System.Text.Json.JsonDocument.Parse(stdout);
        Assert.Equal(2, doc.RootElement.GetProperty("sites").GetArrayLength());
        Assert.Equal(before, File.ReadAllBytes(input));

        var (mcode, _, merr) = CliProcess.Run("inspect", "--json", dir["report.json"]);
        Assert.Equal(2, mcode);
        Assert.Contains("MODEL is missing", merr);
        Assert.False(File.Exists(dir["report.json"]));
    }
}
