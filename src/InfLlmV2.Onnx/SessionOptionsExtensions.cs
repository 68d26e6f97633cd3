using InfLlmV2.Onnx.GraphTools.Proto;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx;

/// <summary>The one-line drop-in for ONNX Runtime apps.</summary>
public static class SessionOptionsExtensions
{
    /// <summary>
    /// Registers the native <c>com.infllmv2</c> op library (SwitchableAttention) on these options.
    /// ONNX Runtime owns the loaded library from then on.
    /// </summary>
    /// <param name="options">Session options to register on.</param>
    /// <param name="libraryPath">The library file or its folder; null to search next to this assembly.</param>
    /// <returns>The same options, for chaining.</returns>
    /// <exception cref="FileNotFoundException">The library was not found (the message names every path tried).</exception>
    /// <exception cref="OnnxRuntimeException">ONNX Runtime could not load or register it.</exception>
    public static SessionOptions RegisterInfLlmV2Ops(this SessionOptions options, string? libraryPath = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.RegisterCustomOpLibrary(NativeOpLibrary.Locate(libraryPath));
        return options;
    }

    /// <summary>
    /// Registers the ONNX Runtime Extensions library (the <c>ai.onnx.contrib</c> operators:
    /// tokenizers, string ops) on these options.
    /// </summary>
    /// <param name="options">Session options to register on.</param>
    /// <param name="libraryPath">The library file or its folder; null to search next to this assembly and in runtimes/RID/native.</param>
    /// <returns>The same options, for chaining.</returns>
    /// <exception cref="FileNotFoundException">The library was not found (the message names every path tried).</exception>
    /// <exception cref="OnnxRuntimeException">ONNX Runtime could not load or register it.</exception>
    public static SessionOptions RegisterExtensionsOps(this SessionOptions options, string? libraryPath = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.RegisterCustomOpLibrary(ExtensionsOpLibrary.Locate(libraryPath));
        return options;
    }

    /// <summary>
    /// Registers both libraries in one call: ours (<c>com.infllmv2</c>, SwitchableAttention) and ONNX
    /// Runtime Extensions (<c>ai.onnx.contrib</c>), for pipelines that put tokenization or other pre-
    /// and post-processing into the same ONNX Runtime app.
    /// </summary>
    /// <param name="options">Session options to register on.</param>
    /// <param name="opsLibraryPath">Our library file or its folder; null to search next to this assembly.</param>
    /// <param name="extensionsLibraryPath">The Extensions library file or its folder; null to search.</param>
    /// <returns>The same options, for chaining.</returns>
    /// <exception cref="FileNotFoundException">A library was not found (the message names every path tried).</exception>
    /// <exception cref="OnnxRuntimeException">ONNX Runtime could not load or register one.</exception>
    public static SessionOptions RegisterAllOps(this SessionOptions options, string? opsLibraryPath = null, string? extensionsLibraryPath = null) =>
        options.RegisterInfLlmV2Ops(opsLibraryPath).RegisterExtensionsOps(extensionsLibraryPath);

    /// <summary>
    /// Registers the Extensions library when <paramref name="model"/> imports the <c>ai.onnx.contrib</c>
    /// domain; does nothing otherwise.
    /// </summary>
    /// <returns>Whether the library was registered.</returns>
    /// <exception cref="FileNotFoundException">The model needs the library and it was not found.</exception>
    public static bool RegisterExtensionsOpsIfImported(this SessionOptions options, ModelProto model)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!ExtensionsOpLibrary.IsImportedBy(model)) return false;
        options.RegisterExtensionsOps();
        return true;
    }
}
