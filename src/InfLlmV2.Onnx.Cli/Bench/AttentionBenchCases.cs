using System.Diagnostics;
using System.Text.Json;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.Models;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Cli.Bench;

/// <summary>
/// The bench's attention cases: single-node SwitchableAttention and GroupQueryAttention models of
/// G query heads per KV head and head size D, and one decode step or one causal prefill through them.
/// </summary>
internal static class AttentionBenchCases
{
    internal const int G = 16, D = 128, Hkv = 1;

    // Complete level-1 windows (32 tokens, stride 16) of a context: the compressed-key rows.
    internal static long Windows(int ctx) => (ctx - 32) / 16 + 1;

    // Bytes a sparse decode step reads at least: the selected K/V rows (96 blocks of 64) and every
    // level-1 compressed key once (level-2 scores are derived from level-1 ones), fp32.
    internal static double DecodeBytesRead(int ctx) => 4.0 * D * (2 * Math.Min(ctx, 96 * 64) + Windows(ctx));

    internal static InferenceSession SingleNodeSession(SessionOptions options, AttentionOpKind kind, bool withState, int hkv = Hkv, bool fp16 = false)
    {
        var model = AttentionNodeModels.Build(new AttentionNodeConfig
        {
            Kind = kind, NumHeads = G * hkv, KvNumHeads = hkv, WithPast = true,
            ElementType = fp16 ? TensorProto.Types.DataType.Float16 : TensorProto.Types.DataType.Float,
            WithAttentionMode = kind == AttentionOpKind.Switchable, WithCompressedState = withState && kind == AttentionOpKind.Switchable,
        });
        return new InferenceSession(OnnxModelFile.ToBytes(model), options);
    }

    internal static float[] Random(int n, int seed)
    {
        var rng = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
        return a;
    }

    /// <summary>
    /// One decode step at context <paramref name="ctx"/> with shared KV (and compressed-key)
    /// buffers, <paramref name="hkv"/> KV heads of G query heads each; median ms and peak extra MB.
    /// </summary>
    internal static (double Ms, long PeakMb) Decode(InferenceSession s, int ctx, int? mode, int reps, int hkv = Hkv, bool cold = false, bool fp16 = false)
    {
        // Tensors of the session's element type (fp16 models: the same values rounded to fp16).
        OrtValue Tensor(float[] data, long[] shape) => fp16
            ? OrtValue.CreateTensorValueFromMemory(data.Select(x => (Float16)x).ToArray(), shape)
            : OrtValue.CreateTensorValueFromMemory(data, shape);
        var key = Random(ctx * D * hkv, 1);
        var value = Random(ctx * D * hkv, 2);
        var q = Random(G * hkv * D, 3);
        var k = Random(hkv * D, 4);
        var v = Random(hkv * D, 5);
        var output = new float[G * hkv * D];
        using var qv = Tensor(q, [1, 1, G * hkv * D]);
        using var kv = Tensor(k, [1, 1, hkv * D]);
        using var vv = Tensor(v, [1, 1, hkv * D]);
        using var cacheK = Tensor(key, [1, hkv, ctx, D]);
        using var cacheV = Tensor(value, [1, hkv, ctx, D]);
        using var seq = OrtValue.CreateTensorValueFromMemory(new[] { ctx - 1 }, [1]);
        using var total = OrtValue.CreateTensorValueFromMemory(new[] { ctx }, []);
        using var modeV = OrtValue.CreateTensorValueFromMemory(new[] { mode ?? 0 }, []);
        using var outV = Tensor(output, [1, 1, G * hkv * D]);
        var names = new List<string> { "query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length" };
        var values = new List<OrtValue> { qv, kv, vv, cacheK, cacheV, seq, total };
        var outNames = new List<string> { "output", "present_key", "present_value" };
        var outValues = new List<OrtValue> { outV, cacheK, cacheV };
        OrtValue? comp = null;
        if (mode is not null)
        {
            names.Add("attention_mode"); values.Add(modeV);
            if (s.InputNames.Contains("past_compressed_key"))
            {
                long windows = Windows(ctx);
                // The state a session carries: the mean of every complete 32-token window (stride 16).
                var state = new float[windows * D * hkv];
                for (long h = 0; h < hkv; h++)
                    for (long j = 0; j < windows; j++)
                        for (int t = 0; t < 32; t++)
                            for (int d = 0; d < D; d++) state[(h * windows + j) * D + d] += key[(h * ctx + j * 16 + t) * D + d] / 32f;
                comp = Tensor(state, [1, hkv, windows, D]);
                names.Add("past_compressed_key"); values.Add(comp);
                outNames.Add("present_compressed_key"); outValues.Add(comp);
            }
        }
        try
        {
            return Timing.Time(() =>
            {
                using var ro = new RunOptions();
                s.Run(ro, names, values, outNames, outValues);
            }, reps, beforeEach: cold ? Timing.EvictCaches : null);
        }
        finally
        {
            comp?.Dispose();
        }
    }

    /// <summary>A causal prefill of <c>n</c> tokens through one session, with its inputs made once.</summary>
    internal sealed class PrefillRun(InferenceSession s, int n, int? mode)
    {
        private readonly float[] q = Random(n * G * D, 6), k = Random(n * Hkv * D, 7), v = Random(n * Hkv * D, 8);
        private readonly float[] cacheK = new float[n * Hkv * D], cacheV = new float[n * Hkv * D];
        private readonly float[] output = new float[n * G * D];

        // Outputs are made and touched once (every page written), so that a run's peak extra
        // memory counts what the op allocates, not the first write of the bench's own buffers.
        public PrefillRun Touched()
        {
            Array.Fill(output, 1f);
            Array.Fill(cacheK, 1f);
            Array.Fill(cacheV, 1f);
            return this;
        }

        public void Run()
        {
            using var ck = OrtValue.CreateTensorValueFromMemory(cacheK, [1, Hkv, n, D]);
            using var cv = OrtValue.CreateTensorValueFromMemory(cacheV, [1, Hkv, n, D]);
            using var qv = OrtValue.CreateTensorValueFromMemory(q, [1, n, G * D]);
            using var kv = OrtValue.CreateTensorValueFromMemory(k, [1, n, Hkv * D]);
            using var vv = OrtValue.CreateTensorValueFromMemory(v, [1, n, Hkv * D]);
            using var seq = OrtValue.CreateTensorValueFromMemory(new[] { n - 1 }, [1]);
            using var total = OrtValue.CreateTensorValueFromMemory(new[] { n }, []);
            using var modeV = OrtValue.CreateTensorValueFromMemory(new[] { mode ?? 0 }, []);
            using var outV = OrtValue.CreateTensorValueFromMemory(output, [1, n, G * D]);
            var names = new List<string> { "query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length" };
            var values = new List<OrtValue> { qv, kv, vv, ck, cv, seq, total };
            if (mode is not null) { names.Add("attention_mode"); values.Add(modeV); }
            using var ro = new RunOptions();
            s.Run(ro, names, values, ["output", "present_key", "present_value"], [outV, ck, cv]);
        }
    }
}
