using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Cli;

/// <summary>Runs a command body and turns user-facing failures into one stderr line and exit code 2.</summary>
public static class CommandRunner
{
    /// <summary>Runs <paramref name="body"/>; expected failures print "error: ..." and return <see cref="ExitCodes.BadInput"/>.</summary>
    public static int Guard(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or InvalidDataException
                                       or OnnxRuntimeException or ArgumentException or NotSupportedException
                                       or IOException or UnauthorizedAccessException or UsageException
                                       or InvalidOperationException)  // a session state the input led to (e.g. a full KV cache)
        {
            Console.Error.WriteLine($"error: {OneLine(e.Message)}");
            return ExitCodes.BadInput;
        }
    }

    private static string OneLine(string s) => s.ReplaceLineEndings(" ").Trim();
}

/// <summary>A usage error detected by a command (not by the parser).</summary>
public sealed class UsageException(string message) : Exception(message);
