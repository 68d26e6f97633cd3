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
        // An out-of-range or null argument is a call of ours gone wrong (the inputs are checked with
        // messages of their own), so it is reported as an internal error, with its stack under --verbose.
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or InvalidDataException
                                       or OnnxRuntimeException or NotSupportedException
                                       or (ArgumentException and not (ArgumentOutOfRangeException or ArgumentNullException))
                                       or IOException or UnauthorizedAccessException or UsageException
                                       or InvalidOperationException)  // a session state the input led to (e.g. a full KV cache)
        {
            Console.Error.WriteLine($"error: {OneLine(e.Message)}");
            return ExitCodes.BadInput;
        }
        catch (OutOfMemoryException e)
        {
            Console.Error.WriteLine($"error: out of memory: {OneLine(e.Message)}");
            return ExitCodes.BadInput;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // A bug of ours, not a verdict on the input; still one line and never exit 1 ("comparison failed").
            Console.Error.WriteLine($"error: {InternalErrorPrefix} {e.GetType().Name}: {OneLine(e.Message)}");
            if (Verbose) Console.Error.WriteLine(e.ToString());
            return ExitCodes.BadInput;
        }
    }

    /// <summary>Whether <c>--verbose</c> was given: an unexpected error then also prints its stack trace (after the one line).</summary>
    public static bool Verbose
    {
        get => VerboseFlag.Value;
        set => VerboseFlag.Value = value;
    }

    private static readonly AsyncLocal<bool> VerboseFlag = new();

    /// <summary>Starts the one stderr line of an exception no check anticipated (the reliability tests count these as crashes).</summary>
    public const string InternalErrorPrefix = "internal error:";

    /// <summary>Throws a <see cref="UsageException"/> naming <paramref name="option"/> unless <paramref name="value"/> is in [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public static long InRange(string option, long value, long min, long max) =>
        value >= min && value <= max ? value : throw new UsageException($"{option} must be in [{min}, {max}], got {value}");

    /// <summary>Throws a <see cref="UsageException"/> naming <paramref name="option"/> unless <paramref name="value"/> is finite and in [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public static double InRange(string option, double value, double min, double max) =>
        double.IsFinite(value) && value >= min && value <= max ? value : throw new UsageException($"{option} must be a finite number in [{min}, {max}], got {value}");

    /// <summary>Most tokens a prompt, a generation or a KV cache may hold on the command line (2^24).</summary>
    public const int MaxTokens = 1 << 24;

    private static string OneLine(string s) => s.ReplaceLineEndings(" ").Trim();
}

/// <summary>A usage error detected by a command (not by the parser).</summary>
public sealed class UsageException(string message) : Exception(message);
