using System.Diagnostics;
using System.Text.Json;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Cli.Bench;

/// <summary>
/// The native stage benchmark (<c>infllmv2_stage_bench</c>, next to the CLI): the stage split of
/// one sparse call, the stage-1 multiply-adds and the fp32 FMA peak it measures in the same process.
/// </summary>
internal static class StageBenchmark
{
    // The least time the selection of a decode step can take in fp32: stage 1's multiply-adds at
    // the FMA peak measured in the same process (the stage benchmark reports both), and the share
    // of the step it would then have with everything else as measured. Null where not measured.
    internal static (double Ms, double Share)? SelectionFloor(JsonElement st)
    {
        if (!st.TryGetProperty("select_floor_ms", out var f) || f.GetDouble() <= 0) return null;
        double floorMs = f.GetDouble();
        double rest = st.GetProperty("total_ms").GetDouble() - st.GetProperty("select_ms").GetDouble();
        return (floorMs, floorMs / (floorMs + rest));
    }

    /// <summary>
    /// Stage-1 scoring of a decode step against its own roofline: the larger of the time its
    /// multiply-adds take at the fp32 FMA peak the stage benchmark measures and the time reading
    /// the level-1 compressed keys (windows x D x 4 bytes per KV head) takes at the read bandwidth
    /// the bench measures, over the scoring part's measured time (select_parts_ms.score); with the
    /// roofline in ms and which bound it is. Null where the stage benchmark did not measure both.
    /// </summary>
    internal static (double Share, double RooflineMs, string Bound)? Stage1ShareOfRoofline(JsonElement st, double readGbps)
    {
        if (!st.TryGetProperty("select_floor_ms", out var f) || f.GetDouble() <= 0) return null;
        if (!st.TryGetProperty("select_parts_ms", out var parts) || parts.GetProperty("score").GetDouble() is not (> 0 and var scoreMs)) return null;
        int n = st.GetProperty("length").GetInt32();
        int hkv = st.TryGetProperty("kv_heads", out var kh) ? kh.GetInt32() : 1;
        double readMs = 4.0 * AttentionBenchCases.D * hkv * AttentionBenchCases.Windows(n) / (readGbps * 1e9) * 1e3;
        double fmaMs = f.GetDouble();
        double roof = Math.Max(fmaMs, readMs);
        return (roof / scoreMs, roof, fmaMs >= readMs ? "FMA" : "read");
    }

    /// <summary>Runs the native stage benchmark for one phase ("decode" or "prefill") at <paramref name="n"/> tokens; its JSON, or null.</summary>
    internal static JsonElement? StageSplit(string phase, int n)
    {
        var exe = Path.Combine(AppContext.BaseDirectory, "infllmv2_stage_bench");
        if (!File.Exists(exe)) { Console.WriteLine($"(stage benchmark not found at {exe})"); return null; }
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in new[] { phase, n.ToString(System.Globalization.CultureInfo.InvariantCulture), "--repeat", phase == "decode" ? "50" : "1" })
            psi.ArgumentList.Add(arg);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return p.ExitCode == 0 ? JsonDocument.Parse(stdout).RootElement.Clone() : null;
    }
}
