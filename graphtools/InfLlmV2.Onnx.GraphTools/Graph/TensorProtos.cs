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
        foreach (var d in dims)
            count = d >= 0 ? checked(count * d) : throw new ArgumentException($"Tensor '{name}': dim {d} is negative");
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

    /// <summary>Largest tensor whose bytes are read into memory (.NET's array limit).</summary>
    public static readonly long MaxTensorBytes = Array.MaxLength;

    /// <summary>Element count of a tensor from its dims.</summary>
    /// <exception cref="InvalidDataException">A dim is negative or the count overflows 64 bits.</exception>
    public static long ElementCount(TensorProto t)
    {
        long n = 1;
        foreach (var d in t.Dims)
        {
            if (d < 0) throw new InvalidDataException($"Tensor '{t.Name}': dim {d} is negative (shape [{string.Join(",", t.Dims)}])");
            if (d != 0 && n > long.MaxValue / d)
                throw new InvalidDataException($"Tensor '{t.Name}': shape [{string.Join(",", t.Dims)}] has more than 2^63 elements");
            n *= d;
        }
        return n;
    }

    /// <summary>
    /// Bytes of a fixed-size tensor from its dims and type, checked: the type has a fixed element
    /// size, no dim is negative and the size fits 64 bits. Any size is valid here: external data
    /// holds tensors of many GB; only reading the bytes into memory (<see cref="GetBytes"/>) is
    /// bounded, by <see cref="MaxTensorBytes"/>.
    /// </summary>
    /// <exception cref="InvalidDataException">The type, dims or size is not acceptable.</exception>
    public static long ByteLength(TensorProto t)
    {
        var type = (TensorProto.Types.DataType)t.DataType;
        int size = ElementSize(type);
        if (size == 0)
            throw new InvalidDataException($"Tensor '{t.Name}': data type {DescribeType(t.DataType)} has no fixed element size here");
        long count = ElementCount(t);
        if (count > long.MaxValue / size)
            throw new InvalidDataException($"Tensor '{t.Name}': shape [{string.Join(",", t.Dims)}] of {type} has more than 2^63 bytes");
        return count * size;
    }

    /// <summary>A data type's name, or its number when ONNX does not define it.</summary>
    public static string DescribeType(int dataType) =>
        Enum.IsDefined((TensorProto.Types.DataType)dataType) ? ((TensorProto.Types.DataType)dataType).ToString() : $"{dataType} (undefined)";

    /// <summary>Elements held in the typed field (float_data, int32_data, ...) that <paramref name="type"/> uses.</summary>
    public static int TypedCount(TensorProto t, TensorProto.Types.DataType type) => type switch
    {
        TensorProto.Types.DataType.Float => t.FloatData.Count,
        TensorProto.Types.DataType.Double => t.DoubleData.Count,
        TensorProto.Types.DataType.Int64 => t.Int64Data.Count,
        TensorProto.Types.DataType.Uint64 or TensorProto.Types.DataType.Uint32 => t.Uint64Data.Count,
        TensorProto.Types.DataType.String => t.StringData.Count,
        _ => t.Int32Data.Count,
    };

    /// <summary>
    /// The tensor's data as little-endian bytes, from raw_data or the typed fields. External data
    /// is resolved against <paramref name="baseDirectory"/> (must stay inside it).
    /// </summary>
    public static byte[] GetBytes(TensorProto t, string? baseDirectory = null)
    {
        var type = (TensorProto.Types.DataType)t.DataType;
        int size = ElementSize(type);
        if (size == 0)
            throw new NotSupportedException($"Tensor '{t.Name}': data type {DescribeType(t.DataType)} is not supported here");
        long byteLength = ByteLength(t);
        if (byteLength > MaxTensorBytes)
            throw new InvalidDataException($"Tensor '{t.Name}': shape [{string.Join(",", t.Dims)}] of {type} is {byteLength} bytes, more than {MaxTensorBytes} can be read into memory");
        long count = byteLength / size;
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
            return ExternalData.Read(t, baseDirectory ?? throw new InvalidDataException($"Tensor '{t.Name}' has external data but no model folder is known"));
        byte[] bytes;
        if (!t.RawData.IsEmpty)
        {
            bytes = t.RawData.ToByteArray();
        }
        else
        {
            int typed = TypedCount(t, type);
            if (typed != count)
                throw new InvalidDataException($"Tensor '{t.Name}': {typed} typed values, expected {count} for shape [{string.Join(",", t.Dims)}]");
            bytes = new byte[byteLength];
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
        long count = ElementCount(tensor);
        if (count > Array.MaxLength)
            throw new InvalidDataException($"Tensor '{tensor.Name}': {count} elements are too many to compare");
        int n = (int)count;
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
