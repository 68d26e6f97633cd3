using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InfLlmV2.Onnx;

/// <summary>
/// ONNX test-data folders (<c>input_N.pb</c>, <c>output_N.pb</c>: serialized TensorProtos) and
/// their conversion to and from <see cref="OrtValue"/>.
/// </summary>
public static class OnnxTestData
{
    /// <summary>Reads the <c>{prefix}_N.pb</c> files of a folder in index order.</summary>
    public static List<TensorProto> ReadAll(string directory, string prefix)
    {
        var files = Directory.Exists(directory)
            ? Directory.GetFiles(directory, $"{prefix}_*.pb")
                .Select(f => (File: f, Index: int.TryParse(Path.GetFileNameWithoutExtension(f)[(prefix.Length + 1)..], out var i) ? i : -1))
                .Where(x => x.Index >= 0).OrderBy(x => x.Index).ToList()
            : throw new DirectoryNotFoundException($"Test-data folder not found: {directory}");
        for (int i = 0; i < files.Count; i++)
        {
            if (files[i].Index != i)
                throw new InvalidDataException($"{directory}: {prefix}_{i}.pb is missing (found {prefix}_{files[i].Index}.pb)");
        }
        // Like a model's external data, a test-data file must be a regular file whose real path is inside the folder.
        return files.Select(f => ReadTensor(SafeFiles.RegularFileInside(directory, Path.GetFileName(f.File), $"test data {directory}").RealPath)).ToList();
    }

    /// <summary>Parses one serialized TensorProto file.</summary>
    public static TensorProto ReadTensor(string path)
    {
        var kind = SafeFiles.Kind(Path.GetFullPath(path), followLinks: true);
        if (kind != FileKind.Regular)
            throw new InvalidDataException($"{path} is {SafeFiles.Describe(kind)}, not a serialized TensorProto");
        try
        {
            return TensorProto.Parser.ParseFrom(SafeFiles.ReadBounded(path, "test-data tensor", int.MaxValue));
        }
        catch (Google.Protobuf.InvalidProtocolBufferException e)
        {
            throw new InvalidDataException($"{path}: not a serialized TensorProto ({e.Message})", e);
        }
    }

    /// <summary>Writes one TensorProto file atomically (over nothing but a regular file; no temporary left on failure).</summary>
    public static void WriteTensor(TensorProto tensor, string path) =>
        SafeFiles.WriteAtomically(path, s => Google.Protobuf.MessageExtensions.WriteTo(tensor, s), "Output");

    /// <summary>A CPU OrtValue holding a copy of the tensor's data.</summary>
    public static OrtValue ToOrtValue(TensorProto tensor, string? baseDirectory = null)
    {
        var type = (TensorElementType)tensor.DataType;
        if (type == TensorElementType.String)
        {
            // Strings (the ai.onnx.contrib text ops): UTF-8 in string_data, one per element.
            var dims = tensor.Dims.Select(d => checked((int)d)).ToArray();
            var count = dims.Aggregate(1L, (a, d) => a * d);
            if (count != tensor.StringData.Count)
                throw new InvalidDataException($"string tensor '{tensor.Name}' has {tensor.StringData.Count} strings for shape [{string.Join(",", dims)}]");
            var strings = tensor.StringData.Select(b => b.ToStringUtf8()).ToArray();
            return OrtValue.CreateFromStringTensor(new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<string>(strings, dims));
        }
        var bytes = TensorProtos.GetBytes(tensor, baseDirectory);
        var value = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, type, tensor.Dims.ToArray());
        bytes.CopyTo(value.GetTensorMutableRawData());
        return value;
    }

    /// <summary>A TensorProto (raw data) copy of a CPU tensor OrtValue.</summary>
    public static TensorProto FromOrtValue(string name, OrtValue value)
    {
        var info = value.GetTensorTypeAndShape();
        var t = new TensorProto { Name = name, DataType = (int)info.ElementDataType };
        t.Dims.AddRange(info.Shape);
        if (info.ElementDataType == TensorElementType.String)
        {
            for (int i = 0; i < info.ElementCount; i++) t.StringData.Add(Google.Protobuf.ByteString.CopyFromUtf8(value.GetStringElement(i)));
            return t;
        }
        t.RawData = Google.Protobuf.ByteString.CopyFrom(value.GetTensorMutableRawData());
        return t;
    }
}
