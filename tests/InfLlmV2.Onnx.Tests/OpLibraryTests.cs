using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.Models;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Tests;

public class OpLibraryTests
{
    [Fact]
    public void Locate_FindsLibraryNextToTheAssembly()
    {
        var path = NativeOpLibrary.Locate();
        Assert.True(File.Exists(path));
        Assert.Equal(NativeOpLibrary.FileName, Path.GetFileName(path));
    }

    [Fact]
    public void Locate_BadExplicitPath_ThrowsNamingThePath()
    {
        var bad = Path.Combine(Path.GetTempPath(), "no-such-dir-infllmv2", "lib.so");
        var e = Assert.Throws<FileNotFoundException>(() => NativeOpLibrary.Locate(bad));
        Assert.Contains(bad, e.Message);
    }

    [Fact]
    public void LoadedOnnxRuntime_Is_1_32_0()
    {
        // The native library of Microsoft.ML.OnnxRuntime.Gpu (Directory.Packages.props: OnnxRuntimeVersion).
        Assert.Equal("1.32.0", OrtEnv.Instance().GetVersionString());
    }

    [Fact]
    public void RegisterInfLlmV2Ops_ModelWithOp_Runs()
    {
        var call = AttentionCall.Random(1, 1, 5, 4, 2, 16, 0, [5]);
        var r = AttentionHarness.Run(new AttentionNodeConfig { WithPast = false }, call);
        Assert.Equal(new long[] { 1, 5, 64 }, r["output"].Shape);
        Assert.All(r["output"].Data, x => Assert.True(float.IsFinite(x)));
    }

    [Fact]
    public void ModelWithOp_WithoutRegistration_FailsWithOrtError()
    {
        var model = AttentionNodeModels.Build(new AttentionNodeConfig());
        using var options = new SessionOptions();
        var e = Assert.Throws<OnnxRuntimeException>(() => new InferenceSession(OnnxModelFile.ToBytes(model), options));
        Assert.Contains("SwitchableAttention", e.Message);
    }
}
