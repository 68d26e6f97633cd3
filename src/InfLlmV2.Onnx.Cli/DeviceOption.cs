using System.CommandLine;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Cli;

/// <summary>The <c>--device cpu|cuda</c> option of run, compare, generate and bench.</summary>
public static class DeviceOption
{
    /// <summary>Creates the option (default cpu).</summary>
    public static Option<string> Create()
    {
        var device = new Option<string>("--device") { Description = "Execution provider: cpu, or cuda (CUDA EP first, CPU for the rest; linux-x64 only)", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        return device;
    }

    /// <summary>
    /// Session options for <paramref name="device"/>: the CUDA EP appended for cuda, after checking
    /// that it can run here (else a <see cref="NotSupportedException"/> whose message says why, exit 2).
    /// </summary>
    public static SessionOptions SessionOptions(string device, OrtLoggingLevel logLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL)
    {
        var parsed = ExecutionProviders.Parse(device);
        var options = new SessionOptions { LogSeverityLevel = logLevel };
        try
        {
            return options.UseDevice(parsed);
        }
        catch
        {
            options.Dispose();
            throw;
        }
    }

    /// <summary>Fails up front (one line, exit 2) when <paramref name="device"/> cannot run here.</summary>
    public static ExecutionDevice Check(string device)
    {
        var parsed = ExecutionProviders.Parse(device);
        if (parsed == ExecutionDevice.Cuda && ExecutionProviders.CudaUnavailableReason is { } why)
            throw new NotSupportedException($"CUDA is not available: {why}");
        return parsed;
    }
}
