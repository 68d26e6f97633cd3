using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx;

/// <summary>Where a session runs: ONNX Runtime's CPU execution provider, or its CUDA execution provider first.</summary>
public enum ExecutionDevice
{
    /// <summary>The CPU execution provider only (every ONNX Runtime build has it).</summary>
    Cpu,

    /// <summary>The CUDA execution provider (device 0), with the CPU provider for what CUDA does not run.</summary>
    Cuda,
}

/// <summary>Which execution providers this process can use, and appending them to session options.</summary>
public static class ExecutionProviders
{
    /// <summary>The CUDA runtime library that ONNX Runtime 1.31's CUDA provider is linked against (CUDA 13).</summary>
    public const string CudaRuntimeLibrary = "libcudart.so.13";

    private static readonly Lazy<string?> CudaReason = new(ProbeCuda);

    /// <summary>
    /// Why the CUDA execution provider cannot run here, in one line, or null when it can: this is not
    /// linux-x64 (<see cref="CudaPlatformRefusal"/>), the loaded ONNX Runtime lacks it (a CPU-only native package), <see cref="CudaRuntimeLibrary"/> is missing,
    /// no CUDA device is visible, or ONNX Runtime failed to load its CUDA provider library (for
    /// instance a missing cuBLAS). Probed once per process.
    /// </summary>
    public static string? CudaUnavailableReason => CudaReason.Value;

    /// <summary>The execution providers compiled into the loaded ONNX Runtime (for example CPUExecutionProvider, CUDAExecutionProvider).</summary>
    public static IReadOnlyList<string> Compiled => OrtEnv.Instance().GetAvailableProviders();

    /// <summary>Parses <c>cpu</c> or <c>cuda</c> (case-insensitive).</summary>
    /// <exception cref="ArgumentException">Any other text.</exception>
    public static ExecutionDevice Parse(string text) => text.Trim().ToLowerInvariant() switch
    {
        "cpu" => ExecutionDevice.Cpu,
        "cuda" => ExecutionDevice.Cuda,
        _ => throw new ArgumentException($"device must be cpu or cuda, got '{text}'"),
    };

    /// <summary>
    /// Appends the providers of <paramref name="device"/> to <paramref name="options"/>: nothing for
    /// <see cref="ExecutionDevice.Cpu"/> (ORT's default), the CUDA provider on device 0 for
    /// <see cref="ExecutionDevice.Cuda"/> after checking that it can run here.
    /// </summary>
    /// <returns>The same options, for chaining.</returns>
    /// <exception cref="NotSupportedException">CUDA was asked for and cannot run here; the message is <see cref="CudaUnavailableReason"/>.</exception>
    public static SessionOptions UseDevice(this SessionOptions options, ExecutionDevice device)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (device == ExecutionDevice.Cuda)
        {
            if (CudaUnavailableReason is { } why) throw new NotSupportedException($"CUDA is not available: {why}");
            options.AppendExecutionProvider_CUDA(0);
        }
        return options;
    }

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate int CudaGetDeviceCount(out int count);

    /// <summary>The one platform whose op library has CUDA kernels.</summary>
    public const string CudaRuntimeIdentifier = "linux-x64";

    /// <summary>
    /// Why the CUDA execution provider cannot run on <paramref name="os"/> / <paramref name="architecture"/>
    /// whatever is installed, or null on <see cref="CudaRuntimeIdentifier"/>: the op library's CUDA
    /// kernels are built for linux-x64 only (the win-x64 and linux-arm64 builds have CPU kernels only).
    /// </summary>
    public static string? CudaPlatformRefusal(OSPlatform os, Architecture architecture)
    {
        if (os == OSPlatform.Linux && architecture == Architecture.X64) return null;
        return $"CUDA kernels are built for {CudaRuntimeIdentifier} only; this is {NativeLibraryFiles.RidFor(os, architecture)}, " +
               "where the op library has CPU kernels only: use the CPU execution provider (--device cpu)";
    }

    private static string? ProbeCuda()
    {
        if (CudaPlatformRefusal(NativeLibraryFiles.CurrentOS, RuntimeInformation.ProcessArchitecture) is { } platform) return platform;
        if (!Compiled.Contains("CUDAExecutionProvider"))
            return $"this ONNX Runtime ({OrtEnv.Instance().GetVersionString()}) was built without the CUDA execution provider";
        if (!NativeLibrary.TryLoad(CudaRuntimeLibrary, out var cudart))
            return $"{CudaRuntimeLibrary} (the CUDA 13 runtime) was not found by the dynamic loader";
        // The runtime stays loaded: ORT's CUDA provider needs it anyway, and unloading CUDA is not safe.
        if (!NativeLibrary.TryGetExport(cudart, "cudaGetDeviceCount", out var fn))
            return $"{CudaRuntimeLibrary} has no cudaGetDeviceCount";
        int status = Marshal.GetDelegateForFunctionPointer<CudaGetDeviceCount>(fn)(out int count);
        if (status != 0) return $"cudaGetDeviceCount failed with CUDA error {status} (no usable GPU or driver)";
        if (count < 1) return "no CUDA device is visible";
        try
        {
            using var probe = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
            probe.AppendExecutionProvider_CUDA(0);
            return null;
        }
        catch (OnnxRuntimeException e)
        {
            return "ONNX Runtime could not load its CUDA provider: " + FirstCause(e.Message);
        }
    }

    /// <summary>The dynamic loader's reason from an ORT "Failed to load library ... with error: X" message, else its first line.</summary>
    internal static string FirstCause(string message)
    {
        var clean = System.Text.RegularExpressions.Regex.Replace(message, "\u001b\\[[0-9;]*m", "");
        int at = clean.LastIndexOf("with error: ", StringComparison.Ordinal);
        var line = at >= 0 ? clean[(at + "with error: ".Length)..] : clean;
        return line.ReplaceLineEndings(" ").Trim();
    }
}
