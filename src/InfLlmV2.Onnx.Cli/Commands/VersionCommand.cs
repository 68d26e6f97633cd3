using System.CommandLine;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Cli.Commands;

/// <summary>
/// <c>infllmv2 version</c>: our version, the ONNX Runtime actually loaded (and its file), the op
/// library path, and which execution providers can run here.
/// </summary>
public static class VersionCommand
{
    /// <summary>Creates the command.</summary>
    public static Command Create()
    {
        var cmd = new Command("version", "Print the infllmv2 version, the loaded ONNX Runtime version, the op library path and the usable execution providers");
        cmd.SetAction(_ => CommandRunner.Guard(() =>
        {
            Console.WriteLine($"infllmv2      {NativeOpLibrary.ManagedVersion}");
            var ort = OrtEnv.Instance().GetVersionString();
            Console.WriteLine(LoadedLibrary("libonnxruntime.so") is { } file ? $"onnxruntime   {ort} ({file})" : $"onnxruntime   {ort}");
            Console.WriteLine($"op library    {NativeOpLibrary.Locate()}");
            Console.WriteLine($"providers     compiled in: {string.Join(", ", ExecutionProviders.Compiled)}");
            Console.WriteLine("  cpu         available");
            Console.WriteLine(ExecutionProviders.CudaUnavailableReason is { } why ? $"  cuda        not available: {why}" : "  cuda        available");
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    /// <summary>The path of the first mapped file of this process whose name starts with <paramref name="prefix"/> (Linux), else null.</summary>
    internal static string? LoadedLibrary(string prefix)
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/maps"))
            {
                int slash = line.IndexOf('/');
                if (slash < 0) continue;
                var path = line[slash..];
                if (Path.GetFileName(path).StartsWith(prefix, StringComparison.Ordinal)) return path;
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
        return null;
    }
}
