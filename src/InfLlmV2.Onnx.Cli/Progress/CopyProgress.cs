using InfLlmV2.Onnx.GraphTools;

namespace InfLlmV2.Onnx.Cli.Progress;

/// <summary>A progress (bytes) for every external-data copy of 16 MiB or more (<see cref="SafeFiles.CopyObserver"/>).</summary>
internal static class CopyProgress
{
    private const long Threshold = 16L << 20;
    [ThreadStatic] private static ProgressScope? _current;

    public static void Install() => SafeFiles.CopyObserver = Observe;

    private static void Observe(string source, long copied, long total)
    {
        if (total < Threshold) return;
        if (copied == 0)
        {
            _current?.Dispose();
            _current = CliProgress.Start($"copying {Path.GetFileName(source)}", total, ProgressUnit.Bytes);
            return;
        }
        _current?.Set(copied);
        if (copied >= total)
        {
            _current?.Dispose();
            _current = null;
        }
    }
}
