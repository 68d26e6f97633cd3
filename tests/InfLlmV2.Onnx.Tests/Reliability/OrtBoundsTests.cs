using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using Microsoft.ML.OnnxRuntime;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.Tests.Reliability;

/// <summary>ModelValidator's IR and opset bounds are ONNX Runtime's: ORT loads the bound and refuses one past it.</summary>
public class OrtBoundsTests
{
    private static byte[] Identity(long ir, long opset)
    {
        var g = new GraphProto
        {
            Name = "g",
            Input = { Tensor("x", TensorProto.Types.DataType.Float, 2) },
            Node = { Node("Identity", "", ["x"], ["y"]) },
            Output = { Tensor("y", TensorProto.Types.DataType.Float, 2) },
        };
        var m = Model(g, ("", opset));
        m.IrVersion = ir;
        return OnnxModelFile.ToBytes(m);
    }

    private static bool OrtLoads(byte[] model)
    {
        try
        {
            using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
            using var s = new InferenceSession(model, options);
            return true;
        }
        catch (OnnxRuntimeException)
        {
            return false;
        }
    }

    [Fact]
    public void IrVersionBound_IsOrts()
    {
        Assert.True(OrtLoads(Identity(ModelValidator.MaxIrVersion, 17)), $"ORT refuses IR {ModelValidator.MaxIrVersion}");
        Assert.False(OrtLoads(Identity(ModelValidator.MaxIrVersion + 1, 17)), $"ORT loads IR {ModelValidator.MaxIrVersion + 1}: raise the bound");
    }

    [Fact]
    public void DefaultOpsetBound_IsOrts()
    {
        Assert.True(OrtLoads(Identity(10, ModelValidator.MaxDefaultOpset)), $"ORT refuses opset {ModelValidator.MaxDefaultOpset}");
        Assert.False(OrtLoads(Identity(10, ModelValidator.MaxDefaultOpset + 1)), $"ORT loads opset {ModelValidator.MaxDefaultOpset + 1}: raise the bound");
    }
}
