using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InfLlmV2.Onnx.Session;

/// <summary>
/// One zero-filled KV-cache tensor (keys, values or compressed keys) in native memory this object
/// owns. Buffers of 2 MiB and more start on a 2 MiB boundary and, on Linux, are advised for
/// transparent huge pages (madvise MADV_HUGEPAGE) before their first write: a sparse decode step
/// reads its 64-token blocks scattered over the whole cache, and with 4 KiB pages most of them
/// start with a TLB miss (a page walk from memory when the model's other layers have evicted the
/// page tables). Where the kernel gives no huge pages the buffer works the same with small ones.
/// The price: a buffer's last huge page is resident whole, at most 2 MiB more than its size.
/// </summary>
internal sealed class CacheTensor : IDisposable
{
    internal const long HugePageBytes = 2L << 20;
    private const int MadviseHugePage = 14;  // MADV_HUGEPAGE, the same on x86-64 and AArch64

    private IntPtr _allocation;
    private long _pressure;

    /// <summary>The tensor over the buffer (disposed with this object).</summary>
    public OrtValue Value { get; }

    /// <summary>The buffer's first byte (2 MiB-aligned for buffers of 2 MiB and more).</summary>
    public IntPtr Data { get; }

    /// <summary>Whether the kernel accepted the huge-page advice (Linux, buffers of 2 MiB and more).</summary>
    public bool HugePagesAdvised { get; }

    /// <summary>A zero-filled tensor of <paramref name="type"/> (fp32 or fp16) and <paramref name="shape"/>.</summary>
    public CacheTensor(TensorElementType type, long[] shape)
    {
        long elementBytes = type switch
        {
            TensorElementType.Float => 4,
            TensorElementType.Float16 => 2,
            _ => throw new ArgumentException($"KV cache element type {type} is not supported (fp32, fp16)", nameof(type)),
        };
        long elements = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw new ArgumentException($"KV cache shape [{string.Join(", ", shape)}] has a negative dimension", nameof(shape));
            elements = checked(elements * d);
        }
        long bytes = Math.Max(checked(elements * elementBytes), 1);
        long align = bytes >= HugePageBytes ? HugePageBytes : 64;
        long rounded = (bytes + align - 1) / align * align;  // the advice covers whole huge pages of ours
        _allocation = Marshal.AllocHGlobal(checked((nint)(rounded + align)));
        Data = (IntPtr)(((long)_allocation + align - 1) & ~(align - 1));
        try
        {
            HugePagesAdvised = align == HugePageBytes && OperatingSystem.IsLinux()
                && Madvise(Data, (nuint)rounded, MadviseHugePage) == 0;
            Value = OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, type, shape, Data, bytes);
            ZeroFill(Data, bytes);  // the first write: huge pages, where given, fault in now
            // The collector sees none of this memory otherwise, and could leave gigabytes of dead
            // managed arrays uncollected next to it (the bench's B = 16 caches ran out of memory so).
            _pressure = rounded + align;
            GC.AddMemoryPressure(_pressure);
        }
        catch
        {
            Marshal.FreeHGlobal(_allocation);
            _allocation = IntPtr.Zero;
            throw;
        }
    }

    // Zeroes `bytes` bytes at `at` in chunks: a span over the whole buffer would be limited to
    // int.MaxValue bytes, and a cache buffer can be larger (B = 16 x 8 KV heads x 32k x 128 fp32 is 2 GiB).
    private static void ZeroFill(IntPtr at, long bytes)
    {
        const int Chunk = 1 << 20;
        var zeros = new byte[(int)Math.Min(bytes, Chunk)];
        for (long done = 0; done < bytes; done += Chunk)
            Marshal.Copy(zeros, 0, (IntPtr)((long)at + done), (int)Math.Min(Chunk, bytes - done));
    }

    [DllImport("libc", EntryPoint = "madvise", SetLastError = true)]
    private static extern int Madvise(IntPtr address, nuint length, int advice);

    /// <summary>Disposes the tensor, then frees the buffer.</summary>
    public void Dispose()
    {
        if (_allocation == IntPtr.Zero) return;
        Value.Dispose();
        Marshal.FreeHGlobal(_allocation);
        _allocation = IntPtr.Zero;
        if (_pressure > 0) GC.RemoveMemoryPressure(_pressure);
        _pressure = 0;
    }
}
