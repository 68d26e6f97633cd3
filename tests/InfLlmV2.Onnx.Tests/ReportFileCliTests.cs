using InfLlmV2.Onnx.Models;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// The JSON reports of `bench`, `compare`, `rewrite` and `run` (`--json`, `--report`) and `run --outputs`:
/// a path that cannot be written as asked fails before any work, and never replaces an input, a model or its weights.
/// </summary>
public class ReportFileCliTests
{
    private static string Generate(TempDir dir, string name)
    {
        var path = dir[name];
        TinyDecoderGenerator.Save(TinyDecoderGenerator.Generate(new TinyDecoderConfig { Seed = 5 }), path, externalData: true);
        return path;
    }

    private static void AssertRefused((int ExitCode, string StdOut, string StdErr) r, string mentions)
    {
        Assert.True(r.ExitCode == 2, r.StdOut + r.StdErr);
        Assert.StartsWith("error:", r.StdErr.Trim());
        Assert.Single(r.StdErr.Trim().Split('\n'));
        Assert.Contains(mentions, r.StdErr);
    }

    [Theory]
    [InlineData("m.onnx", "input of this command")]
    [InlineData("m.onnx.data", "not a JSON file")]
    public void Compare_JsonOntoTheModelOrItsWeights_IsRefused_AndLeavesThemIntact(string target, string mentions)
    {
        using var dir = new TempDir();
        var model = Generate(dir, "m.onnx");
        var before = File.ReadAllBytes(dir[target]);
        AssertRefused(CliProcess.Run("compare", model, model, "--prompt-len", "8", "--decode-steps", "1", "--json", dir[target]), mentions);
        Assert.Equal(before, File.ReadAllBytes(dir[target]));
    }

    [Fact]
    public void Demo_OutputDirThatIsAFile_IsRefusedBeforeAnyWork_AndLeavesItIntact()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["f"], "keep");
        var r = CliProcess.Run("demo", "--output-dir", dir["f"]);
        AssertRefused(r, "is a file");
        Assert.DoesNotContain("==", r.StdOut);  // the demo's first section never started
        Assert.Equal("keep", File.ReadAllText(dir["f"]));
    }

    [Fact]
    public void Rewrite_ReportInAMissingFolder_FailsBeforeWritingTheModel()
    {
        using var dir = new TempDir();
        var model = Generate(dir, "m.onnx");
        AssertRefused(CliProcess.Run("rewrite", model, "-o", dir["out.onnx"], "--report", Path.Combine(dir["nope"], "r.json")), "does not exist");
        Assert.False(File.Exists(dir["out.onnx"]));
    }

    [Fact]
    public void Rewrite_ReportReplacesAnEarlierReport_ButNotOtherFiles()
    {
        using var dir = new TempDir();
        var model = Generate(dir, "m.onnx");
        File.WriteAllText(dir["r.json"], "{ \"earlier\": true }");
        var ok = CliProcess.Run("rewrite", model, "-o", dir["out.onnx"], "--report", dir["r.json"]);
        Assert.True(ok.ExitCode == 0, ok.StdErr);
        Assert.Contains("\"sites\"", File.ReadAllText(dir["r.json"]));
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp", SearchOption.AllDirectories));

        File.WriteAllText(dir["notes.txt"], "my notes");
        AssertRefused(CliProcess.Run("rewrite", model, "-o", dir["out2.onnx"], "--report", dir["notes.txt"]), "not a JSON file");
        Assert.Equal("my notes", File.ReadAllText(dir["notes.txt"]));
        Assert.False(File.Exists(dir["out2.onnx"]));
    }

    [Theory]
    [InlineData("model")]
    [InlineData("test data")]
    [InlineData("folder")]
    public void Run_JsonOntoItsInputs_IsRefused(string kind)
    {
        using var dir = new TempDir();
        var model = Generate(dir, "m.onnx");
        Directory.CreateDirectory(dir["data"]);
        var tensor = Path.Combine(dir["data"], "input_0.pb");
        File.WriteAllText(tensor, "{}");  // even a file that looks like JSON is protected when it is an input
        var target = kind switch { "model" => model, "test data" => tensor, _ => dir["data"] };
        AssertRefused(CliProcess.Run("run", model, "--inputs", dir["data"], "--json", target), kind == "folder" ? "is a folder" : "input of this command");
        Assert.Equal("{}", File.ReadAllText(tensor));
    }

    [Fact]
    public void Run_OutputsOntoAFile_IsRefused_AndLeavesItIntact()
    {
        using var dir = new TempDir();
        var model = Generate(dir, "m.onnx");
        Directory.CreateDirectory(dir["data"]);
        File.WriteAllText(dir["notes.txt"], "my notes");
        AssertRefused(CliProcess.Run("run", model, "--inputs", dir["data"], "--outputs", dir["notes.txt"]), "is a file");
        Assert.Equal("my notes", File.ReadAllText(dir["notes.txt"]));
    }

    [Fact]
    public void Bench_JsonInAMissingFolder_FailsBeforeMeasuring()
    {
        using var dir = new TempDir();
        var r = CliProcess.Run("bench", "--quick", "--json", Path.Combine(dir["nope"], "b.json"));
        AssertRefused(r, "does not exist");
        Assert.Equal("", r.StdOut);
    }
}
