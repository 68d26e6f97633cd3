using System.Runtime.InteropServices;
using Google.Protobuf;
using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools;

/// <summary>Builds and reads <see cref="TensorProto"/> values (raw little-endian data).</summary>
public static class TensorProtos
{
    /// <summary>A tensor with raw data from any unmanaged element type.</summary>
    public static TensorProto Create<T>(string name, TensorProto.Types.DataType type, ReadOnlySpan<long> dims, ReadOnlySpan<T> data)
        where T : unmanaged
    {
        long count = 1;
        foreach (var d in dims) count *= d;
        if (count != data.Length)
            throw new ArgumentException($"Tensor '{name}': {data.Length} elements do not match shape [{string.Join(",", dims.ToArray())}]");
        var t = new TensorProto { Name = name, DataType = (int)type, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(data)) };
        t.Dims.AddRange(dims.ToArray());
        return t;
    }

    /// <summary>An fp32 tensor.</summary>
    public static TensorProto Float(string name, ReadOnlySpan<long> dims, ReadOnlySpan<float> data) =>
        Create(name, TensorProto.Types.DataType.Float, dims, data);

    /// <summary>An int32 tensor.</summary>
    public static TensorProto Int32(string name, ReadOnlySpan<long> dims, ReadOnlySpan<int> data) =>
        Create(name, TensorProto.Types.DataType.Int32, dims, data);

    /// <summary>An int64 tensor.</summary>
    public static TensorProto Int64(string name, ReadOnlySpan<long> dims, ReadOnlySpan<long> data) =>
        Create(name, TensorProto.Types.DataType.Int64, dims, data);

    /// <summary>Size in bytes of one element of an ONNX data type, or 0 when not fixed-size.</summary>
    public static int ElementSize(TensorProto.Types.DataType type) => type switch
    {
        TensorProto.Types.DataType.Float or TensorProto.Types.DataType.Int32 or TensorProto.Types.DataType.Uint32 => 4,
        TensorProto.Types.DataType.Double or TensorProto.Types.DataType.Int64 or TensorProto.Types.DataType.Uint64 => 8,
        TensorProto.Types.DataType.Float16 or TensorProto.Types.DataType.Bfloat16 or TensorProto.Types.DataType.Int16
            or TensorProto.Types.DataType.Uint16 => 2,
        TensorProto.Types.DataType.Int8 or TensorProto.Types.DataType.Uint8 or TensorProto.Types.DataType.Bool => 1,
        _ => 0,
    };

    /// <summary>Element count of a tensor from its dims.</summary>
    public static long ElementCount(TensorProto t)
    {
        long n = 1;
        foreach (var d in t.Dims) n *= d;
        return n;
    }

    /// <summary>
    /// The tensor's data as little-endian bytes, from raw_data or the typed fields. External data
    /// is resolved against <paramref name="baseDirectory"/> (must stay inside it).
    /// </summary>
    public static byte[] GetBytes(TensorProto t, string? baseDirectory = null)
    {
        var type = (TensorProto.Types.DataType)t.DataType;
        int size = ElementSize(type);
        if (size == 0)
            throw new NotSupportedException($"Tensor '{t.Name}': data type {type} is not supported here");
        long count = ElementCount(t);
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
            return ExternalData.Read(t, baseDirectory ?? throw new InvalidDataException($"Tensor '{t.Name}' has external data but no model folder is known"));
        byte[] bytes;
        if (!t.RawData.IsEmpty)
        {
            bytes = t.RawData.ToByteArray();
        }
        else
        {
            bytes = new byte[count * size];
            switch (type)
            {
                case TensorProto.Types.DataType.Float:
                    MemoryMarshal.AsBytes(t.FloatData.ToArray().AsSpan()).CopyTo(bytes);
                    break;
                case TensorProto.Types.DataType.Double:
                    MemoryMarshal.AsBytes(t.DoubleData.ToArray().AsSpan()).CopyTo(bytes);
                    break;
                case TensorProto.Types.DataType.Int64:
                    MemoryMarshal.AsBytes(t.Int64Data.ToArray().AsSpan()).CopyTo(bytes);
                    break;
                case TensorProto.Types.DataType.Uint64 or TensorProto.Types.DataType.Uint32:
                    for (int i = 0; i < count; i++)
                    {
                        if (size == 8) BitConverter.TryWriteBytes(bytes.AsSpan(i * 8), t.Uint64Data[i]);
                        else BitConverter.TryWriteBytes(bytes.AsSpan(i * 4), (uint)t.Uint64Data[i]);
                    }
                    break;
                default: // int32_data holds int32, int16, int8, uint8, uint16, bool, float16, bfloat16
                    for (int i = 0; i < count; i++)
                    {
                        int v = t.Int32Data[i];
                        if (size == 4) BitConverter.TryWriteBytes(bytes.AsSpan(i * 4), v);
                        else if (size == 2) BitConverter.TryWriteBytes(bytes.AsSpan(i * 2), (ushort)v);
                        else bytes[i] = (byte)v;
                    }
                    break;
            }
        }
        if (bytes.LongLength != count * size)
            throw new InvalidDataException($"Tensor '{t.Name}': {bytes.LongLength} data bytes, expected {count * size} for shape [{string.Join(",", t.Dims)}]");
        return bytes;
    }

    /// <summary>Every element of a numeric tensor as double (fp32, fp16, bf16, fp64, integers, bool).</summary>
    public static double[] ToDoubles(TensorProto tensor, string? baseDirectory = null)
    {
        var type = (TensorProto.Types.DataType)tensor.DataType;
        var bytes = GetBytes(tensor, baseDirectory);
        int n = (int)ElementCount(tensor);
        var r = new double[n];
        for (int i = 0; i < n; i++)
        {
            r[i] = type switch
            {
                TensorProto.Types.DataType.Float => BitConverter.ToSingle(bytes, i * 4),
                TensorProto.Types.DataType.Double => BitConverter.ToDouble(bytes, i * 8),
                TensorProto.Types.DataType.Float16 => (double)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(bytes, i * 2)),
                TensorProto.Types.DataType.Bfloat16 => BitConverter.Int32BitsToSingle(BitConverter.ToUInt16(bytes, i * 2) << 16),
                TensorProto.Types.DataType.Int32 => BitConverter.ToInt32(bytes, i * 4),
                TensorProto.Types.DataType.Int64 => BitConverter.ToInt64(bytes, i * 8),
                TensorProto.Types.DataType.Uint32 => BitConverter.ToUInt32(bytes, i * 4),
                TensorProto.Types.DataType.Uint64 => BitConverter.ToUInt64(bytes, i * 8),
                TensorProto.Types.DataType.Int16 => BitConverter.ToInt16(bytes, i * 2),
                TensorProto.Types.DataType.Uint16 => BitConverter.ToUInt16(bytes, i * 2),
                TensorProto.Types.DataType.Int8 => (sbyte)bytes[i],
                TensorProto.Types.DataType.Uint8 or TensorProto.Types.DataType.Bool => bytes[i],
                _ => throw new NotSupportedException($"Tensor '{tensor.Name}': data type {type} cannot be compared"),
            };
        }
        return r;
    }
}
