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
}
