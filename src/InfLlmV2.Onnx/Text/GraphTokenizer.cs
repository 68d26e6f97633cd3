using Google.Protobuf;
using InfLlmV2.Onnx.GraphTools.Proto;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Text;

/// <summary>
/// Runs a folder's <see cref="TokenizerGraphs"/> in ONNX Runtime with the Extensions library
/// registered: text to ids, ids to text. Thread safe (ORT sessions run concurrently).
/// </summary>
internal sealed class GraphTokenizer : IDisposable
{
    private readonly InferenceSession _encoder, _decoder;

    private GraphTokenizer(InferenceSession encoder, InferenceSession decoder, TokenizerGraphs graphs)
    {
        _encoder = encoder;
        _decoder = decoder;
        Graphs = graphs;
    }

    public TokenizerGraphs Graphs { get; }

    /// <summary>Opens sessions over both graphs.</summary>
    /// <exception cref="OnnxRuntimeException">ONNX Runtime or the Extensions op refused a graph (the tokenizer files).</exception>
    public static GraphTokenizer Open(TokenizerGraphs graphs)
    {
        using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL, IntraOpNumThreads = 1 };
        options.RegisterExtensionsOps();
        var encoder = new InferenceSession(graphs.Encoder.ToByteArray(), options);
        try
        {
            var decoder = new InferenceSession(graphs.Decoder.ToByteArray(), options);
            return new GraphTokenizer(encoder, decoder, graphs);
        }
        catch
        {
            encoder.Dispose();
            throw;
        }
    }

    /// <summary>The ids of <paramref name="text"/> as the encoder graph gives them (special tokens as the tokenizer adds them).</summary>
    public int[] Encode(string text)
    {
        using var input = OrtValue.CreateFromStringTensor(new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<string>(new[] { text }, [1]));
        using var runOptions = new RunOptions();
        using var results = _encoder.Run(runOptions, [TokenizerGraphs.TextName], [input], [TokenizerGraphs.IdsOutputName]);
        var ids = results[0].GetTensorDataAsSpan<long>();
        var output = new int[ids.Length];
        for (int i = 0; i < ids.Length; i++)
        {
            if (ids[i] < 0 || ids[i] > ModelTokenizer.MaxTokenId)
                throw new InvalidDataException($"the tokenizer graph produced token id {ids[i]}, outside [0, {ModelTokenizer.MaxTokenId}]");
            output[i] = (int)ids[i];
        }
        return output;
    }

    /// <summary>
    /// The text of <paramref name="ids"/> (an incomplete UTF-8 character at the end reads as U+FFFD).
    /// Ids outside the decoder's table decode to nothing (a model's embedding often has more rows
    /// than its tokenizer has tokens, and a sampled id may fall there).
    /// </summary>
    public string Decode(IReadOnlyList<int> ids)
    {
        var data = new List<long>(ids.Count);
        foreach (var id in ids)
            if (id >= 0 && id < Graphs.VocabularySize) data.Add(id);
        if (data.Count == 0) return "";  // the decoder op divides by the sequence length
        using var input = OrtValue.CreateTensorValueFromMemory(data.ToArray(), [data.Count]);
        using var runOptions = new RunOptions();
        using var results = _decoder.Run(runOptions, [TokenizerGraphs.IdsInputName], [input], [TokenizerGraphs.TextName]);
        return results[0].GetStringElement(0);
    }

    public void Dispose()
    {
        _encoder.Dispose();
        _decoder.Dispose();
    }
}
