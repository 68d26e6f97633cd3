using System.Runtime.InteropServices;
using InfLlmV2.Onnx.Session;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// The session wrapper's KV-cache buffers (Session/CacheTensor.cs): zero-filled native tensors of
/// the asked shape; large ones 2 MiB-aligned and, on Linux with transparent huge pages built into the
/// kernel, advised for them.
/// </summary>
public class CacheTensorTests
{
    [Fact]
    public void LargeBufferIsZeroedAlignedAndAdvisedForHugePages()
    {
        long[] shape = [1, 2, 8192, 64];  // 4 MiB of fp32
        using var t = new CacheTensor(TensorElementType.Float, shape);
        Assert.Equal(shape, t.Value.GetTensorTypeAndShape().Shape);
        Assert.Equal(0L, t.Data.ToInt64() % CacheTensor.HugePageBytes);
        var data = t.Value.GetTensorMutableDataAsSpan<float>();
        Assert.Equal(2 * 8192 * 64, data.Length);
        Assert.True(data.IndexOfAnyExcept(0f) < 0, "the buffer is zero-filled");
        data[^1] = 3f;  // the whole tensor is writable
        bool thpInKernel = OperatingSystem.IsLinux() && File.Exists("/sys/kernel/mm/transparent_hugepage/enabled");
        Assert.Equal(thpInKernel, t.HugePagesAdvised);
    }

    [Fact]
    public void BufferOfMoreThanTwoGibibytesIsZeroedToItsEnd()
    {
        // 2 GiB + 64 bytes of fp32 (as B = 16 x 8 KV heads x 32k x 128 and a little more): larger
        // than any span, which is how the bench's batched Llama-3-8B case first failed.
        long[] shape = [1, 1, (1L << 29) + 16];
        using var t = new CacheTensor(TensorElementType.Float, shape);
        Assert.Equal(shape, t.Value.GetTensorTypeAndShape().Shape);
        long bytes = 4 * shape[2];
        Assert.True(bytes > int.MaxValue);
        foreach (long at in new[] { 0L, (1L << 31) - 4, 1L << 31, bytes - 4 })
        {
            var p = (IntPtr)(t.Data.ToInt64() + at);
            Assert.Equal(0, Marshal.ReadInt32(p));
            Marshal.WriteInt32(p, 7);  // the buffer's last bytes are its own
            Assert.Equal(7, Marshal.ReadInt32(p));
        }
    }

    [Fact]
    public void BenchCopiesValuesInInChunks()
    {
        // More than one 256 Ki-element chunk, and a partial last one.
        var data = InfLlmV2.Onnx.Cli.Bench.AttentionBenchCases.Random((1 << 18) * 2 + 5, 9);
        foreach (bool fp16 in new[] { false, true })
        {
            using var t = new CacheTensor(fp16 ? TensorElementType.Float16 : TensorElementType.Float, [1, 1, data.Length]);
            InfLlmV2.Onnx.Cli.Bench.AttentionBenchCases.CopyIn(data, t.Data, fp16);
            float[] back = fp16
                ? t.Value.GetTensorDataAsSpan<Float16>().ToArray().Select(h => (float)h).ToArray()
                : t.Value.GetTensorDataAsSpan<float>().ToArray();
            for (int i = 0; i < data.Length; i++)
                Assert.True(back[i] == (fp16 ? (float)(Float16)data[i] : data[i]), $"element {i} (fp16: {fp16})");
        }
    }

    [Fact]
    public void SmallFp16BufferIsNotAdvised()
    {
        using var t = new CacheTensor(TensorElementType.Float16, [1, 1, 16, 8]);
        Assert.False(t.HugePagesAdvised);
        Assert.Equal(128, t.Value.GetTensorMutableDataAsSpan<Float16>().Length);
        Assert.Equal(0L, t.Data.ToInt64() % 64);
    }

    [Fact]
    public void DisposeTwiceIsHarmless()
    {
        var t = new CacheTensor(TensorElementType.Float, [1, 1, 4, 4]);
        t.Dispose();
        t.Dispose();
    }

    [Fact]
    public void UnsupportedTypeAndNegativeShapeAreRefused()
    {
        var type = Assert.Throws<ArgumentException>(() => new CacheTensor(TensorElementType.Int32, [1, 1, 4, 4]));
        Assert.Contains("Int32", type.Message);
        var shape = Assert.Throws<ArgumentException>(() => new CacheTensor(TensorElementType.Float, [1, -1, 4, 4]));
        Assert.Contains("negative", shape.Message);
    }
}
