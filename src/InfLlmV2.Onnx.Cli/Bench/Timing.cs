using System.Diagnostics;
using System.Text.Json;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Cli.Bench;

/// <summary>Median wall time and peak extra memory (Linux VmHWM) of repeated runs; cache eviction between them.</summary>
internal static class Timing
{
    /// <summary>
    /// Times runs alternately (a, b, a, b, ...; after one warm-up of each when asked), so that a
    /// drift in the machine's speed hits all alike instead of deciding ratios near a target.
    /// Median ms and peak extra MB of each. When
    /// <paramref name="onFailure"/> is given, an ORT error of run 1 (GQA) is passed to it and that
    /// run is dropped from the rest of the measurement.
    /// </summary>
    internal static (double Ms, long PeakMb)[] TimeInterleaved(int reps, bool warmup, Action[] runs, Action<string>? onFailure = null)
    {
        var failed = new bool[runs.Length];
        bool Try(int i, Action body)
        {
            if (failed[i]) return false;
            try { body(); return true; }
            catch (OnnxRuntimeException e) when (i == 1 && onFailure is not null)
            {
                failed[i] = true;
                onFailure(e.Message.Split('\n')[0]);
                return false;
            }
        }
        if (warmup)
            for (int i = 0; i < runs.Length; i++) Try(i, runs[i]);
        var times = runs.Select(_ => new List<double>()).ToArray();
        var peaks = new long[runs.Length];
        for (int r = 0; r < reps; r++)
            for (int i = 0; i < runs.Length; i++)
                Try(i, () => peaks[i] = Math.Max(peaks[i], Measure(runs[i], times[i])));
        return [.. times.Select((t, i) => t.Count == 0 ? (double.NaN, 0L) : (Median(t), Math.Max(0, peaks[i]) / (1 << 20)))];
    }

    // Runs once, appends the time in ms, returns the growth of the peak RSS in bytes.
    internal static long Measure(Action run, List<double> times)
    {
        long before = ResetPeak();
        var sw = Stopwatch.StartNew();
        run();
        times.Add(sw.Elapsed.TotalMilliseconds);
        return PeakRss() - before;
    }

    internal static double Median(List<double> times)
    {
        times.Sort();
        return times[times.Count / 2];
    }

    /// <summary>
    /// The fastest of <paramref name="reps"/> runs, in ms (after one warm-up): the machine probes'
    /// measure, since a roofline is the best the machine does, and a median of a probe moved with
    /// the other load on the machine (read bandwidth 23-32 GB/s between two idle runs).
    /// </summary>
    internal static double Fastest(Action run, int reps)
    {
        run();
        var times = new List<double>();
        for (int i = 0; i < reps; i++) Measure(run, times);
        return times.Min();
    }

    internal static (double Ms, long PeakMb) Time(Action run, int reps, bool warmup = true, Action? beforeEach = null)
    {
        if (warmup) run();
        long peak = 0;
        var times = new List<double>();
        for (int i = 0; i < reps; i++)
        {
            beforeEach?.Invoke();
            peak = Math.Max(peak, Measure(run, times));
        }
        return (Median(times), Math.Max(0, peak) / (1 << 20));
    }

    // Reads 128 MiB (four times the 32 MB L3) so that the next step finds none of its data in the
    // caches, as in a model whose other layers ran in between. The buffer is written once first: an
    // untouched one maps every page to the kernel's single zero page, whose reads evict nothing.
    internal static float[]? evictor;

    internal static void EvictCaches()
    {
        if (evictor is null)
        {
            evictor = new float[32 << 20];
            Array.Fill(evictor, 1f);
        }
        if (!(MachineProbes.SumOf(evictor) > 0)) throw new InvalidOperationException("cache eviction: the buffer was not read");
    }

    // Linux: writing 5 to /proc/self/clear_refs resets the peak RSS (VmHWM) to the current RSS.
    internal static long ResetPeak()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        return StatusKb("VmRSS:") * 1024;
    }

    internal static long PeakRss() => StatusKb("VmHWM:") * 1024;

    internal static long StatusKb(string key)
    {
        try
        {
            var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith(key, StringComparison.Ordinal));
            return line is null ? 0 : long.Parse(line[key.Length..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (IOException) { return 0; }
    }
}
