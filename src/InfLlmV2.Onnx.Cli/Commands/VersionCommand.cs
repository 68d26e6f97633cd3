using System.CommandLine;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Cli.Commands;

/// <summary><c>infllmv2 version</c>: our version, the ONNX Runtime actually loaded, the op library path.</summary>
public static class VersionCommand
{
    /// <summary>Creates the command.</summary>
    public static Command Create()
    {
        var cmd = new Command("version", "Print the infllmv2 version, the loaded ONNX Runtime version and the op library path");
        cmd.SetAction(_ => CommandRunner.Guard(() =>
        {
            Console.WriteLine($"infllmv2      {NativeOpLibrary.ManagedVersion}");
            Console.WriteLine($"onnxruntime   {OrtEnv.Instance().GetVersionString()}");
            Console.WriteLine($"op library    {NativeOpLibrary.Locate()}");
            return ExitCodes.Ok;
        }));
        return cmd;
    }
}
