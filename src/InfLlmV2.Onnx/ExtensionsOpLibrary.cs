using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx;

/// <summary>
/// Finds the native library of ONNX Runtime Extensions (the <c>ai.onnx.contrib</c> operators:
/// Hugging Face tokenizers as ONNX ops, string ops, pre- and post-processing), which the
/// <c>Microsoft.ML.OnnxRuntime.Extensions</c> package brings per runtime identifier.
/// </summary>
public static class ExtensionsOpLibrary
{
    /// <summary>The operator domain of ONNX Runtime Extensions.</summary>
    public const string Domain = "ai.onnx.contrib";

    /// <summary>The library's file name on this operating system.</summary>
    public static string FileName =>
        OperatingSystem.IsWindows() ? "ortextensions.dll" : OperatingSystem.IsMacOS() ? "libortextensions.dylib" : "libortextensions.so";

    /// <summary>
    /// Returns the full path of the Extensions library: <paramref name="explicitPath"/> when given (a
    /// file, or a folder holding <see cref="FileName"/>), otherwise the first existing of: the folder
    /// of this assembly, the app's base folder, their <c>runtimes/RID/native</c> subfolders, and the
    /// native search folders the .NET host resolved from the app's deps.json.
    /// </summary>
    /// <exception cref="FileNotFoundException">No candidate exists; the message lists every path tried.</exception>
    public static string Locate(string? explicitPath = null) =>
        NativeLibraryFiles.FirstExisting(NativeLibraryFiles.Candidates(explicitPath, FileName, typeof(ExtensionsOpLibrary)), FileName, tried =>
            $"ONNX Runtime Extensions library ({FileName}) not found. Tried: {tried}. " +
            "The Microsoft.ML.OnnxRuntime.Extensions package (a dependency of InfLlmV2.Onnx) carries it under runtimes/RID/native/; or pass its path.");

    /// <summary>Whether <paramref name="model"/> imports the <see cref="Domain"/> operator set (so its session needs the Extensions library).</summary>
    public static bool IsImportedBy(ModelProto model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return model.OpsetImport.Any(o => o.Domain == Domain);
    }
}
