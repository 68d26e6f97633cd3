using System.CommandLine;
using System.Globalization;
using InfLlmV2.Onnx.Session;

namespace InfLlmV2.Onnx.Cli;

/// <summary>The <c>--threads N</c> option of generate, compare, demo and run: the intra-op threads of the sessions.</summary>
public static class ThreadsOption
{
    /// <summary>Most threads the option accepts.</summary>
    public const int MaxThreads = 1024;

    /// <summary>Creates the option (default: every core, as bench runs); its text is checked by <see cref="Value"/>.</summary>
    public static Option<string?> Create() =>
        new("--threads") { Description = $"Intra-op threads of the ONNX Runtime sessions, 1 to {MaxThreads} (default: every core, {DecoderModel.DefaultThreads} here)" };

    /// <summary>The count to use: the one given, checked (exit 2 unless a whole number in [1, 1024]), else <see cref="DecoderModel.DefaultThreads"/>.</summary>
    public static int Value(string? given)
    {
        if (given is null) return DecoderModel.DefaultThreads;
        if (!long.TryParse(given, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long n))
            throw new UsageException($"--threads must be a whole number in [1, {MaxThreads}], got '{given}'");
        return (int)CommandRunner.InRange("--threads", n, 1, MaxThreads);
    }
}
