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
