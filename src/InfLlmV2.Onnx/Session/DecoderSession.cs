using InfLlmV2.Onnx.OpContract;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InfLlmV2.Onnx.Session;

/// <summary>
/// Settings of one <see cref="DecoderSession"/>. Its steps run on the threads of its model's ONNX
/// Runtime session, set when the model is opened (<see cref="DecoderModel.Open"/>'s <c>threads</c>;
/// default every core).
/// </summary>
public sealed record DecoderSessionOptions
{
    /// <summary>Requests decoded together (ragged: each keeps its own length).</summary>
    public int BatchSize { get; init; } = 1;

    /// <summary>Most tokens a request may hold (prompt + generated): the preallocated KV capacity.</summary>
    public int Capacity { get; init; } = 4096;

    /// <summary>Prompts longer than this are prefilled in chunks (batch size 1 only, as GQA requires).</summary>
    public int ChunkSize { get; init; } = 2048;

    /// <summary>Dense/sparse routing per phase.</summary>
    public RoutingPolicy Routing { get; init; } = RoutingPolicy.Auto;

    /// <summary>Bind one KV buffer as both past and present (null: whenever the model supports it).</summary>
    public bool? SharedBuffers { get; init; }

    /// <summary>
    /// Called after every step with the blocks each layer's attention selected, when the model exposes
    /// them (<see cref="DecoderModel.SelectionLayers"/> &gt; 0, a model rewritten with --expose-selection);
    /// null: the selection is not fetched.
    /// </summary>
    public Action<StepSelection>? OnSelection { get; init; }
}

/// <summary>The blocks every exposed layer selected in one step (docs/op-spec.md, output <c>selected_blocks</c>).</summary>
/// <param name="PastLengths">Tokens each request held before the step: query row s of request b is at position PastLengths[b] + s.</param>
/// <param name="StepLengths">Tokens each request appended in the step (rows beyond are padding).</param>
/// <param name="Seq">Query rows per request in the step (the longest request's tokens).</param>
/// <param name="KvHeads">Key/value heads.</param>
/// <param name="Modes">The mode each request ran in.</param>
/// <param name="Layers">Per layer, its <c>selected_blocks</c> [batch, KvHeads, Seq, K] row-major (−1-padded; all −1 in dense mode).</param>
/// <param name="Budgets">Per layer, K.</param>
public sealed record StepSelection(IReadOnlyList<int> PastLengths, IReadOnlyList<int> StepLengths, int Seq, int KvHeads,
    IReadOnlyList<AttentionMode> Modes, IReadOnlyList<int[]> Layers, IReadOnlyList<int> Budgets)
{
    /// <summary>The selection row of <paramref name="layer"/>, request <paramref name="request"/>, kv head <paramref name="kvHead"/>, query row <paramref name="row"/>.</summary>
    public ReadOnlySpan<int> Row(int layer, int request, int kvHead, int row)
    {
        int k = Budgets[layer];
        return Layers[layer].AsSpan((((request * KvHeads) + kvHead) * Seq + row) * k, k);
    }
}

/// <summary>
/// One batch of requests over a <see cref="DecoderModel"/>: owns the KV cache (and compressed-key
/// state) and every per-step input, sends prefill and decode steps through the routing policy, and
/// exposes onnxruntime-genai-like verbs: <see cref="AppendTokens(ReadOnlySpan{int})"/>,
/// <see cref="NextToken"/>, <see cref="RewindTo"/>. Not thread-safe itself; distinct sessions may
/// run concurrently over one model.
/// </summary>
public sealed class DecoderSession : IDisposable
{
    private readonly DecoderModel _model;
    private readonly DecoderSessionOptions _options;
    private readonly int[] _lengths;
    private readonly AttentionMode?[] _modes;
    private readonly float[]?[] _lastLogits;
    private readonly bool _shared;
    private readonly IKvCache _cache;
    private bool _disposed;

    /// <summary>Creates a session with empty caches.</summary>
    /// <exception cref="ArgumentException">Bad options, or a routing the model cannot express.</exception>
    public DecoderSession(DecoderModel model, DecoderSessionOptions? options = null)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _options = options ?? new DecoderSessionOptions();
        if (_options.BatchSize < 1) throw new ArgumentException($"BatchSize must be >= 1, got {_options.BatchSize}");
        if (_options.Capacity < 1) throw new ArgumentException($"Capacity must be >= 1, got {_options.Capacity}");
        if (_options.ChunkSize < 1) throw new ArgumentException($"ChunkSize must be >= 1, got {_options.ChunkSize}");
        CheckRouting(_options.Routing);
        Routing = _options.Routing;
        _shared = _options.SharedBuffers ?? model.SupportsSharedBuffers;
        if (_shared && !model.SupportsSharedBuffers)
            throw new ArgumentException("This model's attention cannot share past/present buffers; use SharedBuffers = false");
        int b = _options.BatchSize;
        _lengths = new int[b];
        _modes = new AttentionMode?[b];
        _lastLogits = new float[b][];
        _cache = KvCache.Create(model, b, _options.Capacity, _shared, _options.OnSelection is not null && model.SelectionLayers > 0);
    }

    /// <summary>The model.</summary>
    public DecoderModel Model => _model;

    /// <summary>Requests in this session.</summary>
    public int BatchSize => _options.BatchSize;

    /// <summary>Most tokens a request may hold.</summary>
    public int Capacity => _options.Capacity;

    // The length a request can grow to: the capacity, or the model's positions when fewer.
    internal long LengthLimit => Math.Min(_options.Capacity, _model.MaxPositions ?? long.MaxValue);

    /// <summary>Tokens held per request.</summary>
    public IReadOnlyList<int> Lengths => _lengths;

    /// <summary>
    /// Mode each request's last step ran in (<see cref="AttentionMode.Dense"/> or <see cref="AttentionMode.Sparse"/>,
    /// see <see cref="DecoderModel.ModeFor"/>); null before its first step.
    /// </summary>
    public IReadOnlyList<AttentionMode?> LastModes => _modes;

    /// <summary>Whether past and present share one preallocated buffer.</summary>
    public bool UsesSharedBuffers => _shared;

    /// <summary>Routing of the next steps (may change between steps).</summary>
    public RoutingPolicy Routing
    {
        get;
        set { CheckRouting(value); field = value; }
    }

    /// <summary>Logits of request <paramref name="request"/>'s last token (null after <see cref="RewindTo"/> or before any step).</summary>
    public float[]? LastLogits(int request = 0) => _lastLogits[request];

    /// <summary>Appends tokens to the single request (prefill; chunked when longer than ChunkSize).</summary>
    public void AppendTokens(ReadOnlySpan<int> tokens)
    {
        if (BatchSize != 1) throw new InvalidOperationException("AppendTokens(span) is for batch size 1; pass one array per request");
        AppendTokens([tokens.ToArray()]);
    }

    /// <summary>
    /// Appends tokens per request. The first call on an empty batch is one ragged prompt step;
    /// later calls with batch size &gt; 1 must append the same number of tokens to every request.
    /// </summary>
    public void AppendTokens(IReadOnlyList<int[]> tokensPerRequest)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (tokensPerRequest.Count != BatchSize) throw new ArgumentException($"Expected {BatchSize} token arrays, got {tokensPerRequest.Count}");
        if (tokensPerRequest.Any(t => t.Length == 0)) throw new ArgumentException("Every request needs at least one token");
        for (int b = 0; b < BatchSize; b++)
            if (_lengths[b] + tokensPerRequest[b].Length > LengthLimit)
                throw new InvalidOperationException($"Request {b}: {_lengths[b]} + {tokensPerRequest[b].Length} tokens exceed " + (_options.Capacity == LengthLimit
                    ? $"the capacity {_options.Capacity}"
                    : $"the model's {LengthLimit} positions (the rows of its position table)"));
        foreach (var step in RoutingPolicy.Steps(tokensPerRequest, _lengths.All(l => l == 0), _options.ChunkSize))
            Step(step);
    }

    /// <summary>Decodes one token for the single request and returns its logits.</summary>
    public float[] NextToken(int token)
    {
        AppendTokens([token]);
        return _lastLogits[0]!;
    }

    /// <summary>Decodes one token per request; returns each request's logits.</summary>
    public float[][] NextTokens(IReadOnlyList<int> tokens)
    {
        AppendTokens(tokens.Select(t => new[] { t }).ToList());
        return _lastLogits.Select(l => l!).ToArray();
    }

    /// <summary>Forgets every token after the first <paramref name="length"/> of each request.</summary>
    public void RewindTo(int length)
    {
        if (length < 0) throw new ArgumentOutOfRangeException(nameof(length));
        for (int b = 0; b < BatchSize; b++)
        {
            if (length < _lengths[b]) { _lengths[b] = length; _lastLogits[b] = null; }
        }
    }

    private void CheckRouting(RoutingPolicy routing)
    {
        ArgumentNullException.ThrowIfNull(routing);
        if ((routing.Prefill != AttentionMode.Auto || routing.Decode != AttentionMode.Auto) && !_model.HasAttentionModeInput)
        {
            if (_model.IsRewritten)
                throw new ArgumentException("Forcing dense/sparse needs a model rewritten with --attention-mode-input");
            if (routing.Prefill == AttentionMode.Sparse || routing.Decode == AttentionMode.Sparse)
                throw new ArgumentException("An unrewritten model has no sparse mode");
        }
    }

    private void Step(IReadOnlyList<int[]> tokens)
    {
        var m = _model;
        var names = m.Names;
        int batch = BatchSize, seq = tokens.Max(t => t.Length);
        var mode = Routing.ModeOf(seq, _lengths.All(l => l == 0));
        var newLengths = _lengths.Select((l, b) => l + tokens[b].Length).ToArray();
        int width = newLengths.Max();

        var inNames = new List<string>();
        var inValues = new List<OrtValue>();
        void Add(string name, OrtValue v) { inNames.Add(name); inValues.Add(v); }
        try
        {
            var ids = new long[batch * seq];
            var positions = new long[batch * seq];
            for (int b = 0; b < batch; b++)
                for (int s = 0; s < seq; s++)
                {
                    ids[b * seq + s] = s < tokens[b].Length ? tokens[b][s] : 0;
                    positions[b * seq + s] = s < tokens[b].Length ? _lengths[b] + s : 0;
                }
            Add(names.InputIds, IntTensor(m.InputIdsType, ids, [batch, seq]));
            var mask = AttentionMaskRows(newLengths, width);
            Add(names.AttentionMask, IntTensor(m.Session.InputMetadata[names.AttentionMask].ElementDataType, mask, [batch, width]));
            if (m.HasPositionIds) Add(names.PositionIds, IntTensor(m.Session.InputMetadata[names.PositionIds].ElementDataType, positions, [batch, seq]));
            if (m.HasAttentionModeInput) Add(names.AttentionMode, OrtValue.CreateTensorValueFromMemory(new[] { (int)mode }, []));

            var pastLengths = _lengths.ToArray();
            var logits = _cache.Run(new StepInputs(inNames, inValues, batch, seq), out int vocab, out var selected);
            for (int b = 0; b < batch; b++)
            {
                int last = tokens[b].Length - 1;
                _lastLogits[b] = logits.AsSpan((b * seq + last) * vocab, vocab).ToArray();
                _lengths[b] = newLengths[b];
                _modes[b] = m.ModeFor(mode, newLengths[b]);
            }
            if (selected is not null)
                _options.OnSelection?.Invoke(new StepSelection(pastLengths, tokens.Select(t => t.Length).ToArray(), seq, m.KvNumHeads,
                    _modes.Select(x => x ?? AttentionMode.Dense).ToArray(), selected, Enumerable.Range(0, m.SelectionLayers).Select(m.SelectionBudget).ToArray()));
        }
        finally
        {
            foreach (var v in inValues) v.Dispose();
        }
    }

    /// <summary>
    /// The <c>attention_mask</c> a session feeds, [lengths.Count, width] row-major: row b is
    /// <c>lengths[b]</c> ones then zeros (no left padding, ever). Models rewritten from masks built out
    /// of attention_mask take <c>seqlens_k = ReduceSum(attention_mask) − 1</c>, which is exact for
    /// exactly this form (docs/op-spec.md); <c>compare</c> and <c>generate</c> drive both models through it.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A length is negative or exceeds <paramref name="width"/>.</exception>
    public static long[] AttentionMaskRows(IReadOnlyList<int> lengths, int width)
    {
        ArgumentNullException.ThrowIfNull(lengths);
        var mask = new long[lengths.Count * width];
        for (int b = 0; b < lengths.Count; b++)
        {
            if (lengths[b] < 0 || lengths[b] > width)
                throw new ArgumentOutOfRangeException(nameof(lengths), $"length {lengths[b]} of batch entry {b} is outside [0, {width}]");
            for (int t = 0; t < lengths[b]; t++) mask[b * width + t] = 1;
        }
        return mask;
    }

    private static OrtValue IntTensor(TensorElementType type, long[] data, long[] shape) =>
        type == TensorElementType.Int32
            ? OrtValue.CreateTensorValueFromMemory(data.Select(x => (int)x).ToArray(), shape)
            : OrtValue.CreateTensorValueFromMemory(data, shape);

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _cache.Dispose();
    }
}
