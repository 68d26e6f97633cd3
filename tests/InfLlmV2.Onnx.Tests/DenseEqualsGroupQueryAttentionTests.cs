using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.Models;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InfLlmV2.Onnx.Tests;

/// <summary>Dense mode of SwitchableAttention equals ORT's own com.microsoft::GroupQueryAttention.</summary>
public class DenseEqualsGroupQueryAttentionTests
{
    public static TheoryData<string> Scenarios =>
    [
        "prefill", "decode", "chunked-prefill", "packed-qkv", "rotary", "rotary-interleaved", "ragged-prefill",
        "ragged-decode", "softcap", "local-window", "group-16-d128", "group-3-d96", "long-decode-8192",
    ];

    private static (AttentionNodeConfig Config, AttentionCall Call, int[] Valid) Scenario(string name, bool fp16)
    {
        var type = fp16 ? TensorProto.Types.DataType.Float16 : TensorProto.Types.DataType.Float;
        var cfg = new AttentionNodeConfig { ElementType = type, NumHeads = 8, KvNumHeads = 2 };
        AttentionCall call;
        switch (name)
        {
            case "prefill": call = AttentionCall.Random(1, 1, 65, 8, 2, 64, 0, [65]); cfg = cfg with { WithPast = false }; break;
            case "decode": call = AttentionCall.Random(2, 1, 1, 8, 2, 64, 127, [128]); break;
            case "chunked-prefill": call = AttentionCall.Random(3, 1, 31, 8, 2, 64, 64, [95]); break;
            case "packed-qkv": call = AttentionCall.Random(4, 1, 1, 8, 2, 64, 63, [64], packed: true); cfg = cfg with { PackedQkv = true }; break;
            case "rotary": call = AttentionCall.Random(5, 1, 16, 8, 2, 64, 47, [63], rotary: true); cfg = cfg with { DoRotary = true }; break;
            case "rotary-interleaved":
                call = AttentionCall.Random(6, 1, 1, 8, 2, 64, 2047, [2048], rotary: true);
                cfg = cfg with { DoRotary = true, Attributes = new Dictionary<string, double> { ["rotary_interleaved"] = 1 } };
                break;
            case "ragged-prefill": call = AttentionCall.Random(7, 3, 20, 8, 2, 64, 0, [20, 7, 13]); cfg = cfg with { WithPast = false }; break;
            case "ragged-decode": call = AttentionCall.Random(8, 3, 1, 8, 2, 64, 40, [10, 41, 25]); break;
            case "softcap": call = AttentionCall.Random(9, 1, 15, 8, 2, 64, 16, [31]); cfg = cfg with { Attributes = new Dictionary<string, double> { ["softcap"] = 3.0 } }; break;
            case "local-window": call = AttentionCall.Random(10, 1, 64, 8, 2, 64, 63, [127]); cfg = cfg with { Attributes = new Dictionary<string, double> { ["local_window_size"] = 40 } }; break;
            case "group-16-d128": call = AttentionCall.Random(11, 1, 1, 16, 1, 128, 2112, [2113]); cfg = cfg with { NumHeads = 16, KvNumHeads = 1 }; break;
            case "group-3-d96": call = AttentionCall.Random(12, 2, 1, 6, 2, 96, 100, [80, 101]); cfg = cfg with { NumHeads = 6, KvNumHeads = 2 }; break;
            case "long-decode-8192": call = AttentionCall.Random(13, 1, 1, 16, 1, 128, 8191, [8192]); cfg = cfg with { NumHeads = 16, KvNumHeads = 1 }; break;
            default: throw new ArgumentException(name);
        }
        // Rows that GQA defines (padding rows of a ragged first prompt are unspecified there).
        var valid = Enumerable.Range(0, call.Batch).Select(b => call.SeqLen == call.TotalSequenceLength ? Math.Min(call.SeqLen, call.SeqlensK[b] + 1) : call.SeqLen).ToArray();
        return (cfg, call, valid);
    }

    private static void AssertClose((float[] Data, long[] Shape) ours, (float[] Data, long[] Shape) gqa, int[] validRows,
        Func<float, float, bool> close, string what)
    {
        Assert.Equal(gqa.Shape, ours.Shape);
        long rowWidth = ours.Shape[2];
        long seq = ours.Shape[1];
        for (int b = 0; b < validRows.Length; b++)
            for (int s = 0; s < validRows[b]; s++)
                for (long i = 0; i < rowWidth; i++)
                {
                    long at = (b * seq + s) * rowWidth + i;
                    Assert.True(close(ours.Data[at], gqa.Data[at]), $"{what}[{b},{s},{i}]: ours {ours.Data[at]} vs GQA {gqa.Data[at]}");
                }
    }

    [Theory]
    [MemberData(nameof(Scenarios))]
    public void Fp32_DenseMatchesGqa(string scenario)
    {
        var (cfg, call, valid) = Scenario(scenario, fp16: false);
        var ours = AttentionHarness.Run(cfg with { Attributes = With(cfg.Attributes, "dense_len", -1), WithAttentionMode = true }, With(call, 1));
        var gqa = AttentionHarness.Run(cfg with { Kind = AttentionOpKind.GroupQueryAttention }, call);
        AssertClose(ours["output"], gqa["output"], valid, (a, b) => Math.Abs(a - b) <= 1e-5f, "output");
        Assert.Equal(gqa["present_key"].Shape, ours["present_key"].Shape);
        // Rotated keys: both compute x*cos -/+ y*sin in fp32, possibly in another order (1 ulp).
        var keyDiff = ours["present_key"].Data.Zip(gqa["present_key"].Data, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(keyDiff <= 1e-6f, $"present_key differs by {keyDiff}");
        Assert.Equal(gqa["present_value"].Data, ours["present_value"].Data);
    }

    [Theory]
    [MemberData(nameof(Scenarios))]
    public void Fp16_DenseMatchesGqaToFp16Rounding(string scenario)
    {
        var (cfg, call, valid) = Scenario(scenario, fp16: true);
        var ours = AttentionHarness.Run(cfg with { WithAttentionMode = true }, With(call, 1));
        var gqa = AttentionHarness.Run(cfg with { Kind = AttentionOpKind.GroupQueryAttention }, call);
        // Two fp16 ulps at the value's magnitude: both round one fp32 result whose summation order differs.
        static bool Close(float a, float b)
        {
            float mag = Math.Max(Math.Abs(b), 6.1e-5f);
            float ulp = MathF.Pow(2, MathF.Floor(MathF.Log2(mag)) - 10);
            return Math.Abs(a - b) <= 2 * ulp;
        }
        AssertClose(ours["output"], gqa["output"], valid, Close, "output");
        Assert.Equal(gqa["present_key"].Shape, ours["present_key"].Shape);
        var pk = ours["present_key"].Data.Zip(gqa["present_key"].Data, Close).All(x => x);
        Assert.True(pk, "present_key differs beyond fp16 rounding");
    }

    [Fact]
    public void SharedBuffers_DenseMatchesGqa()
    {
        const int cap = 96, D = 64, Hkv = 2;
        var call = AttentionCall.Random(21, 2, 1, 8, Hkv, D, cap, [50, 90]) is var c0
            ? new AttentionCall
            {
                Batch = c0.Batch, SeqLen = 1, NumHeads = 8, KvNumHeads = Hkv, HeadSize = D, Query = c0.Query, Key = c0.Key,
                Value = c0.Value, PastKey = c0.PastKey, PastValue = c0.PastValue, PastCapacity = cap, SeqlensK = c0.SeqlensK,
                TotalSequenceLength = cap,
            }
            : throw new InvalidOperationException();
        var cfg = new AttentionNodeConfig { NumHeads = 8, KvNumHeads = Hkv };
        var ours = RunShared(cfg with { WithAttentionMode = true }, call, 1);
        var gqa = RunShared(cfg with { Kind = AttentionOpKind.GroupQueryAttention }, call, null);
        for (int i = 0; i < ours.Output.Length; i++) Assert.True(Math.Abs(ours.Output[i] - gqa.Output[i]) <= 1e-5f, $"output[{i}]");
        Assert.Equal(gqa.Key, ours.Key);
        Assert.Equal(gqa.Value, ours.Value);
    }

    /// <summary>Runs with the same OrtValue bound as past_key and present_key (and values): ORT's shared-buffer mode.</summary>
    private static (float[] Output, float[] Key, float[] Value) RunShared(AttentionNodeConfig cfg, AttentionCall call, int? mode)
    {
        var model = AttentionNodeModels.Build(cfg);
        using var options = new SessionOptions();
        options.RegisterInfLlmV2Ops();
        using var session = new InferenceSession(OnnxModelFile.ToBytes(model), options);
        int B = call.Batch, D = call.HeadSize, Hkv = call.KvNumHeads, H = call.NumHeads;
        var key = (float[])call.PastKey!.Clone();
        var value = (float[])call.PastValue!.Clone();
        var output = new float[B * H * D];
        using var q = OrtValue.CreateTensorValueFromMemory(call.Query, [B, 1, H * D]);
        using var k = OrtValue.CreateTensorValueFromMemory(call.Key!, [B, 1, Hkv * D]);
        using var v = OrtValue.CreateTensorValueFromMemory(call.Value!, [B, 1, Hkv * D]);
        using var kv = OrtValue.CreateTensorValueFromMemory(key, [B, Hkv, call.PastCapacity, D]);
        using var vv = OrtValue.CreateTensorValueFromMemory(value, [B, Hkv, call.PastCapacity, D]);
        using var seq = OrtValue.CreateTensorValueFromMemory(call.SeqlensK, [B]);
        using var total = OrtValue.CreateTensorValueFromMemory(new[] { call.TotalSequenceLength }, []);
        using var modeValue = OrtValue.CreateTensorValueFromMemory(new[] { mode ?? 0 }, []);
        using var outValue = OrtValue.CreateTensorValueFromMemory(output, [B, 1, H * D]);
        var names = new List<string> { "query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length" };
        var values = new List<OrtValue> { q, k, v, kv, vv, seq, total };
        if (mode is not null) { names.Add("attention_mode"); values.Add(modeValue); }
        using var runOptions = new RunOptions();
        session.Run(runOptions, names, values, ["output", "present_key", "present_value"], [outValue, kv, vv]);
        return (output, key, value);
    }

    private static IReadOnlyDictionary<string, double> With(IReadOnlyDictionary<string, double> a, string k, double v) =>
        new Dictionary<string, double>(a) { [k] = v };

    private static AttentionCall With(AttentionCall c, int mode) => new()
    {
        Batch = c.Batch, SeqLen = c.SeqLen, NumHeads = c.NumHeads, KvNumHeads = c.KvNumHeads, HeadSize = c.HeadSize,
        Packed = c.Packed, Query = c.Query, Key = c.Key, Value = c.Value, PastKey = c.PastKey, PastValue = c.PastValue,
        PastCapacity = c.PastCapacity, SeqlensK = c.SeqlensK, TotalSequenceLength = c.TotalSequenceLength, Cos = c.Cos,
        Sin = c.Sin, RotaryHalf = c.RotaryHalf, AttentionMode = mode,
    };
}
