using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InfLlmV2.Onnx.Session;

/// <summary>The inputs of one decoder step other than the cache, and its batch and step length.</summary>
/// <param name="Names">Input names (input_ids, attention_mask, ...).</param>
/// <param name="Values">Input values, one per name; owned by the caller.</param>
/// <param name="Batch">Requests in the step.</param>
/// <param name="Seq">Tokens per request in the step (padded to the longest).</param>
internal sealed record StepInputs(IReadOnlyList<string> Names, IReadOnlyList<OrtValue> Values, int Batch, int Seq);

/// <summary>
/// Where a session's KV cache (and compressed-key state) lives between steps: it binds the cache as
/// every layer's past inputs, runs the step, keeps the presents and returns the logits.
/// </summary>
internal interface IKvCache : IDisposable
{
    /// <summary>
    /// Runs one step and returns its logits, [Batch, Seq, vocab] row-major, as floats; with selection
    /// capture, <paramref name="selected"/> holds each exposed layer's selected_blocks [Batch, Hkv, Seq, K].
    /// </summary>
    float[] Run(StepInputs step, out int vocab, out int[][]? selected);
}

/// <summary>The two cache strategies and the output names both bind.</summary>
internal static class KvCache
{
    /// <summary>A shared-buffer cache when <paramref name="shared"/>, else a growing one.</summary>
    public static IKvCache Create(DecoderModel model, int batch, int capacity, bool shared, bool captureSelection = false) =>
        shared ? new SharedKvCache(model, batch, capacity, captureSelection) : new GrowingKvCache(model, batch, captureSelection);

    /// <summary>The exposed selected_blocks outputs, in layer order (after <see cref="OutputNames"/>' presents).</summary>
    public static List<string> SelectionNames(DecoderModel m) =>
        Enumerable.Range(0, m.SelectionLayers).Select(l => string.Format(m.Names.SelectedBlocks, l)).ToList();

    /// <summary>Logits, then per layer present key, present value and (with compressed state) present compressed key.</summary>
    public static List<string> OutputNames(DecoderModel m)
    {
        var names = new List<string> { m.Names.Logits };
        for (int l = 0; l < m.Layers; l++)
        {
            names.Add(string.Format(m.Names.PresentKey, l));
            names.Add(string.Format(m.Names.PresentValue, l));
            if (m.HasCompressedState) names.Add(string.Format(m.Names.PresentCompressedKey, l));
        }
        return names;
    }

    /// <summary>Per layer past key, past value and (with compressed state) past compressed key: the order of <see cref="OutputNames"/>' presents.</summary>
    public static List<string> PastNames(DecoderModel m)
    {
        var names = new List<string>();
        for (int l = 0; l < m.Layers; l++)
        {
            names.Add(string.Format(m.Names.PastKey, l));
            names.Add(string.Format(m.Names.PastValue, l));
            if (m.HasCompressedState) names.Add(string.Format(m.Names.PastCompressedKey, l));
        }
        return names;
    }
}

/// <summary>
/// Per layer one preallocated [B, Hkv, capacity, D] buffer (and compressed-key buffer) bound as both
/// past and present: the op appends in place, nothing is copied between steps.
/// </summary>
internal sealed class SharedKvCache : IKvCache
{
    private readonly DecoderModel _model;
    private readonly List<string> _pastNames, _outputNames;
    // Past i and present i are the same buffer, in PastNames order.
    private readonly OrtValue[] _buffers;
    private readonly List<string> _selectionNames;
    private readonly List<CacheTensor> _owned = [];

    public SharedKvCache(DecoderModel model, int batch, int capacity, bool captureSelection)
    {
        _model = model;
        _pastNames = KvCache.PastNames(model);
        _selectionNames = captureSelection ? KvCache.SelectionNames(model) : [];
        _outputNames = [.. KvCache.OutputNames(model), .. _selectionNames];
        long[] kvShape = [batch, model.KvNumHeads, capacity, model.HeadSize];
        long[] compressedShape = [batch, model.KvNumHeads, model.CompressedKeys(capacity), model.HeadSize];
        int perLayer = model.HasCompressedState ? 3 : 2;
        try
        {
            _buffers = Enumerable.Range(0, _pastNames.Count).Select(i => Zeros(i % perLayer == 2 ? compressedShape : kvShape)).ToArray();
        }
        catch
        {
            Dispose();  // the buffers made before the failure
            throw;
        }
    }

    public float[] Run(StepInputs step, out int vocab, out int[][]? selected)
    {
        var names = _model.Names;
        // selected_blocks outputs: one [B, Hkv, S, K] int32 buffer per exposed layer, bound for this step only.
        selected = _selectionNames.Count == 0 ? null
            : Enumerable.Range(0, _selectionNames.Count).Select(l => new int[step.Batch * _model.KvNumHeads * step.Seq * _model.SelectionBudget(l)]).ToArray();
        var selectionValues = selected is null ? []
            : selected.Select((buffer, l) => OrtValue.CreateTensorValueFromMemory(buffer, [step.Batch, _model.KvNumHeads, step.Seq, _model.SelectionBudget(l)])).ToList();
        try
        {
            return RunBound(step, out vocab, selectionValues);
        }
        finally
        {
            foreach (var v in selectionValues) v.Dispose();
        }
    }

    private float[] RunBound(StepInputs step, out int vocab, List<OrtValue> selectionValues)
    {
        var names = _model.Names;
        vocab = (int)_model.Session.OutputMetadata[names.Logits].Dimensions[^1];
        if (vocab <= 0) throw new InvalidDataException("The logits output needs a fixed vocabulary dimension for shared-buffer decoding");
        long[] shape = [step.Batch, step.Seq, vocab];
        int count = step.Batch * step.Seq * vocab;
        using var runOptions = new RunOptions();
        var inNames = step.Names.Concat(_pastNames).ToList();
        var inValues = step.Values.Concat(_buffers).ToList();
        if (_model.LogitsType == TensorElementType.Float16)
        {
            var half = new Float16[count];
            using (var logits = OrtValue.CreateTensorValueFromMemory(half, shape))
                _model.Session.Run(runOptions, inNames, inValues, _outputNames, [logits, .. _buffers, .. selectionValues]);
            return half.Select(x => (float)x).ToArray();
        }
        var single = new float[count];
        using (var logits = OrtValue.CreateTensorValueFromMemory(single, shape))
            _model.Session.Run(runOptions, inNames, inValues, _outputNames, [logits, .. _buffers, .. selectionValues]);
        return single;
    }

    // Zero-filled native buffers, huge pages where the kernel gives them (CacheTensor).
    private OrtValue Zeros(long[] shape)
    {
        var t = new CacheTensor(_model.CacheType, shape);
        _owned.Add(t);
        return t.Value;
    }

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
        _owned.Clear();
    }
}

/// <summary>
/// The previous step's present outputs are the next step's past inputs; the first step binds empty
/// [B, Hkv, 0, D] pasts. The cache grows (and is copied) by the step's tokens each step.
/// </summary>
internal sealed class GrowingKvCache : IKvCache
{
    private readonly DecoderModel _model;
    private readonly int _batch;
    private readonly List<string> _pastNames, _outputNames;
    // The previous step's outputs: logits, then the presents in PastNames order.
    private IDisposableReadOnlyCollection<OrtValue>? _previous;

    private readonly int _selections;

    public GrowingKvCache(DecoderModel model, int batch, bool captureSelection)
    {
        _model = model;
        _batch = batch;
        _pastNames = KvCache.PastNames(model);
        var selectionNames = captureSelection ? KvCache.SelectionNames(model) : [];
        _selections = selectionNames.Count;
        _outputNames = [.. KvCache.OutputNames(model), .. selectionNames];
    }

    public float[] Run(StepInputs step, out int vocab, out int[][]? selected)
    {
        var empty = new List<OrtValue>();
        try
        {
            var pasts = Enumerable.Range(0, _pastNames.Count).Select(i => _previous?[1 + i] ?? Track(EmptyCache(), empty));
            using var runOptions = new RunOptions();
            var results = _model.Session.Run(runOptions, step.Names.Concat(_pastNames).ToList(), step.Values.Concat(pasts).ToList(), _outputNames);
            _previous?.Dispose();
            _previous = results;
        }
        finally
        {
            foreach (var v in empty) v.Dispose();
        }
        // The selections follow the presents; copied out (the results are kept as the next step's pasts).
        selected = _selections == 0 ? null
            : Enumerable.Range(0, _selections).Select(l => _previous[1 + _pastNames.Count + l].GetTensorDataAsSpan<int>().ToArray()).ToArray();
        var info = _previous[0].GetTensorTypeAndShape();
        vocab = (int)info.Shape[^1];
        return info.ElementDataType == TensorElementType.Float16
            ? _previous[0].GetTensorDataAsSpan<Float16>().ToArray().Select(h => (float)h).ToArray()
            : _previous[0].GetTensorDataAsSpan<float>().ToArray();
    }

    private OrtValue EmptyCache() =>
        _model.CacheType == TensorElementType.Float16
            ? OrtValue.CreateTensorValueFromMemory(Array.Empty<Float16>(), [_batch, _model.KvNumHeads, 0, _model.HeadSize])
            : OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [_batch, _model.KvNumHeads, 0, _model.HeadSize]);

    private static OrtValue Track(OrtValue v, List<OrtValue> list)
    {
        list.Add(v);
        return v;
    }

    public void Dispose() => _previous?.Dispose();
}
