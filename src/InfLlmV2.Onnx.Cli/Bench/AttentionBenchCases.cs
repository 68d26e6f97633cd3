using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.Session;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

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
    // level-1 compressed key once (level-2 scores are derived from level-1 ones), fp32, per KV head.
    internal static double DecodeBytesRead(int ctx, int d = D, int hkv = Hkv) => 4.0 * d * hkv * (2 * Math.Min(ctx, 96 * 64) + Windows(ctx));

    internal static InferenceSession SingleNodeSession(SessionOptions options, AttentionOpKind kind, bool withState, int hkv = Hkv, bool fp16 = false, int g = G)
    {
        var model = AttentionNodeModels.Build(new AttentionNodeConfig
        {
            Kind = kind, NumHeads = g * hkv, KvNumHeads = hkv, WithPast = true,
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

    // `data` into the native buffer at `at` (fp16: each value rounded), in chunks: a span over a
    // tensor of 2 GiB or more cannot be made (B = 16 x 8 KV heads x 32k x 128 fp32 is 2 GiB).
    internal static void CopyIn(float[] data, IntPtr at, bool fp16)
    {
        const int Chunk = 1 << 18;
        var halves = fp16 ? new short[Math.Min(Chunk, data.Length)] : [];
        for (int i = 0; i < data.Length; i += Chunk)
        {
            int n = Math.Min(Chunk, data.Length - i);
            if (!fp16)
            {
                Marshal.Copy(data, i, (IntPtr)((long)at + 4L * i), n);
                continue;
            }
            for (int j = 0; j < n; j++) halves[j] = unchecked((short)((Float16)data[i + j]).value);
            Marshal.Copy(halves, 0, (IntPtr)((long)at + 2L * i), n);
        }
    }

    /// <summary>
    /// One decode step at context <paramref name="ctx"/> with shared KV (and compressed-key)
    /// buffers, <paramref name="hkv"/> KV heads of G query heads each; median ms and peak extra MB.
    /// </summary>
    internal static (double Ms, long PeakMb) Decode(InferenceSession s, int ctx, int? mode, int reps, int hkv = Hkv, bool cold = false, bool fp16 = false)
    {
        using var run = new DecodeRun(s, ctx, mode, hkv, G, D, 1, fp16);
        return Timing.Time(run.Run, reps, beforeEach: cold ? Timing.EvictCaches : null);
    }

    /// <summary>
    /// One decode step through one session, its inputs made once: batch entries of hkv KV heads,
    /// g query heads each, head size d; entry b holds ctx - b * ctx / (2 * batch) tokens (ragged for
    /// batch &gt; 1), past and present (and the
    /// compressed-key state, when the session has one) bound to one buffer each, as a session runs.
    /// </summary>
    internal sealed class DecodeRun : IDisposable
    {
        private readonly InferenceSession _s;
        private readonly List<string> _names = [], _outNames = [];
        private readonly List<OrtValue> _values = [], _outValues = [], _owned = [];
        private readonly List<CacheTensor> _caches = [];
        private readonly OrtValue _cacheK, _cacheV;

        // With `caches`: the K/V cache buffers of that run (same shape) instead of new ones, so
        // that two ops timed alternately hold one copy of a long context.
        internal DecodeRun(InferenceSession s, int ctx, int? mode, int hkv, int g, int d, int batch, bool fp16 = false, DecodeRun? caches = null)
        {
            _s = s;
            // Tensors of the session's element type (fp16 models: the same values rounded to fp16).
            OrtValue Tensor(float[] data, long[] shape)
            {
                var t = fp16 ? OrtValue.CreateTensorValueFromMemory(data.Select(x => (Float16)x).ToArray(), shape)
                             : OrtValue.CreateTensorValueFromMemory(data, shape);
                _owned.Add(t);
                return t;
            }
            var totals = Enumerable.Range(0, batch).Select(b => ctx - b * ctx / (2 * batch)).ToArray();
            // The keys again only where this run fills caches or a compressed state from them (not
            // GQA's run on ours' caches): at B = 16 or 128k they are gigabytes of managed memory.
            var key = caches is not null && !s.InputNames.Contains("past_compressed_key")
                ? Array.Empty<float>()
                : Random(batch * ctx * d * hkv, 1);
            var value = caches is not null ? Array.Empty<float>() : Random(batch * ctx * d * hkv, 2);
            var q = Random(batch * g * hkv * d, 3);
            var k = Random(batch * hkv * d, 4);
            var v = Random(batch * hkv * d, 5);
            var output = new float[batch * g * hkv * d];
            // The caches as the session wrapper allocates them (native, huge pages where given).
            OrtValue Cache(float[] data, long[] shape)
            {
                var t = new CacheTensor(fp16 ? TensorElementType.Float16 : TensorElementType.Float, shape);
                _caches.Add(t);
                CopyIn(data, t.Data, fp16);
                return t.Value;
            }
            var cacheK = caches?._cacheK ?? Cache(key, [batch, hkv, ctx, d]);
            var cacheV = caches?._cacheV ?? Cache(value, [batch, hkv, ctx, d]);
            (_cacheK, _cacheV) = (cacheK, cacheV);
            _names.AddRange(["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length"]);
            _values.AddRange([Tensor(q, [batch, 1, g * hkv * d]), Tensor(k, [batch, 1, hkv * d]), Tensor(v, [batch, 1, hkv * d]), cacheK, cacheV]);
            var seq = OrtValue.CreateTensorValueFromMemory(totals.Select(t => t - 1).ToArray(), [batch]);
            var total = OrtValue.CreateTensorValueFromMemory(new[] { ctx }, []);
            _owned.AddRange([seq, total]);
            _values.AddRange([seq, total]);
            _outNames.AddRange(["output", "present_key", "present_value"]);
            _outValues.AddRange([Tensor(output, [batch, 1, g * hkv * d]), cacheK, cacheV]);
            if (mode is null) return;
            var modeV = OrtValue.CreateTensorValueFromMemory(new[] { mode.Value }, []);
            _owned.Add(modeV);
            _names.Add("attention_mode");
            _values.Add(modeV);
            if (!s.InputNames.Contains("past_compressed_key")) return;
            long windows = Windows(ctx);
            // The state a session carries: the mean of every complete 32-token window (stride 16)
            // of each entry's own tokens.
            var state = new float[batch * windows * d * hkv];
            for (long b = 0; b < batch; b++)
                for (long h = 0; h < hkv; h++)
                    for (long j = 0; j < Windows(totals[b]); j++)
                        for (int t = 0; t < 32; t++)
                            for (int i = 0; i < d; i++)
                                state[((b * hkv + h) * windows + j) * d + i] += key[((b * hkv + h) * ctx + j * 16 + t) * d + i] / 32f;
            var comp = Cache(state, [batch, hkv, windows, d]);
            _names.Add("past_compressed_key");
            _values.Add(comp);
            _outNames.Add("present_compressed_key");
            _outValues.Add(comp);
        }

        public void Run()
        {
            using var ro = new RunOptions();
            _s.Run(ro, _names, _values, _outNames, _outValues);
        }

        public void Dispose()
        {
            foreach (var v in _owned) v.Dispose();
            foreach (var t in _caches) t.Dispose();
        }
    }

    /// <summary>A causal prefill of <c>n</c> tokens through one session (G query heads per KV head, head size d), with its inputs made once.</summary>
    internal sealed class PrefillRun(InferenceSession s, int n, int? mode, int g = G, int d = D, int hkv = Hkv)
    {
        private readonly float[] q = Random(n * g * hkv * d, 6), k = Random(n * hkv * d, 7), v = Random(n * hkv * d, 8);
        private readonly float[] cacheK = new float[n * hkv * d], cacheV = new float[n * hkv * d];
        private readonly float[] output = new float[n * g * hkv * d];

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
            using var ck = OrtValue.CreateTensorValueFromMemory(cacheK, [1, hkv, n, d]);
            using var cv = OrtValue.CreateTensorValueFromMemory(cacheV, [1, hkv, n, d]);
            using var qv = OrtValue.CreateTensorValueFromMemory(q, [1, n, g * hkv * d]);
            using var kv = OrtValue.CreateTensorValueFromMemory(k, [1, n, hkv * d]);
            using var vv = OrtValue.CreateTensorValueFromMemory(v, [1, n, hkv * d]);
            using var seq = OrtValue.CreateTensorValueFromMemory(new[] { n - 1 }, [1]);
            using var total = OrtValue.CreateTensorValueFromMemory(new[] { n }, []);
            using var modeV = OrtValue.CreateTensorValueFromMemory(new[] { mode ?? 0 }, []);
            using var outV = OrtValue.CreateTensorValueFromMemory(output, [1, n, g * hkv * d]);
            var names = new List<string> { "query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length" };
            var values = new List<OrtValue> { qv, kv, vv, ck, cv, seq, total };
            if (mode is not null) { names.Add("attention_mode"); values.Add(modeV); }
            using var ro = new RunOptions();
            s.Run(ro, names, values, ["output", "present_key", "present_value"], [outV, ck, cv]);
        }
    }
}
