namespace InfLlmV2.Onnx.Tests;

/// <summary>`infllmv2 compare` and `generate` over a generated model pair.</summary>
public class SessionCliTests(DecoderModels models) : IClassFixture<DecoderModels>
{
    [Fact]
    public void Compare_DenseMode_Top1Agreement100Percent()
    {
        using var dir = new TempDir();
        var (code, stdout, err) = CliProcess.Run("compare", models.OriginalPath, models.RewrittenPath, "--prompt-len", "300",
            "--decode-steps", "6", "--mode", "dense", "--json", dir["c.json"]);
        Assert.True(code == 0, stdout + err);
        Assert.Contains("top-1 agreement 7/7 (100%)", stdout);
        var json = File.ReadAllText(dir["c.json"]);
        Assert.DoesNotContain("\"top1_agrees\": false", json);
        Assert.Contains("\"mode\": \"dense\"", json);
    }

    [Fact]
    public void Compare_SparseMode_ReportsSparseSteps()
    {
        var (code, stdout, _) = CliProcess.Run("compare", models.OriginalPath, models.RewrittenPath, "--prompt-len", "400", "--decode-steps", "2", "--mode", "sparse");
        Assert.Equal(0, code);
        Assert.Contains(" sparse ", stdout);
    }

    [Fact]
    public void Generate_StreamsGreedyTokens_SameForOriginalAndDenseRewritten()
    {
        var a = CliProcess.Run("generate", models.OriginalPath, "--prompt-ids", "1,2,3,4,5", "--max-new-tokens", "6");
        var b = CliProcess.Run("generate", models.RewrittenPath, "--prompt-ids", "1,2,3,4,5", "--max-new-tokens", "6", "--mode", "dense");
        Assert.Equal(0, a.ExitCode);
        Assert.Equal(0, b.ExitCode);
        Assert.Equal(6, a.StdOut.Trim().Split(',').Length);
        Assert.Equal(a.StdOut, b.StdOut);
    }

    [Theory]
    [InlineData("--prompt-ids", "1,x,3")]
    [InlineData("--prompt-ids", "99999")]
    [InlineData("--mode", "turbo")]
    [InlineData("--threads", "0")]
    [InlineData("--threads", "1025")]
    [InlineData("--threads", "-3")]
    [InlineData("--threads", "two")]
    public void Generate_BadArguments_ExitTwo(string option, string value)
    {
        string[] args = option is "--mode" or "--threads"
            ? ["generate", models.OriginalPath, "--prompt-ids", "1,2", option, value]
            : ["generate", models.OriginalPath, option, value];
        var (code, _, err) = CliProcess.Run(args);
        Assert.Equal(2, code);
        Assert.StartsWith("error:", err.Trim());
    }

    // --threads changes where the work runs, not what it computes (the op's slices merge in a fixed order).
    [Fact]
    public void GenerateAndCompare_OneThreadOrEveryCore_SameResults()
    {
        var one = CliProcess.Run("generate", models.RewrittenPath, "--prompt-ids", "1,2,3,4,5", "--max-new-tokens", "6", "--threads", "1");
        var all = CliProcess.Run("generate", models.RewrittenPath, "--prompt-ids", "1,2,3,4,5", "--max-new-tokens", "6");
        var two = CliProcess.Run("generate", models.RewrittenPath, "--prompt-ids", "1,2,3,4,5", "--max-new-tokens", "6", "--threads", "2");
        Assert.Equal(0, one.ExitCode);
        Assert.Equal(one.StdOut, all.StdOut);
        Assert.Equal(one.StdOut, two.StdOut);
        var c = CliProcess.Run("compare", models.OriginalPath, models.RewrittenPath, "--prompt-len", "300", "--decode-steps", "2", "--mode", "dense", "--threads", "1");
        Assert.True(c.ExitCode == 0, c.StdOut + c.StdErr);
        Assert.Contains("top-1 agreement 3/3 (100%)", c.StdOut);
        var bad = CliProcess.Run("compare", models.OriginalPath, models.RewrittenPath, "--threads", "0");
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("--threads must be in [1, 1024], got 0", bad.StdErr);
        // demo and run check it before any work.
        var demo = CliProcess.Run("demo", "--threads", "x");
        Assert.Equal(2, demo.ExitCode);
        Assert.Contains("--threads must be a whole number in [1, 1024], got 'x'", demo.StdErr);
        Assert.DoesNotContain("==", demo.StdOut);
        var run = CliProcess.Run("run", models.RewrittenPath, "--inputs", Path.GetTempPath(), "--threads", "0");
        Assert.Equal(2, run.ExitCode);
        Assert.Contains("--threads must be in [1, 1024], got 0", run.StdErr);
    }

    [Fact]
    public void Generate_SparseOnOriginalModel_IsAClearError()
    {
        var (code, _, err) = CliProcess.Run("generate", models.OriginalPath, "--prompt-ids", "1,2", "--mode", "sparse");
        Assert.Equal(2, code);
        Assert.Contains("sparse", err);
    }
}
