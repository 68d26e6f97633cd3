using System.Diagnostics;

namespace InfLlmV2.Onnx.Tests;

/// <summary>Runs the infllmv2 CLI (built next to the tests) as a child process.</summary>
public static class CliProcess
{
    public static (int ExitCode, string StdOut, string StdErr) Run(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "infllmv2.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(300_000)) { p.Kill(true); throw new TimeoutException("infllmv2 " + string.Join(" ", args)); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}

/// <summary>`infllmv2 run` on a test-data folder that holds expected outputs: a comparison that must really happen.</summary>
public static class RunComparison
{
    /// <summary>
    /// Runs <paramref name="model"/> on <paramref name="inputs"/> with <c>--json</c>; asserts exit 0,
    /// that exactly <paramref name="expectedCompared"/> outputs (&gt; 0) were compared and each within
    /// <paramref name="atol"/>. "nothing compared" (a folder without output_N.pb) fails here.
    /// </summary>
    public static void AssertMatches(string model, string inputs, string atol, int expectedCompared)
    {
        Assert.True(expectedCompared > 0, "a comparison needs at least one expected output");
        using var dir = new TempDir();
        var json = dir["run.json"];
        var (code, stdout, err) = CliProcess.Run("run", model, "--inputs", inputs, "--atol", atol, "--json", json);
        Assert.True(code == 0, $"{inputs}:\n{stdout}\n{err}");
        Assert.DoesNotContain("nothing compared", stdout);
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(json));
        var rows = doc.RootElement.GetProperty("comparisons").EnumerateArray().ToList();
        Assert.True(rows.Count == expectedCompared, $"{inputs}: {rows.Count} outputs compared, expected {expectedCompared}\n{stdout}");
        Assert.All(rows, r => Assert.True(r.GetProperty("ok").GetBoolean(), r.ToString()));
        Assert.True(doc.RootElement.GetProperty("ok").GetBoolean());
    }
}
