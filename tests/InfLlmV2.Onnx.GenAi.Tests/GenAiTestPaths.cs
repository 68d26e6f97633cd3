namespace InfLlmV2.Onnx.GenAi.Tests;

/// <summary>Where the repository, the shared fixtures and the native op library are.</summary>
public static class GenAiTestPaths
{
    /// <summary>The repository root (the folder holding InfLlmV2.Onnx.sln).</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    /// <summary>The real-model fixtures, read in place (<see cref="InfLlmV2.Onnx.TestSupport.SharedFixtures"/>).</summary>
    public static string Fixtures => InfLlmV2.Onnx.TestSupport.SharedFixtures.RealModels(RepoRoot);

    /// <summary>
    /// The op library built by the bootstrap (./infllmv2, ./test.sh) or by any build of
    /// src/InfLlmV2.Onnx: artifacts/native/libinfllmv2_ops.so (<see cref="NativeOpLibrary.LinuxFileName"/>; this project references the library
    /// for its tokenizer, whose managed ONNX Runtime API runs on genai's native ORT 1.32).
    /// </summary>
    public static string OpLibrary
    {
        get
        {
            var path = Path.Combine(RepoRoot, "artifacts", "native", NativeOpLibrary.LinuxFileName);
            Assert.True(File.Exists(path), $"op library not built: {path} (run ./infllmv2 version or ./test.sh first)");
            return path;
        }
    }

    private static string FindRepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "InfLlmV2.Onnx.sln"))) return d.FullName;
        throw new DirectoryNotFoundException($"no InfLlmV2.Onnx.sln above {AppContext.BaseDirectory}");
    }
}

/// <summary>A fresh temporary folder deleted on dispose.</summary>
public sealed class TempDir : IDisposable
{
    /// <summary>Creates the folder.</summary>
    public TempDir() => Directory.CreateDirectory(Path);

    /// <summary>Its full path.</summary>
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "infllmv2-genai-tests", Guid.NewGuid().ToString("N"));

    /// <summary>A path inside it.</summary>
    public string this[string name] => System.IO.Path.Combine(Path, name);

    /// <inheritdoc />
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}
