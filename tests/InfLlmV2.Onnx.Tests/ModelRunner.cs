using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InfLlmV2.Onnx.Tests;

/// <summary>Runs whole models (original or rewritten) on ORT CPU with our op registered.</summary>
public static class ModelRunner
{
    /// <summary>The real-model fixtures, read in place (<see cref="InfLlmV2.Onnx.TestSupport.SharedFixtures"/>).</summary>
    public static string FixturesRoot => InfLlmV2.Onnx.TestSupport.SharedFixtures.RealModels(RepoRoot);

    public static string RepoRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "InfLlmV2.Onnx.sln"))) return dir.FullName;
            throw new DirectoryNotFoundException("repository root not found");
        }
    }

    public static InferenceSession Open(string modelPath)
    {
        var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
        options.RegisterInfLlmV2Ops();
        return new InferenceSession(modelPath, options);
    }

    /// <summary>Tiny-decoder step: ids [1, S], mask [1, past + S], past caches; returns logits and presents.</summary>
    public static Dictionary<string, (float[] Data, long[] Shape)> DecoderStep(InferenceSession session, long[] ids,
        int layers, int kvHeads, int headSize, Dictionary<string, (float[] Data, long[] Shape)>? past, int? mode = null)
    {
        int pastLen = past is null ? 0 : (int)past["present.0.key"].Shape[2];
        var names = new List<string>();
        var values = new List<OrtValue>();
        names.Add("input_ids"); values.Add(OrtValue.CreateTensorValueFromMemory(ids, [1, ids.Length]));
        names.Add("attention_mask"); values.Add(OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, pastLen + ids.Length).ToArray(), [1, pastLen + ids.Length]));
        for (int l = 0; l < layers; l++)
            foreach (var kv in new[] { "key", "value" })
            {
                var data = past?[$"present.{l}.{kv}"].Data ?? [];
                names.Add($"past_key_values.{l}.{kv}");
                values.Add(OrtValue.CreateTensorValueFromMemory(data, [1, kvHeads, pastLen, headSize]));
            }
        if (session.InputNames.Contains("attention_mode"))
        {
            names.Add("attention_mode");
            values.Add(OrtValue.CreateTensorValueFromMemory(new[] { mode ?? 0 }, []));
        }
        foreach (var n in session.InputNames.Where(n => n.EndsWith("compressed_key", StringComparison.Ordinal)))
        {
            var present = n.Replace("past_key_values.", "present.", StringComparison.Ordinal);
            var data = past is not null && past.TryGetValue(present, out var p) ? p : ([], new long[] { 1, kvHeads, 0, headSize });
            names.Add(n);
            values.Add(OrtValue.CreateTensorValueFromMemory(data.Data, data.Shape));
        }
        try
        {
            using var ro = new RunOptions();
            using var results = session.Run(ro, names, values, session.OutputNames);
            var r = new Dictionary<string, (float[], long[])>();
            for (int i = 0; i < results.Count; i++)
                r[session.OutputNames[i]] = (results[i].GetTensorDataAsSpan<float>().ToArray(), results[i].GetTensorTypeAndShape().Shape);
            return r;
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    public static float MaxAbsDiff(float[] a, float[] b)
    {
        Assert.Equal(a.Length, b.Length);
        float m = 0;
        for (int i = 0; i < a.Length; i++) m = Math.Max(m, Math.Abs(a[i] - b[i]));
        return m;
    }
}
