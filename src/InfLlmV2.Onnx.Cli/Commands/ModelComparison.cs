using System.Diagnostics;
using InfLlmV2.Onnx.OpContract;
using InfLlmV2.Onnx.Session;

namespace InfLlmV2.Onnx.Cli.Commands;

/// <summary>One step of an original-vs-rewritten comparison.</summary>
public sealed record ComparisonStep(int Step, string Phase, int Tokens, double MaxAbsDiff, bool Top1Agrees, double KlDivergence,
    AttentionMode Mode, double OriginalMs, double RewrittenMs);

/// <summary>Drives an original and a rewritten model through the same prefill and decode steps.</summary>
public static class ModelComparison
{
    /// <summary>
    /// Prefills both with <paramref name="prompt"/>, then decodes <paramref name="decodeSteps"/>
    /// tokens, each time feeding both the original's greedy choice (teacher forcing).
    /// </summary>
    public static List<ComparisonStep> Run(DecoderModel original, DecoderModel rewritten, int[] prompt, int decodeSteps,
        AttentionMode routing, int chunkSize = 2048, Action<StepSelection>? onRewrittenSelection = null)
    {
        int capacity = prompt.Length + decodeSteps + 1;
        using var a = new DecoderSession(original, new DecoderSessionOptions { Capacity = capacity, ChunkSize = chunkSize });
        using var b = new DecoderSession(rewritten, new DecoderSessionOptions { Capacity = capacity, ChunkSize = chunkSize, Routing = RoutingPolicy.Always(routing), OnSelection = onRewrittenSelection });
        var steps = new List<ComparisonStep>();
        var (ta, tb) = (Time(() => Prefill(a, prompt, chunkSize, "the original model")), Time(() => Prefill(b, prompt, chunkSize, "the rewritten model")));
        steps.Add(Measure(0, "prefill", prompt.Length, a, b, ta, tb));
        for (int i = 1; i <= decodeSteps; i++)
        {
            int token = TokenSampler.ArgMax(a.LastLogits()!);
            (ta, tb) = (Time(() => a.NextToken(token)), Time(() => b.NextToken(token)));
            steps.Add(Measure(i, "decode", 1, a, b, ta, tb));
        }
        return steps;
    }

    // A prompt longer than two chunks is appended chunk by chunk (what AppendTokens does inside) with a progress.
    internal static void Prefill(DecoderSession session, int[] prompt, int chunkSize, string which)
    {
        if (prompt.Length <= 2 * chunkSize)
        {
            session.AppendTokens(prompt);
            return;
        }
        using var progress = Progress.CliProgress.Start($"prefill of {which} ({prompt.Length} tokens, chunks of {chunkSize})", prompt.Length);
        for (int at = 0; at < prompt.Length; at += chunkSize)
        {
            session.AppendTokens(prompt.AsSpan(at, Math.Min(chunkSize, prompt.Length - at)));
            progress.Set(Math.Min(prompt.Length, at + chunkSize));
        }
    }

    private static double Time(Action action)
    {
        var sw = Stopwatch.StartNew();
        action();
        return sw.Elapsed.TotalMilliseconds;
    }

    private static ComparisonStep Measure(int step, string phase, int tokens, DecoderSession a, DecoderSession b, double ta, double tb)
    {
        var la = a.LastLogits()!;
        var lb = b.LastLogits()!;
        double max = 0;
        for (int i = 0; i < la.Length; i++) max = Math.Max(max, Math.Abs(la[i] - lb[i]));
        return new ComparisonStep(step, phase, tokens, max, TokenSampler.ArgMax(la) == TokenSampler.ArgMax(lb), Kl(la, lb), b.LastModes[0] ?? throw new InvalidOperationException("no step ran"), ta, tb);
    }

    /// <summary>KL(softmax(p) ‖ softmax(q)) in nats.</summary>
    public static double Kl(float[] p, float[] q)
    {
        static double[] LogSoftmax(float[] x)
        {
            double m = x.Max(), s = 0;
            foreach (var v in x) s += Math.Exp(v - m);
            double lse = m + Math.Log(s);
            return x.Select(v => v - lse).ToArray();
        }
        var lp = LogSoftmax(p);
        var lq = LogSoftmax(q);
        double kl = 0;
        for (int i = 0; i < lp.Length; i++) kl += Math.Exp(lp[i]) * (lp[i] - lq[i]);
        return Math.Max(0, kl);
    }

    /// <summary>Prints the per-step table.</summary>
    public static void Print(IReadOnlyList<ComparisonStep> steps, TextWriter w)
    {
        w.WriteLine($"{"step",5} {"phase",-8} {"tokens",7} {"max|dlogits|",13} {"top1",5} {"KL(orig||rew)",14} {"mode",7} {"orig ms",10} {"rewr ms",10}");
        foreach (var s in steps)
            w.WriteLine($"{s.Step,5} {s.Phase,-8} {s.Tokens,7} {s.MaxAbsDiff,13:G3} {(s.Top1Agrees ? "yes" : "NO"),5} {s.KlDivergence,14:G3} {s.Mode.ToString().ToLowerInvariant(),7} {s.OriginalMs,10:F1} {s.RewrittenMs,10:F1}");
        w.WriteLine($"top-1 agreement {steps.Count(s => s.Top1Agrees)}/{steps.Count} ({100.0 * steps.Count(s => s.Top1Agrees) / steps.Count:F0}%), max |dlogits| {steps.Max(s => s.MaxAbsDiff):G3}");
    }
}
