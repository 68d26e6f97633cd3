using System.Reflection;

namespace InfLlmV2.Onnx;

/// <summary>Finds the native library that implements <c>com.infllmv2::SwitchableAttention</c>.</summary>
public static class NativeOpLibrary
{
    /// <summary>File name of the native op library on Linux.</summary>
    public const string FileName = "libinfllmv2_ops.so";

    /// <summary>
    /// Returns the full path of the op library: <paramref name="explicitPath"/> when given (a file,
    /// or a folder holding <see cref="FileName"/>), otherwise the first existing of: the folder of
    /// this assembly, the app's base folder, their <c>runtimes/linux-x64/native</c> subfolders (where
    /// the InfLlmV2.Onnx package's copy lands in a build output), and the native search folders the
    /// .NET host resolved from the app's deps.json (<c>NATIVE_DLL_SEARCH_DIRECTORIES</c>: the package
    /// folder itself when an app runs from the NuGet cache).
    /// </summary>
    /// <exception cref="FileNotFoundException">No candidate exists; the message lists every path tried.</exception>
    public static string Locate(string? explicitPath = null) =>
        NativeLibraryFiles.FirstExisting(NativeLibraryFiles.Candidates(explicitPath, FileName, typeof(NativeOpLibrary)), FileName, tried =>
            $"SwitchableAttention op library not found. Tried: {tried}. " +
            "The InfLlmV2.Onnx package carries it for linux-x64 (runtimes/linux-x64/native/); in a repository checkout " +
            "build it with `cmake -S customop -B artifacts/native && cmake --build artifacts/native`; or pass its path.");

    /// <summary>Informational version of this managed library.</summary>
    public static string ManagedVersion =>
        typeof(NativeOpLibrary).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
        ?? typeof(NativeOpLibrary).Assembly.GetName().Version?.ToString() ?? "unknown";
}
