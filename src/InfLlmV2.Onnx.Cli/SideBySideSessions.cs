using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Cli;

/// <summary>
/// Session options for sessions that take turns in one process (compare's and demo's
/// original/rewritten models; bench's ours/GQA pairs where one shared pool cannot be made,
/// <see cref="TryShareOnePool"/>): each session's intra-op pool stops spinning when its Run returns
/// (ORT's <c>session.force_spinning_stop</c>). Otherwise the pool of the session that just ran
/// keeps its worker threads spinning for tens of milliseconds on the cores the next session's Run
/// needs: on a 2-core machine that made a step right after another session's step up to 3.5x slower
/// (docs/benchmarks.md, "Sessions taking turns"). A model runs every layer in one session, so
/// nothing in it waits on another pool's spinning threads.
/// </summary>
internal static class SideBySideSessions
{
    /// <summary>ORT's session config key: stop the intra-op pool's spinning when the last concurrent Run returns.</summary>
    internal const string ForceSpinningStop = "session.force_spinning_stop";

    /// <summary>
    /// Creates this process's ORT environment with one global intra-op pool of
    /// <paramref name="threads"/> threads (spinning allowed), which sessions whose options call
    /// <c>DisablePerSessionThreads()</c> share: ops taking turns then run on one pool, as the layers
    /// of one model do, with no second pool spinning on their cores and no worker to wake per Run.
    /// False (nothing changed) when the environment already exists, e.g. when another command ran
    /// in this process first; the caller then falls back to <see cref="TakingTurns"/>.
    /// </summary>
    internal static bool TryShareOnePool(int threads)
    {
        var env = new EnvironmentCreationOptions
        {
            logId = "infllmv2",
            logLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL,
            threadOptions = new OrtThreadingOptions { GlobalIntraOpNumThreads = threads, GlobalInterOpNumThreads = 1, GlobalSpinControl = true },
        };
        try
        {
            OrtEnv.CreateInstanceWithOptions(ref env);
            return true;
        }
        catch (OnnxRuntimeException)
        {
            return false;  // "OrtEnv singleton instance already exists"
        }
    }

    /// <summary>Sets <see cref="ForceSpinningStop"/> on <paramref name="options"/>; returns them.</summary>
    internal static SessionOptions TakingTurns(this SessionOptions options)
    {
        options.AddSessionConfigEntry(ForceSpinningStop, "1");
        return options;
    }
}
