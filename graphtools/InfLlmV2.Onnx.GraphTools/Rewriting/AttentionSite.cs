namespace InfLlmV2.Onnx.GraphTools.Rewriting;

/// <summary>The attention forms the rewriter recognizes.</summary>
public enum AttentionForm
{
    /// <summary><c>com.microsoft::GroupQueryAttention</c> (genai model builder, ORT optimizer).</summary>
    GroupQueryAttention,

    /// <summary>ONNX <c>Attention</c> (opset 23/24).</summary>
    OnnxAttention,

    /// <summary><c>com.microsoft::MultiHeadAttention</c> (genai builder MHA form).</summary>
    MultiHeadAttention,

    /// <summary>Decomposed MatMul → Softmax → MatMul attention.</summary>
    Decomposed,

    /// <summary>Legacy <c>com.microsoft::Attention</c> (ORT transformers optimizer: fused QKV weights, packed 5-D past/present).</summary>
    LegacyAttention,

    /// <summary>Attention no rule handles (an attention op of another kind, or a Softmax between two products in another form): always refused, with what was found.</summary>
    Unrecognized,
}

/// <summary>One attention found in a model, and whether/why it was (or can be) rewritten.</summary>
/// <param name="Graph">Name of the (sub)graph holding it.</param>
/// <param name="Node">Name of the anchor node (informational only; matching never uses names).</param>
/// <param name="Form">Recognized form.</param>
/// <param name="NumHeads">Query heads when known.</param>
/// <param name="KvNumHeads">Key/value heads when known.</param>
/// <param name="HeadSize">Head size when known.</param>
/// <param name="Rewritable">Whether a rule accepts it.</param>
/// <param name="Reason">Why a rule refuses it (null when rewritable).</param>
/// <param name="Rewritten">Whether this run rewrote it.</param>
/// <param name="Note">How a rewritable site is rewritten when that needs saying (e.g. dense-only), else null.</param>
public sealed record AttentionSite(string Graph, string Node, AttentionForm Form, int? NumHeads, int? KvNumHeads, int? HeadSize,
    bool Rewritable, string? Reason, bool Rewritten, string? Note = null)
{
    /// <summary>The attention's operands (query, key, value, caches; the anchor's inputs when the rule names none) and their shapes as the shape pass knows them.</summary>
    public IReadOnlyList<SiteShape> Shapes { get; init; } = [];
}

/// <summary>One operand of an attention site and its shape.</summary>
/// <param name="Value">The value's name in the graph.</param>
/// <param name="Shape">Its shape, e.g. <c>[batch_size, 4, sequence_length, 16]</c> (symbols for symbolic dims, "?" for unknown ones or an unknown rank).</param>
public sealed record SiteShape(string Value, string Shape);
