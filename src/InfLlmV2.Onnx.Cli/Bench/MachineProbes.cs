using System.Diagnostics;
using System.Text.Json;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Cli.Bench;

/// <summary>What the machine can do, measured in the bench's own process: copy and read bandwidth, ORT MatMul throughput.</summary>
internal static class MachineProbes
{
    internal static double CopyBandwidth()
    {
        const int size = 256 << 20;
        var src = new byte[size];
        var dst = new byte[size];
        new Random(1).NextBytes(src.AsSpan(0, 4096));
        int parts = Environment.ProcessorCount;
        double ms = Timing.Fastest(() => Parallel.For(0, parts, i => src.AsSpan(size / parts * i, size / parts).CopyTo(dst.AsSpan(size / parts * i))), 6);
        return size / (ms * 1e-3) / 1e9;
    }

    // Bytes per second of summing a 256 MiB fp32 array (far beyond the last-level cache) on every
    // core, four independent vector sums per thread; the fastest of 10.
    internal static double ReadBandwidth()
    {
        const int count = 64 << 20;
        var data = new float[count];
        Array.Fill(data, 1.0f);  // touch every page before timing
        int parts = Environment.ProcessorCount;
        var sums = new float[parts];
        double ms = Timing.Fastest(() => Parallel.For(0, parts, i => sums[i] = SumOf(data.AsSpan(count / parts * i, count / parts))), 10);
        if (sums.Any(x => x <= 0)) throw new InvalidOperationException("read bandwidth: the sums were not computed");
        return 4.0 * count / (ms * 1e-3) / 1e9;
    }

    internal static float SumOf(ReadOnlySpan<float> x)
    {
        var v = System.Runtime.InteropServices.MemoryMarshal.Cast<float, System.Numerics.Vector<float>>(x);
        System.Numerics.Vector<float> a = default, b = default, c = default, d = default;
        int i = 0;
        for (; i + 4 <= v.Length; i += 4)
        {
            a += v[i];
            b += v[i + 1];
            c += v[i + 2];
            d += v[i + 3];
        }
        for (; i < v.Length; i++) a += v[i];
        return System.Numerics.Vector.Sum(a + b + c + d);
    }

    internal static double MatMulThroughput(SessionOptions options)
    {
        const int n = 1024;
        var g = new GraphProto { Name = "matmul" };
        g.Input.Add(GraphBuilder.Tensor("a", TensorProto.Types.DataType.Float, n, n));
        g.Input.Add(GraphBuilder.Tensor("b", TensorProto.Types.DataType.Float, n, n));
        g.Output.Add(GraphBuilder.Tensor("c", TensorProto.Types.DataType.Float, n, n));
        g.Node.Add(GraphBuilder.Node("MatMul", "", ["a", "b"], ["c"]));
        using var s = new InferenceSession(OnnxModelFile.ToBytes(GraphBuilder.Model(g, ("", 17))), options);
        using var a = OrtValue.CreateTensorValueFromMemory(AttentionBenchCases.Random(n * n, 9), [n, n]);
        using var b = OrtValue.CreateTensorValueFromMemory(AttentionBenchCases.Random(n * n, 10), [n, n]);
        double ms = Timing.Fastest(() =>
        {
            using var ro = new RunOptions();
            using var r = s.Run(ro, ["a", "b"], [a, b], ["c"]);
        }, 7);
        return 2.0 * n * n * n / (ms * 1e-3) / 1e9;
    }
}
