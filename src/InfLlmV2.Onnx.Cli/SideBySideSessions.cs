using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Cli;

/// <summary>
/// Session options for sessions that take turns in one process (bench's ours/GQA pairs, compare's and
/// demo's original/rewritten models): each session's intra-op pool stops spinning when its Run
/// returns (ORT's <c>session.force_spinning_stop</c>). Otherwise the pool of the session that just ran
/// keeps its worker threads spinning for tens of milliseconds on the cores the next session's Run
/// needs: on a 2-core machine that made a step right after another session's step up to 3.5x slower
/// (docs/benchmarks.md, "Sessions taking turns"). A model runs every layer in one session, so
/// nothing in it waits on another pool's spinning threads.
/// </summary>
internal static class SideBySideSessions
{
    /// <summary>ORT's session config key: stop the intra-op pool's spinning when the last concurrent Run returns.</summary>
    internal const string ForceSpinningStop = "session.force_spinning_stop";

    /// <summary>Sets <see cref="ForceSpinningStop"/> on <paramref name="options"/>; returns them.</summary>
    internal static SessionOptions TakingTurns(this SessionOptions options)
    {
        options.AddSessionConfigEntry(ForceSpinningStop, "1");
        return options;
    }
}
