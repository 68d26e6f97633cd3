using System.Globalization;
using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools;

/// <summary>One externally stored tensor, checked: where its bytes are and that the file holds them.</summary>
/// <param name="Location">The <c>location</c> entry as written in the model (relative).</param>
/// <param name="RealPath">The data file's real path (inside the model folder, a regular file).</param>
/// <param name="Offset">First byte of the tensor.</param>
/// <param name="Length">Bytes of the tensor (its dims times its element size).</param>
/// <param name="FileLength">Bytes of the data file when checked.</param>
public sealed record ExternalRange(string Location, string RealPath, long Offset, long Length, long FileLength);

/// <summary>
/// Reads tensors stored as ONNX external data. A location is refused unless it is a relative path
/// whose real path (every symbolic link resolved) is a regular file inside the model folder, and the
/// file holds <c>offset + length</c> bytes.
/// </summary>
public static class ExternalData
{
    /// <summary>The external_data entry <paramref name="key"/>, or null.</summary>
    public static string? Entry(TensorProto t, string key) =>
        t.ExternalData.FirstOrDefault(e => e.Key == key)?.Value;

    /// <summary>
    /// Resolves a tensor's <c>location</c> against the model folder: its real path, refused when
    /// absolute, outside the folder (through <c>..</c> or a symbolic link), missing or not a regular file.
    /// </summary>
    public static string ResolveLocation(TensorProto t, string baseDirectory) => Check(t, baseDirectory).RealPath;

    /// <summary>
    /// Checks everything about one external tensor before a byte is read: the location (see
    /// <see cref="ResolveLocation"/>), <c>offset</c> and <c>length</c> (non-negative integers;
    /// length equal to the tensor's dims times its element size) and that the file holds them.
    /// </summary>
    /// <exception cref="InvalidDataException">Any of these fails (the message names the tensor).</exception>
    /// <exception cref="FileNotFoundException">The data file is missing.</exception>
    public static ExternalRange Check(TensorProto t, string baseDirectory)
    {
        string what = $"Tensor '{t.Name}': external data";
        var location = Entry(t, "location") ?? throw new InvalidDataException($"{what} without 'location'");
        var (real, fileLength) = SafeFiles.RegularFileInside(baseDirectory, location, what);
        long offset = Number(t, "offset", what) ?? 0;
        long expected = TensorProtos.ByteLength(t);
        long length = Number(t, "length", what) ?? expected;
        if (length != expected)
            throw new InvalidDataException($"{what}: length {length} != {expected} bytes for its shape [{string.Join(",", t.Dims)}]");
        if (offset > fileLength || length > fileLength - offset)
            throw new InvalidDataException($"{what}: range [{offset}, {offset}+{length}) is outside '{location}' ({fileLength} bytes)");
        return new ExternalRange(location, real, offset, length, fileLength);
    }

    private static long? Number(TensorProto t, string key, string what)
    {
        var text = Entry(t, key);
        if (text is null) return null;
        return long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var v)
            ? v : throw new InvalidDataException($"{what}: {key} '{text}' is not a non-negative integer");
    }

    /// <summary>Reads the bytes of one externally stored tensor (after <see cref="Check"/>; never more than its length).</summary>
    public static byte[] Read(TensorProto t, string baseDirectory)
    {
        var range = Check(t, baseDirectory);
        using var stream = SafeFiles.OpenRegular(range.RealPath, $"Tensor '{t.Name}': external data file", long.MaxValue);
        var bytes = new byte[range.Length];
        stream.Position = range.Offset;
        int read = 0;
        while (read < bytes.Length)
        {
            int n = stream.Read(bytes, read, bytes.Length - read);
            if (n == 0) throw new InvalidDataException($"Tensor '{t.Name}': external data file '{range.Location}' ended early (changed while reading)");
            read += n;
        }
        return bytes;
    }
}
