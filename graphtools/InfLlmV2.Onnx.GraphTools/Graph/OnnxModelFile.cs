using Google.Protobuf;
using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools;

/// <summary>Loads and saves ONNX <see cref="ModelProto"/> files with explicit parser limits.</summary>
public static class OnnxModelFile
{
    /// <summary>Largest model file accepted (protobuf's own hard limit: 2 GiB - 1).</summary>
    public const int MaxModelBytes = int.MaxValue;

    /// <summary>Deepest message nesting accepted (subgraphs of If/Loop/Scan count).</summary>
    public const int MaxRecursionDepth = 256;

    /// <summary>Parses a model file; external data files are not opened.</summary>
    /// <exception cref="InvalidDataException">The file is not a parsable ONNX model.</exception>
    public static ModelProto Load(string path)
    {
        var kind = SafeFiles.Kind(Path.GetFullPath(path), followLinks: true);
        if (kind == FileKind.Missing)
            throw new FileNotFoundException($"Model file not found: {path}", path);
        if (kind != FileKind.Regular)
            throw new InvalidDataException($"{path} is {SafeFiles.Describe(kind)}, not a model file");
        if (new FileInfo(path).Length > MaxModelBytes)
            throw new InvalidDataException($"{path}: {new FileInfo(path).Length} bytes exceeds the 2 GiB protobuf limit; store weights as external data.");
        using var stream = SafeFiles.OpenRegular(path, "model file", MaxModelBytes);
        return Parse(stream, path);
    }

    /// <summary>Parses a model from a stream (used for in-memory models).</summary>
    public static ModelProto Parse(Stream stream, string description)
    {
        try
        {
            using var input = CodedInputStream.CreateWithLimits(stream, MaxModelBytes, MaxRecursionDepth);
            var model = ModelProto.Parser.ParseFrom(input);
            if (model.Graph is null)
                throw new InvalidDataException($"{description}: not an ONNX model (no graph).");
            return model;
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new InvalidDataException($"{description}: not a valid ONNX model ({e.Message})", e);
        }
    }

    /// <summary>
    /// Writes the model atomically: to a temporary file in the destination folder, then renamed.
    /// On failure no file is left at <paramref name="path"/> (an existing one is untouched), nor a
    /// temporary; only a regular file is ever replaced.
    /// </summary>
    public static void Save(ModelProto model, string path)
    {
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        SafeFiles.WriteAtomically(full, model.WriteTo, "Output");
    }

    /// <summary>Serializes the model to bytes (for in-memory sessions).</summary>
    public static byte[] ToBytes(ModelProto model) => model.ToByteArray();
}
