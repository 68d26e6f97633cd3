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

    [Theory]
    [InlineData("linux", "libinfllmv2_ops.so")]
    [InlineData("Linux-arm64", "libinfllmv2_ops.so")]
    [InlineData("windows", "infllmv2_ops.dll")]
    [InlineData("win-x64", "infllmv2_ops.dll")]
    [InlineData("osx", "libinfllmv2_ops.dylib")]
    [InlineData("macos", "libinfllmv2_ops.dylib")]
    public void FileNameFor_NamesEachOperatingSystemsFile(string os, string expected) =>
        Assert.Equal(expected, NativeOpLibrary.FileNameFor(os));

    [Fact]
    public void FileNameFor_OSPlatform_AndThisOS()
    {
        Assert.Equal("infllmv2_ops.dll", NativeOpLibrary.FileNameFor(System.Runtime.InteropServices.OSPlatform.Windows));
        Assert.Equal("libinfllmv2_ops.so", NativeOpLibrary.FileNameFor(System.Runtime.InteropServices.OSPlatform.Linux));
        Assert.Equal("libinfllmv2_ops.dylib", NativeOpLibrary.FileNameFor(System.Runtime.InteropServices.OSPlatform.OSX));
        Assert.Equal(OperatingSystem.IsWindows() ? "infllmv2_ops.dll" : OperatingSystem.IsMacOS() ? "libinfllmv2_ops.dylib" : "libinfllmv2_ops.so",
                     NativeOpLibrary.FileName);
    }

    [Fact]
    public void FileNameFor_UnknownOS_ThrowsNamingIt()
    {
        var e = Assert.Throws<ArgumentException>(() => NativeOpLibrary.FileNameFor("plan9"));
        Assert.Contains("'plan9'", e.Message);
        Assert.Contains("linux, windows or osx", e.Message);
    }

    [Fact]
    public void LocateFor_ThisPlatform_IsLocate_AndAnUnbuiltPlatformIsRefused()
    {
        Assert.Equal(NativeOpLibrary.Locate(), NativeOpLibrary.LocateFor(NativeOpLibrary.CurrentRuntimeIdentifier));
        var e = Assert.Throws<ArgumentException>(() => NativeOpLibrary.LocateFor("osx-arm64"));
        Assert.Contains("linux-x64, linux-arm64, win-x64", e.Message);
    }

    [Fact]
    public void Locate_BadExplicitPath_ThrowsNamingThePath()
    {
        var bad = Path.Combine(Path.GetTempPath(), "no-such-dir-infllmv2", "lib.so");
        var e = Assert.Throws<FileNotFoundException>(() => NativeOpLibrary.Locate(bad));
        Assert.Contains(bad, e.Message);
        Assert.Contains("carries it for linux-x64, linux-arm64, win-x64", e.Message);
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
