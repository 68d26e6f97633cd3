using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools.Rewriting.Rules;

/// <summary>
/// <c>com.microsoft::MultiHeadAttention</c>: recognized and reported, not rewritten (no rule yet:
/// it takes rotary from separate RotaryEmbedding nodes and a 4-D additive mask).
/// </summary>
public sealed class MultiHeadAttentionForm : IAttentionRule
{
    /// <inheritdoc/>
    public AttentionForm Form => AttentionForm.MultiHeadAttention;

    /// <inheritdoc/>
    public bool Match(GraphIndex graph, NodeProto node) => node.OpType == "MultiHeadAttention" && node.Domain == "com.microsoft";

    /// <inheritdoc/>
    public RuleCheck Check(GraphIndex graph, NodeProto node, RewriteOptions options)
    {
        var heads = (int?)node.Attribute.FirstOrDefault(a => a.Name == "num_heads")?.I;
        int? headSize = heads is > 0 && graph.StaticDim(node.Input[0], 2) is long hidden ? (int)(hidden / heads.Value) : null;
        return RuleCheck.Refuse("MultiHeadAttention: no rewrite rule for this form yet (convert to GroupQueryAttention first)", heads, heads, headSize);
    }

    /// <inheritdoc/>
    public void Rewrite(RewriteContext context, AttentionMatch match) => throw new NotSupportedException("MultiHeadAttention is never accepted");
}

/// <summary>
/// Decomposed attention (MatMul(Q, Kᵀ) → scale/mask → Softmax → MatMul(·, V)): recognized and
/// reported with its reason; the rewrite rule for it is not written yet.
/// </summary>
public sealed class DecomposedAttentionForm : IAttentionRule
{
    private static readonly HashSet<string> Between = ["Add", "Mul", "Div", "Where", "Cast", "CastLike", "Identity", "Tanh", "Sub"];

    /// <inheritdoc/>
    public AttentionForm Form => AttentionForm.Decomposed;

    /// <inheritdoc/>
    public bool Match(GraphIndex graph, NodeProto node)
    {
        if (node.OpType != "Softmax" || node.Domain is not ("" or "ai.onnx")) return false;
        return WalkUp(graph, node.Input[0], depth: 10) && WalkDown(graph, node.Output[0], depth: 6);
    }

    // A MatMul reached through elementwise scale/mask/cast steps.
    private static bool WalkUp(GraphIndex g, string value, int depth)
    {
        var p = g.Producer(value);
        if (p is null || depth == 0) return false;
        if (p.OpType == "MatMul") return true;
        return Between.Contains(p.OpType) && p.Input.Where(i => i.Length > 0).Any(i => WalkUp(g, i, depth - 1));
    }

    private static bool WalkDown(GraphIndex g, string value, int depth) =>
        depth > 0 && g.Consumers(value).Any(c => c.OpType == "MatMul" ||
            Between.Contains(c.OpType) && c.Output.Any(o => WalkDown(g, o, depth - 1)));

    /// <inheritdoc/>
    public RuleCheck Check(GraphIndex graph, NodeProto node, RewriteOptions options) =>
        RuleCheck.Refuse("decomposed MatMul/Softmax attention: the rewrite rule for this form is not implemented yet");

    /// <inheritdoc/>
    public void Rewrite(RewriteContext context, AttentionMatch match) => throw new NotSupportedException("decomposed attention is never accepted");
}
