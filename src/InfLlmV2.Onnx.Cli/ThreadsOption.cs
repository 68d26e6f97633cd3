using System.CommandLine;
using InfLlmV2.Onnx.Session;

namespace InfLlmV2.Onnx.Cli;

/// <summary>The <c>--threads N</c> option of generate, compare, demo and run: the intra-op threads of the sessions.</summary>
public static class ThreadsOption
{
    /// <summary>Most threads the option accepts.</summary>
    public const int MaxThreads = 1024;

    /// <summary>Creates the option (default: every core, as bench runs).</summary>
    public static Option<int?> Create() =>
        new("--threads") { Description = $"Intra-op threads of the ONNX Runtime sessions (default: every core, {DecoderModel.DefaultThreads} here)" };

    /// <summary>The count to use: the one given, checked (exit 2 outside [1, 1024]), else <see cref="DecoderModel.DefaultThreads"/>.</summary>
    public static int Value(int? given) =>
        given is int n ? (int)CommandRunner.InRange("--threads", n, 1, MaxThreads) : DecoderModel.DefaultThreads;
}
