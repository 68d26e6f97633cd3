using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;

namespace InfLlmV2.Onnx.Tests;

/// <summary>The one gate every rule asks: what SwitchableAttention runs (docs/op-spec.md), at its boundaries.</summary>
public class OpCapabilityTests
{
    private const TensorProto.Types.DataType F32 = TensorProto.Types.DataType.Float;

    [Theory]
    [InlineData(32, 8, 128, null)]
    [InlineData(4096, 1, 8, null)]
    [InlineData(1, 1, 256, null)]
    [InlineData(4097, 1, 64, "4097 query heads: SwitchableAttention takes 1 to 4096")]
    [InlineData(8, 0, 64, "0 kv heads: SwitchableAttention takes 1 to 4096")]
    [InlineData(6, 4, 64, "6 query heads are not a multiple of 4 kv heads")]
    [InlineData(8, 2, 264, "head size 264 is not a multiple of 8 up to 256")]
    [InlineData(8, 2, 12, "head size 12 is not a multiple of 8 up to 256")]
    [InlineData(8, 2, 0, "head size 0 is not a multiple of 8 up to 256")]
    public void HeadsAndHeadSize(long heads, long kvHeads, long headSize, string? reason) =>
        Assert.Equal(reason, OpCapability.Check(heads, kvHeads, headSize, F32));

    [Fact]
    public void ElementTypes()
    {
        Assert.Null(OpCapability.ElementType(TensorProto.Types.DataType.Float16));
        Assert.Contains("bfloat16", OpCapability.ElementType(TensorProto.Types.DataType.Bfloat16));
        Assert.Equal("element type Double is not supported (fp32, fp16)", OpCapability.ElementType(TensorProto.Types.DataType.Double));
        Assert.Contains("element type unknown", OpCapability.ElementType(null));
        Assert.Null(OpCapability.ElementType(null, mustKnow: false));
        // What is not known yet is not judged.
        Assert.Null(OpCapability.Check(null, null, null, F32));
    }
}
