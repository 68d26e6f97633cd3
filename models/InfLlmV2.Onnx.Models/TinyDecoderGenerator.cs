using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.Models;

/// <summary>
/// Builds a tiny decoder-only LLM: token embedding, per layer RMSNorm → q/k/v projections →
/// attention → output projection, residuals, RMSNorm → SiLU MLP, final RMSNorm and lm_head.
/// Attention in one of three forms (<see cref="DecoderAttentionForm"/>): genai's
/// <c>com.microsoft::GroupQueryAttention</c> (rotary inside, seqlens and total length from the
/// attention mask), ONNX <c>Attention</c>-23 with its past/present cache, or decomposed
/// MatMul/Softmax/MatMul (the ONNX Attention function body: Concat caches, repeat_kv, causal mask).
/// The last two take position_ids and apply rotary with plain ops. Weights come from a seeded
/// generator: the same config gives the same bytes.
/// </summary>
public static class TinyDecoderGenerator
{
    private const TensorProto.Types.DataType F32 = TensorProto.Types.DataType.Float;
    private const TensorProto.Types.DataType I64 = TensorProto.Types.DataType.Int64;

    /// <summary>Generates the model (all weights inline as raw data).</summary>
    public static ModelProto Generate(TinyDecoderConfig c)
    {
        if (c.Form == DecoderAttentionForm.LegacyAttention) return LegacyAttentionDecoder.Generate(c);
        if (c.HeadSize % 8 != 0 || c.NumHeads % c.KvNumHeads != 0)
            throw new ArgumentException("head size must be a multiple of 8 and heads a multiple of kv heads");
        if (c.Form != DecoderAttentionForm.GroupQueryAttention && c.PackedQkv) throw new ArgumentException("packed QKV exists only in the GroupQueryAttention form");
        if (c.Form == DecoderAttentionForm.GroupQueryAttention && c.PaddingMask) throw new ArgumentException("the GroupQueryAttention form takes its lengths from attention_mask already");
        if (c.Form != DecoderAttentionForm.GroupQueryAttention && c.AttentionBias) throw new ArgumentException("attention_bias exists only in the GroupQueryAttention form");
        var model = new TinyDecoderBuilder(c).Build();
        return c.Merged ? MergedDecoder.Wrap(model, c) : model;
    }

    /// <summary>
    /// Writes the model to <paramref name="path"/>; with <paramref name="externalData"/> every
    /// initializer of at least 1 KiB goes to <c>{file}.data</c> next to it (4096-aligned offsets).
    /// </summary>
    public static void Save(ModelProto model, string path, bool externalData)
    {
        string? newData = null;
        if (externalData)
        {
            model = model.Clone();
            var dataName = Path.GetFileName(path) + ".data";
            var dataPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, dataName);
            if (SafeFiles.Kind(dataPath, followLinks: false) == FileKind.Missing) newData = dataPath;
            // Written whole (a temporary renamed into place, never through a link): a full disk leaves no partial file.
            SafeFiles.WriteAtomically(dataPath, data =>
            {
                foreach (var t in model.Graph.Initializer.Where(t => t.RawData.Length >= 1024))
                {
                    long offset = (data.Position + 4095) / 4096 * 4096;
                    data.SetLength(offset);
                    data.Position = offset;
                    t.RawData.WriteTo(data);
                    t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = dataName });
                    t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                    t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = t.RawData.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                    t.DataLocation = TensorProto.Types.DataLocation.External;
                    t.RawData = Google.Protobuf.ByteString.Empty;
                }
            }, "external data output");
        }
        try
        {
            OnnxModelFile.Save(model, path);
        }
        catch
        {
            if (newData is not null) SafeFiles.TryDelete(newData);
            throw;
        }
    }

    internal static ValueInfoProto CacheInfo(string name, TinyDecoderConfig c, int heads, string seqDim)
    {
        var v = Tensor(name, F32, null, heads, null, c.HeadSize);
        v.Type.TensorType.Shape.Dim[0].DimParam = "batch_size";
        v.Type.TensorType.Shape.Dim[2].DimParam = seqDim;
        return v;
    }
}
