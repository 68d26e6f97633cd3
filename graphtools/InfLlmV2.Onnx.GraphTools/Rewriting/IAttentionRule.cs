using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools.Rewriting;

/// <summary>
/// A rewrite rule: <see cref="Match"/> (structure of one anchor node and its dataflow) →
/// <see cref="Check"/> (semantics; a match record or a refusal reason) → <see cref="Rewrite"/>.
/// Rules are stateless; everything Rewrite needs travels in the match record.
/// </summary>
public interface IAttentionRule
{
    /// <summary>The form this rule handles.</summary>
    AttentionForm Form { get; }

    /// <summary>Whether <paramref name="node"/> is the anchor of this form.</summary>
    bool Match(GraphIndex graph, NodeProto node);

    /// <summary>Checks a matched node; returns the facts needed to rewrite it, or why it cannot be.</summary>
    RuleCheck Check(GraphIndex graph, NodeProto node, RewriteOptions options);

    /// <summary>Replaces the matched attention with SwitchableAttention.</summary>
    void Rewrite(RewriteContext context, AttentionMatch match);
}

/// <summary>Facts established by a rule's check.</summary>
/// <param name="Node">The anchor node.</param>
/// <param name="NumHeads">Query heads.</param>
/// <param name="KvNumHeads">Key/value heads.</param>
/// <param name="HeadSize">Head size when known.</param>
public record AttentionMatch(NodeProto Node, int NumHeads, int KvNumHeads, int? HeadSize)
{
    /// <summary>What the user should know about how this site is rewritten (e.g. dense-only), or null.</summary>
    public string? Note { get; init; }
}

/// <summary>Result of <see cref="IAttentionRule.Check"/>: a match, or a refusal with what is known.</summary>
/// <param name="Match">The match when rewritable.</param>
/// <param name="Reason">Refusal reason otherwise.</param>
/// <param name="NumHeads">Query heads when known.</param>
/// <param name="KvNumHeads">Key/value heads when known.</param>
/// <param name="HeadSize">Head size when known.</param>
public sealed record RuleCheck(AttentionMatch? Match, string? Reason, int? NumHeads, int? KvNumHeads, int? HeadSize)
{
    /// <summary>The attention's operands (query, key, value...) when the rule identified them; null: the anchor's inputs.</summary>
    public IReadOnlyList<string>? Operands { get; init; }

    /// <summary>A rewritable result.</summary>
    public static RuleCheck Accept(AttentionMatch m) => new(m, null, m.NumHeads, m.KvNumHeads, m.HeadSize);

    /// <summary>A refusal.</summary>
    public static RuleCheck Refuse(string reason, int? heads = null, int? kvHeads = null, int? headSize = null) =>
        new(null, reason, heads, kvHeads, headSize);
}
