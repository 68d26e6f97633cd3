using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.Models;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Tests;

/// <summary>Bad inputs through ORT give an error status naming the problem, never a crash.</summary>
public class OpErrorTests
{
    [Fact]
    public void SeqlensBeyondBuffers_IsAnOrtError()
    {
        var call = AttentionCall.Random(1, 1, 1, 4, 2, 16, 8, [9]);
        call.SeqlensK[0] = 500;
        var e = Assert.Throws<OnnxRuntimeException>(() => AttentionHarness.Run(new AttentionNodeConfig(), call));
        Assert.Contains("seqlens_k", e.Message);
    }

    [Fact]
    public void NonIntegralGroup_FailsAtSessionCreation()
    {
        var e = Assert.Throws<OnnxRuntimeException>(() =>
            AttentionHarness.Run(new AttentionNodeConfig { NumHeads = 5, KvNumHeads = 2 }, AttentionCall.Random(1, 1, 1, 5, 2, 16, 8, [9])));
        Assert.Contains("num_heads", e.Message);
    }

    [Fact]
    public void RotaryWithoutCaches_IsAnOrtError()
    {
        var cfg = new AttentionNodeConfig { Attributes = new Dictionary<string, double> { ["do_rotary"] = 1 } };
        var e = Assert.Throws<OnnxRuntimeException>(() => AttentionHarness.Run(cfg, AttentionCall.Random(1, 1, 1, 4, 2, 16, 8, [9])));
        Assert.Contains("cos_cache", e.Message);
    }

    [Fact]
    public void WrongKeyWidth_NamesInputAndShapes()
    {
        // The model says kv_num_heads=2 (key [1,3,32]); the call feeds 3 kv heads (key [1,3,48]).
        var call = AttentionCall.Random(1, 1, 3, 4, 3, 16, 0, [3]);
        var cfg = new AttentionNodeConfig { WithPast = false, NumHeads = 4, KvNumHeads = 2 };
        var e = Assert.Throws<OnnxRuntimeException>(() => AttentionHarness.Run(cfg, call));
        Assert.Contains("'key'", e.Message);
        Assert.Contains("[1,3,32]", e.Message);
        Assert.Contains("[1,3,48]", e.Message);
    }

    [Fact]
    public void BadAttributeValue_FailsAtSessionCreation()
    {
        var model = AttentionNodeModels.Build(new AttentionNodeConfig { Attributes = new Dictionary<string, double> { ["block_size"] = 40 } });
        using var options = new SessionOptions();
        options.RegisterInfLlmV2Ops();
        var e = Assert.Throws<OnnxRuntimeException>(() => new InferenceSession(OnnxModelFile.ToBytes(model), options));
        Assert.Contains("block_size", e.Message);
    }
}
