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
        var heads = node.HeadsAttr("num_heads");
        int? headSize = heads is > 0 && graph.StaticDim(node.Input[0], 2) is long hidden ? (int)(hidden / heads.Value) : null;
        return RuleCheck.Refuse("MultiHeadAttention: no rewrite rule for this form yet (convert to GroupQueryAttention first)", heads, heads, headSize);
    }

    /// <inheritdoc/>
    public void Rewrite(RewriteContext context, AttentionMatch match) => throw new NotSupportedException("MultiHeadAttention is never accepted");
}

