using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.OpContract;

namespace InfLlmV2.Onnx.GraphTools.Rewriting.Rules;

/// <summary>
/// The last rule: attention that no other rule matched, reported instead of passed over in silence.
/// Matched: an attention op of any domain (<c>*Attention</c>: packed, decoder-masked, paged, sparse,
/// quantized...) and a Softmax between two matrix products (MatMul, Gemm, FusedMatMul, Einsum, ...)
/// through any ops. Always refused, with what stops the rewrite when <see cref="AttentionDiagnosis"/>
/// recognizes it (ALiBi, training graph, mask or weights that are graph inputs, non-causal
/// attention), else with the op or the path from the scores' product to the Softmax that was found.
/// </summary>
public sealed class UnrecognizedAttentionRule : IAttentionRule
{
    private const int Depth = 12;

    /// <inheritdoc/>
    public AttentionForm Form => AttentionForm.Unrecognized;

    /// <inheritdoc/>
    public bool Match(GraphIndex graph, NodeProto node)
    {
        if (node.OpType.EndsWith("Attention", StringComparison.Ordinal)) return node.Domain != SwitchableAttentionOp.Domain;
        return node.OpType == "Softmax" && node.Domain is "" or "ai.onnx" && ScoresPath(graph, node) is not null && ProductBelow(graph, node.Output[0], 6);
    }

    /// <inheritdoc/>
    public RuleCheck Check(GraphIndex graph, NodeProto node, RewriteOptions options)
    {
        if (AttentionDiagnosis.Explain(graph, node) is { } why) return RuleCheck.Refuse(why);
        if (node.OpType != "Softmax")
            return RuleCheck.Refuse($"{(node.Domain.Length > 0 ? node.Domain + "::" : "")}{node.OpType} is an attention op no rule rewrites");
        var path = ScoresPath(graph, node)!;
        return RuleCheck.Refuse($"a Softmax between two matrix products in a form no rule matches (scores: {string.Join(" → ", path)} → Softmax)");
    }

    /// <inheritdoc/>
    public void Rewrite(RewriteContext context, AttentionMatch match) =>
        throw new InvalidOperationException("unrecognized attention is never rewritten");

    // Op types from the scores' product up to the Softmax along the first data inputs, or null when no product is near.
    private static List<string>? ScoresPath(GraphIndex g, NodeProto softmax)
    {
        var ops = new List<string>();
        var value = softmax.Input[0];
        for (int i = 0; i < Depth && g.Producer(value) is { } p; i++)
        {
            ops.Insert(0, p.OpType);
            if (AttentionDiagnosis.IsProduct(p)) return ops;
            if (p.OpType == "Softmax") return null;
            // The data operand: the first input produced by a node (not a constant or a graph input).
            var next = p.Input.FirstOrDefault(x => x.Length > 0 && g.Producer(x) is { } q && q.OpType != "Constant" && !IsShapeArithmetic(q));
            if (next is null) return null;
            value = next;
        }
        return null;
    }

    private static bool IsShapeArithmetic(NodeProto n) => n.OpType is "Shape" or "Size" or "ConstantOfShape" or "Range";

    private static bool ProductBelow(GraphIndex g, string value, int depth) =>
        depth > 0 && g.Consumers(value).Any(c => AttentionDiagnosis.IsProduct(c) ||
            (c.OpType != "Softmax" && c.Output.Any(o => o.Length > 0 && ProductBelow(g, o, depth - 1))));
}
