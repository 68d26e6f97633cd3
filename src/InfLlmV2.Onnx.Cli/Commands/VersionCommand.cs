using System.CommandLine;
using System.Reflection;
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
            Console.WriteLine($"tokenizers    {PackageVersion(typeof(Microsoft.ML.Tokenizers.Tokenizer).Assembly)} (Microsoft.ML.Tokenizers)");
            Console.WriteLine($"protobuf      {PackageVersion(typeof(Google.Protobuf.MessageParser).Assembly)} (Google.Protobuf)");
            Console.WriteLine($"spectre       {PackageVersion(typeof(Spectre.Console.AnsiConsole).Assembly)} (Spectre.Console)");
            Console.WriteLine($"genai         {GenAiVersion} (onnxruntime-genai the rewritten genai folders are tested with; not loaded here)");
            Console.WriteLine($"providers     compiled in: {string.Join(", ", ExecutionProviders.Compiled)}");
            Console.WriteLine("  cpu         available");
            Console.WriteLine(ExecutionProviders.CudaUnavailableReason is { } why ? $"  cuda        not available: {why}" : "  cuda        available");
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    /// <summary>The onnxruntime-genai version of Directory.Packages.props, stamped in at build time.</summary>
    internal static string GenAiVersion =>
        typeof(VersionCommand).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().FirstOrDefault(a => a.Key == "OnnxRuntimeGenAIVersion")?.Value ?? "unknown";

    /// <summary>The package version of an assembly (its informational version without the source revision).</summary>
    internal static string PackageVersion(Assembly assembly)
    {
        var v = assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? assembly.GetName().Version?.ToString() ?? "unknown";
        int plus = v.IndexOf('+');
        return plus >= 0 ? v[..plus] : v;
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
