using System.Diagnostics;
using InfLlmV2.Onnx.Models;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// Progress goes to stderr only: with progress lines on (no terminal, <c>INFLLMV2_PROGRESS_SECONDS=0</c>:
/// a line at every update) stdout and the JSON report are byte-identical to a <c>--no-progress</c> run,
/// and stderr carries the progress of the external-data copy; <c>--no-progress</c> prints none.
/// </summary>
public sealed class ProgressTests
{
    private static (int Code, string StdOut, string StdErr) Run(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "infllmv2.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["INFLLMV2_PROGRESS_SECONDS"] = "0";
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(300_000)) { p.Kill(true); throw new TimeoutException(string.Join(" ", args)); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    [Fact]
    public void ProgressNeverChangesStdoutOrJson()
    {
        using var dir = new TempDir();
        // 8192 x 512 fp32 embedding = 16 MiB of external data: its copy to another folder shows progress.
        var config = new TinyDecoderConfig { Layers = 1, NumHeads = 8, KvNumHeads = 2, HeadSize = 64, Vocab = 8192, Intermediate = 64, Seed = 3 };
        TinyDecoderGenerator.Save(TinyDecoderGenerator.Generate(config), dir["m.onnx"], externalData: true);
        Directory.CreateDirectory(dir["out"]);
        var outputs = new List<(string StdOut, string Report)>();
        foreach (var flags in new[] { Array.Empty<string>(), ["--no-progress"] })
        {
            var (code, stdout, stderr) = Run(["rewrite", dir["m.onnx"], "-o", Path.Combine(dir["out"], "r.onnx"), "--force", "--report", dir["r.json"], .. flags]);
            Assert.True(code == 0, stdout + stderr);
            if (flags.Length == 0) Assert.Contains("progress: copying m.onnx.data: 100 %", stderr);
            else Assert.DoesNotContain("progress:", stderr);
            Assert.DoesNotContain("progress:", stdout);
            outputs.Add((stdout, File.ReadAllText(dir["r.json"])));
        }
        Assert.Equal(outputs[0].StdOut, outputs[1].StdOut);
        Assert.Equal(outputs[0].Report, outputs[1].Report);
    }
}
