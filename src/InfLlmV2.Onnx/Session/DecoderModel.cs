using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.OpContract;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InfLlmV2.Onnx.Session;

/// <summary>Names of a decoder's inputs and outputs (onnxruntime-genai and optimum conventions by default).</summary>
public sealed record DecoderNames
{
    /// <summary>Token ids input [B, S].</summary>
    public string InputIds { get; init; } = "input_ids";

    /// <summary>Attention mask input [B, total].</summary>
    public string AttentionMask { get; init; } = "attention_mask";

    /// <summary>Optional position ids input [B, S].</summary>
    public string PositionIds { get; init; } = "position_ids";

    /// <summary>Logits output [B, S, vocab].</summary>
    public string Logits { get; init; } = "logits";

    /// <summary>Past key of layer {0}.</summary>
    public string PastKey { get; init; } = "past_key_values.{0}.key";

    /// <summary>Past value of layer {0}.</summary>
    public string PastValue { get; init; } = "past_key_values.{0}.value";

    /// <summary>Present key of layer {0}.</summary>
    public string PresentKey { get; init; } = "present.{0}.key";

    /// <summary>Present value of layer {0}.</summary>
    public string PresentValue { get; init; } = "present.{0}.value";

    /// <summary>Past compressed keys of layer {0} (models rewritten with --compressed-state).</summary>
    public string PastCompressedKey { get; init; } = "past_key_values.{0}.compressed_key";

    /// <summary>Present compressed keys of layer {0}.</summary>
    public string PresentCompressedKey { get; init; } = "present.{0}.compressed_key";

    /// <summary>The <c>selected_blocks</c> output of layer {0} (models rewritten with --expose-selection).</summary>
    public string SelectedBlocks { get; init; } = "selected_blocks.{0}";

    /// <summary>Shared attention_mode input (models rewritten with --attention-mode-input).</summary>
    public string AttentionMode { get; init; } = "attention_mode";
}

/// <summary>
/// A decoder-only LLM in ONNX (original or rewritten) opened for generation: one
/// <see cref="InferenceSession"/> shared by any number of <see cref="DecoderSession"/>s, plus what was
/// learned from its graph (layers, KV layout, element type, SwitchableAttention settings).
/// </summary>
public sealed class DecoderModel : IDisposable
{
    private readonly bool _ownsSession;

    private DecoderModel(InferenceSession session, bool ownsSession, ModelProto? graph, DecoderNames names)
    {
        Session = session;
        _ownsSession = ownsSession;
        Names = names;
        var inputs = session.InputMetadata;
        var outputs = session.OutputMetadata;
        foreach (var required in new[] { names.InputIds, names.AttentionMask })
            if (!inputs.ContainsKey(required))
                throw new InvalidDataException($"The model has no '{required}' input (inputs: {string.Join(", ", inputs.Keys)})");
        if (!outputs.ContainsKey(names.Logits)) throw new InvalidDataException($"The model has no '{names.Logits}' output");
        int layers = 0;
        while (inputs.ContainsKey(string.Format(names.PastKey, layers))) layers++;
        if (layers == 0) throw new InvalidDataException($"The model has no past key inputs named like '{names.PastKey}'");
        Layers = layers;
        var pk = inputs[string.Format(names.PastKey, 0)];
        if (pk.Dimensions.Length != 4 || pk.Dimensions[1] <= 0 || pk.Dimensions[3] <= 0)
            throw new InvalidDataException($"Past key input must be [batch, kv_heads, past, head_size] with fixed heads and head size, got [{string.Join(",", pk.Dimensions)}]");
        KvNumHeads = pk.Dimensions[1];
        HeadSize = pk.Dimensions[3];
        CacheType = pk.ElementDataType;
        if (CacheType is not (TensorElementType.Float or TensorElementType.Float16))
            throw new InvalidDataException($"KV cache element type {CacheType} is not supported (fp32, fp16)");
        LogitsType = outputs[names.Logits].ElementDataType;
        InputIdsType = inputs[names.InputIds].ElementDataType;
        HasPositionIds = inputs.ContainsKey(names.PositionIds);
        HasAttentionModeInput = inputs.ContainsKey(names.AttentionMode);
        HasCompressedState = inputs.ContainsKey(string.Format(names.PastCompressedKey, 0));
        int exposed = 0;
        while (outputs.ContainsKey(string.Format(names.SelectedBlocks, exposed))) exposed++;
        SelectionLayers = exposed;
        var known = new HashSet<string> { names.InputIds, names.AttentionMask, names.PositionIds, names.AttentionMode };
        for (int l = 0; l < layers; l++)
        {
            known.Add(string.Format(names.PastKey, l)); known.Add(string.Format(names.PastValue, l));
            known.Add(string.Format(names.PastCompressedKey, l));
            foreach (var o in new[] { names.PresentKey, names.PresentValue })
                if (!outputs.ContainsKey(string.Format(o, l))) throw new InvalidDataException($"The model has no '{string.Format(o, l)}' output");
        }
        var unknown = inputs.Keys.Where(k => !known.Contains(k)).ToList();
        if (unknown.Count > 0) throw new InvalidDataException($"The model has inputs this session cannot feed: {string.Join(", ", unknown)}");

        // Graph facts: attention ops and their sparse settings; shared-buffer support; position limit.
        if (graph is not null)
        {
            MaxPositions = PositionTableRows(graph.Graph, names.PositionIds);
            var attention = graph.Graph.Node.Where(n => SwitchableAttentionOp.Is(n) || n.OpType == "GroupQueryAttention").ToList();
            SwitchableNodes = graph.Graph.Node.Where(SwitchableAttentionOp.Is).Select(SparseAttentionSettings.Of).ToList();
            // Past/present may share one buffer only if every past feeds a GQA-contract op's past input.
            var pastInputs = Enumerable.Range(0, layers).SelectMany(l => new[] { string.Format(names.PastKey, l), string.Format(names.PastValue, l) }).ToHashSet();
            SupportsSharedBuffers = pastInputs.All(p =>
            {
                var consumers = graph.Graph.Node.Where(n => n.Input.Contains(p)).ToList();
                return consumers.Count > 0 && consumers.All(n => attention.Contains(n) && (n.Input.IndexOf(p) is SwitchableAttentionOp.Inputs.PastKey or SwitchableAttentionOp.Inputs.PastValue));
            });
        }
    }

    // Positions the graph can encode: the rows of its position table, i.e. the rotary cos table of
    // GroupQueryAttention/SwitchableAttention with do_rotary = 1 (input 7) or of a RotaryEmbedding
    // node, or any 2-D constant table gathered (axis 0) by the position_ids input (rotary in plain
    // ops, learned position embeddings); the smallest when there are several; null when none is a
    // constant of the graph.
    private static long? PositionTableRows(GraphProto g, string positionIds)
    {
        var constants = new Dictionary<string, TensorProto>();
        foreach (var t in g.Initializer) constants.TryAdd(t.Name, t);
        foreach (var n in g.Node)
            if (n.OpType == "Constant" && n.Output.Count == 1 && n.Attribute.FirstOrDefault(a => a.Name == "value")?.T is { } t)
                constants.TryAdd(n.Output[0], t);
        long? rows = null;
        foreach (var n in g.Node)
        {
            int table = n.OpType switch
            {
                "GroupQueryAttention" or SwitchableAttentionOp.OpType when n.Attribute.Any(a => a.Name == SwitchableAttentionOp.Attributes.DoRotary && a.I == 1) => SwitchableAttentionOp.Inputs.CosCache,
                "RotaryEmbedding" => n.Domain == "com.microsoft" ? 2 : 1,
                "Gather" when n.Input.Count == 2 && n.Input[1] == positionIds && !n.Attribute.Any(a => a.Name == "axis" && a.I != 0) => 0,
                _ => -1,
            };
            if (table >= 0 && table < n.Input.Count && constants.TryGetValue(n.Input[table], out var t) && t.Dims.Count == 2 && t.Dims[0] > 0)
                rows = Math.Min(rows ?? long.MaxValue, t.Dims[0]);
        }
        return rows;
    }

    /// <summary>
    /// Intra-op threads of the sessions <see cref="Open"/> makes when no count is given: every core of
    /// the machine (<see cref="Environment.ProcessorCount"/>), as <c>infllmv2 bench</c> runs. ONNX
    /// Runtime's own default (its physical-core count) ran every node on one thread on a 2-vCPU host.
    /// </summary>
    public static int DefaultThreads => Environment.ProcessorCount;

    /// <summary>Opens a model file with the SwitchableAttention op registered.</summary>
    /// <param name="path">The .onnx file (external data next to it).</param>
    /// <param name="options">Session options to use (the op library is registered on them); null for defaults.</param>
    /// <param name="names">Input/output naming; null for the genai/optimum convention.</param>
    /// <param name="threads">
    /// Intra-op threads of the session (ORT's nodes and the op's parallel loops): set on
    /// <paramref name="options"/> when given; when null, <see cref="DefaultThreads"/> for the options this
    /// method makes, and the caller's own <see cref="SessionOptions.IntraOpNumThreads"/> otherwise.
    /// </param>
    public static DecoderModel Open(string path, SessionOptions? options = null, DecoderNames? names = null, int? threads = null)
    {
        if (threads is < 1) throw new ArgumentOutOfRangeException(nameof(threads), threads, "threads must be at least 1");
        var graph = OnnxModelFile.Load(path);
        // ORT opens the external data files itself: each is checked first (a regular file inside the
        // model's folder, the range inside it), so no FIFO blocks and no device is read without end.
        ModelWriter.CheckExternalData(graph, path);
        SessionOptions? own = null;
        if (options is null)
        {
            own = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };  // ORT's message comes back in the exception: no second, coloured log line
            options = own;
            threads ??= DefaultThreads;
        }
        try
        {
            if (threads is int n) options.IntraOpNumThreads = n;
            options.RegisterInfLlmV2Ops();
            options.RegisterExtensionsOpsIfImported(graph);
            var session = new InferenceSession(path, options);
            try
            {
                return new DecoderModel(session, ownsSession: true, graph, names ?? new DecoderNames()) { Threads = threads };
            }
            catch
            {
                session.Dispose();
                throw;
            }
        }
        finally
        {
            own?.Dispose();
        }
    }

    /// <summary>The intra-op thread count <see cref="Open"/> set on the session, or null where the caller's options decided.</summary>
    public int? Threads { get; private init; }

    /// <summary>The ORT session (thread-safe Run; shared by all decoder sessions of this model).</summary>
    public InferenceSession Session { get; }

    /// <summary>Input/output names.</summary>
    public DecoderNames Names { get; }

    /// <summary>Decoder layers (past key inputs).</summary>
    public int Layers { get; }

    /// <summary>Key/value heads.</summary>
    public int KvNumHeads { get; }

    /// <summary>Head size.</summary>
    public int HeadSize { get; }

    /// <summary>KV cache element type.</summary>
    public TensorElementType CacheType { get; }

    /// <summary>Logits element type.</summary>
    public TensorElementType LogitsType { get; }

    /// <summary>input_ids element type (int64 or int32).</summary>
    public TensorElementType InputIdsType { get; }

    /// <summary>Whether the model takes position_ids.</summary>
    public bool HasPositionIds { get; }

    /// <summary>Whether the model has the shared attention_mode input.</summary>
    public bool HasAttentionModeInput { get; }

    /// <summary>Whether the model carries compressed-key state per layer.</summary>
    public bool HasCompressedState { get; }

    /// <summary>
    /// How many layers expose their <c>selected_blocks</c> as graph outputs (<see cref="DecoderNames.SelectedBlocks"/>,
    /// models rewritten with --expose-selection); 0 when none does. <see cref="DecoderSessionOptions.OnSelection"/> reads them.
    /// </summary>
    public int SelectionLayers { get; }

    /// <summary>K, the last dimension of layer <paramref name="layer"/>'s exposed <c>selected_blocks</c> (from the output's shape, else the node's settings).</summary>
    public int SelectionBudget(int layer)
    {
        var dims = Session.OutputMetadata[string.Format(Names.SelectedBlocks, layer)].Dimensions;
        if (dims.Length == 4 && dims[3] > 0) return dims[3];
        return layer < SwitchableNodes.Count ? (int)SwitchableNodes[layer].BlockBudget : throw new InvalidDataException($"The K dimension of '{string.Format(Names.SelectedBlocks, layer)}' is unknown");
    }

    /// <summary>Whether the model's attention is SwitchableAttention.</summary>
    public bool IsRewritten => SwitchableNodes.Count > 0;

    /// <summary>The settings of each SwitchableAttention node of the main graph, in graph order (empty for an unrewritten model).</summary>
    public IReadOnlyList<SparseAttentionSettings> SwitchableNodes { get; } = [];

    /// <summary>Level-1 compressed keys of <paramref name="length"/> tokens (the most of any node): the rows of a compressed-key state.</summary>
    public long CompressedKeys(long length) => SwitchableNodes.Select(s => s.CompressedKeys(length)).DefaultIfEmpty(0).Max();

    /// <summary>
    /// Token positions the model can encode (the rows of its rotary cos table or position embedding), or null
    /// when its graph does not state them; a session refuses to grow a request beyond it.
    /// </summary>
    public long? MaxPositions { get; }

    /// <summary>Whether past and present caches can be one preallocated buffer (GQA-contract attention).</summary>
    public bool SupportsSharedBuffers { get; }

    /// <summary>
    /// The mode a request of <paramref name="totalLength"/> tokens runs in when <paramref name="requested"/>
    /// is asked for: <see cref="AttentionMode.Sparse"/> when at least one SwitchableAttention node runs
    /// sparse (each decides by its own settings, <see cref="SparseAttentionSettings.ModeFor"/>; a
    /// sliding-window layer is dense-only), else <see cref="AttentionMode.Dense"/> (every step of an
    /// unrewritten model).
    /// </summary>
    public AttentionMode ModeFor(AttentionMode requested, long totalLength) =>
        SwitchableNodes.Any(s => s.ModeFor(requested, totalLength) == AttentionMode.Sparse) ? AttentionMode.Sparse : AttentionMode.Dense;

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_ownsSession) Session.Dispose();
    }
}
