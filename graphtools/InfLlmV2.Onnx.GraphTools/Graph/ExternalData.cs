using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools;

/// <summary>Reads tensors stored as ONNX external data, refusing locations outside the model folder.</summary>
public static class ExternalData
{
    /// <summary>The external_data entry <paramref name="key"/>, or null.</summary>
    public static string? Entry(TensorProto t, string key) =>
        t.ExternalData.FirstOrDefault(e => e.Key == key)?.Value;

    /// <summary>
    /// Resolves a tensor's <c>location</c> against the model folder. Absolute paths and paths that
    /// escape the folder are refused.
    /// </summary>
    public static string ResolveLocation(TensorProto t, string baseDirectory)
    {
        var location = Entry(t, "location")
            ?? throw new InvalidDataException($"Tensor '{t.Name}': external data without 'location'");
        if (Path.IsPathRooted(location) || location.Contains('\\'))
            throw new InvalidDataException($"Tensor '{t.Name}': external data location '{location}' must be a relative POSIX path");
        var root = Path.GetFullPath(baseDirectory);
        var full = Path.GetFullPath(Path.Combine(root, location));
        var rootWithSep = root.EndsWith(Path.DirectorySeparatorChar) ? root : root + Path.DirectorySeparatorChar;
        if (!full.StartsWith(rootWithSep, StringComparison.Ordinal))
            throw new InvalidDataException($"Tensor '{t.Name}': external data location '{location}' escapes the model folder");
        return full;
    }

    /// <summary>Reads the bytes of one externally stored tensor.</summary>
    public static byte[] Read(TensorProto t, string baseDirectory)
    {
        var file = ResolveLocation(t, baseDirectory);
        if (!File.Exists(file))
            throw new FileNotFoundException($"Tensor '{t.Name}': external data file not found: {file}", file);
        long offset = long.TryParse(Entry(t, "offset"), out var o) ? o : 0;
        int size = TensorProtos.ElementSize((TensorProto.Types.DataType)t.DataType);
        long expected = TensorProtos.ElementCount(t) * size;
        long length = long.TryParse(Entry(t, "length"), out var l) ? l : expected;
        if (length != expected)
            throw new InvalidDataException($"Tensor '{t.Name}': external length {length} != {expected} bytes for its shape");
        using var stream = File.OpenRead(file);
        if (offset < 0 || offset + length > stream.Length)
            throw new InvalidDataException($"Tensor '{t.Name}': external range [{offset}, {offset + length}) is outside {file} ({stream.Length} bytes)");
        var bytes = new byte[length];
        stream.Position = offset;
        stream.ReadExactly(bytes);
        return bytes;
    }
}
