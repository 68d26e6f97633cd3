using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.Models;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InfLlmV2.Onnx.Tests;

/// <summary>Inputs of one attention call in GQA's layout (fp32 values; converted for fp16 models).</summary>
public sealed class AttentionCall
{
    public required int Batch { get; init; }
    public required int SeqLen { get; init; }
    public required int NumHeads { get; init; }
    public required int KvNumHeads { get; init; }
    public required int HeadSize { get; init; }
    public bool Packed { get; init; }
    public required float[] Query { get; init; }              // [B,S,H*D] or packed
    public float[]? Key { get; init; }
    public float[]? Value { get; init; }
    public float[]? PastKey { get; init; }                    // [B,Hkv,P,D]
    public float[]? PastValue { get; init; }
    public int PastCapacity { get; init; }
    public required int[] SeqlensK { get; init; }
    public required int TotalSequenceLength { get; init; }
    public float[]? Cos { get; init; }                        // [maxPos, rot/2]
    public float[]? Sin { get; init; }
    public int RotaryHalf { get; init; }
    public int? AttentionMode { get; init; }

    /// <summary>A random call: ragged lengths come from <paramref name="totals"/> (per batch entry).</summary>
    public static AttentionCall Random(int seed, int batch, int seqLen, int heads, int kvHeads, int headSize,
        int pastCapacity, int[] totals, bool packed = false, bool rotary = false, int? mode = null)
    {
        var rng = new Random(seed);
        float[] R(int n) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1); return a; }
        int qWidth = packed ? (heads + 2 * kvHeads) * headSize : heads * headSize;
        int total = totals.Max();
        int maxPos = Math.Max(total, pastCapacity) + 8;
        int half = headSize / 2;
        float[]? cos = null, sin = null;
        if (rotary)
        {
            cos = new float[maxPos * half];
            sin = new float[maxPos * half];
            for (int p = 0; p < maxPos; p++)
                for (int i = 0; i < half; i++)
                {
                    double theta = p / Math.Pow(10000, 2.0 * i / headSize);
                    cos[p * half + i] = (float)Math.Cos(theta);
                    sin[p * half + i] = (float)Math.Sin(theta);
                }
        }
        return new AttentionCall
        {
            Batch = batch, SeqLen = seqLen, NumHeads = heads, KvNumHeads = kvHeads, HeadSize = headSize, Packed = packed,
            Query = R(batch * seqLen * qWidth),
            Key = packed ? null : R(batch * seqLen * kvHeads * headSize),
            Value = packed ? null : R(batch * seqLen * kvHeads * headSize),
            PastKey = pastCapacity > 0 ? R(batch * kvHeads * pastCapacity * headSize) : null,
            PastValue = pastCapacity > 0 ? R(batch * kvHeads * pastCapacity * headSize) : null,
            PastCapacity = pastCapacity,
            SeqlensK = totals.Select(t => t - 1).ToArray(),
            TotalSequenceLength = seqLen == 1 || pastCapacity > 0 && seqLen != total ? total : Math.Max(total, seqLen),
            Cos = cos, Sin = sin, RotaryHalf = half, AttentionMode = mode,
        };
    }
}

/// <summary>Runs one-node attention models on ORT CPU with our op registered.</summary>
public static class AttentionHarness
{
    /// <summary>Builds the model for <paramref name="config"/> and runs it; returns every output as float[] (int outputs converted).</summary>
    public static Dictionary<string, (float[] Data, long[] Shape)> Run(AttentionNodeConfig config, AttentionCall call)
    {
        var model = AttentionNodeModels.Build(config);
        using var options = new SessionOptions();
        options.GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL;
        options.RegisterInfLlmV2Ops();
        using var session = new InferenceSession(OnnxModelFile.ToBytes(model), options);
        bool fp16 = config.ElementType == TensorProto.Types.DataType.Float16;
        var values = new List<OrtValue>();
        var names = new List<string>();
        void Add(string name, float[]? data, long[] shape)
        {
            if (data is null || !session.InputNames.Contains(name)) return;
            names.Add(name);
            values.Add(fp16
                ? OrtValue.CreateTensorValueFromMemory(data.Select(x => (Float16)x).ToArray(), shape)
                : OrtValue.CreateTensorValueFromMemory(data, shape));
        }
        int B = call.Batch, S = call.SeqLen, D = call.HeadSize;
        int qWidth = call.Packed ? (call.NumHeads + 2 * call.KvNumHeads) * D : call.NumHeads * D;
        Add("query", call.Query, [B, S, qWidth]);
        Add("key", call.Key, [B, S, call.KvNumHeads * D]);
        Add("value", call.Value, [B, S, call.KvNumHeads * D]);
        Add("past_key", call.PastKey, [B, call.KvNumHeads, call.PastCapacity, D]);
        Add("past_value", call.PastValue, [B, call.KvNumHeads, call.PastCapacity, D]);
        if (call.Cos is not null)
        {
            long rows = call.Cos.Length / call.RotaryHalf;
            Add("cos_cache", call.Cos, [rows, call.RotaryHalf]);
            Add("sin_cache", call.Sin, [rows, call.RotaryHalf]);
        }
        names.Add("seqlens_k");
        values.Add(OrtValue.CreateTensorValueFromMemory(call.SeqlensK, [B]));
        names.Add("total_sequence_length");
        values.Add(OrtValue.CreateTensorValueFromMemory(new[] { call.TotalSequenceLength }, []));
        if (session.InputNames.Contains("attention_mode"))
        {
            names.Add("attention_mode");
            values.Add(OrtValue.CreateTensorValueFromMemory(new[] { call.AttentionMode ?? 0 }, []));
        }
        try
        {
            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, names, values, session.OutputNames);
            var r = new Dictionary<string, (float[], long[])>();
            for (int i = 0; i < results.Count; i++)
            {
                var info = results[i].GetTensorTypeAndShape();
                float[] data = info.ElementDataType switch
                {
                    TensorElementType.Float => results[i].GetTensorDataAsSpan<float>().ToArray(),
                    TensorElementType.Float16 => results[i].GetTensorDataAsSpan<Float16>().ToArray().Select(h => (float)h).ToArray(),
                    TensorElementType.Int32 => results[i].GetTensorDataAsSpan<int>().ToArray().Select(x => (float)x).ToArray(),
                    _ => throw new NotSupportedException(info.ElementDataType.ToString()),
                };
                r[session.OutputNames[i]] = (data, info.Shape);
            }
            return r;
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }
}
