using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.OpContract;

namespace InfLlmV2.Onnx.GraphTools.Rewriting.Rules;

/// <summary>
/// The last rule: attention that no other rule matched, reported instead of passed over in silence.
/// Matched: an attention op of any domain (<c>*Attention</c>: packed, decoder-masked, paged, sparse,
/// quantized...) and a Softmax between two matrix products of computed values (MatMul, Gemm,
/// FusedMatMul, Einsum, ...; a product with weights is a projection, an lm_head or a router) through any ops. Always refused, with what stops the rewrite when <see cref="AttentionDiagnosis"/>
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
        return IsAttentionSoftmax(graph, node);
    }

    /// <summary>
    /// Whether a Softmax is attention's: a product of two computed values (Q·Kᵀ) above it and one
    /// (P·V) below it, each reached through any ops but no other product or Softmax. A Softmax over a
    /// product with weights (a router, a classifier head) is not attention.
    /// </summary>
    public static bool IsAttentionSoftmax(GraphIndex g, NodeProto node) =>
        node.OpType == "Softmax" && node.Domain is "" or "ai.onnx"
        && Reaches(g, node.Input[0], up: true, Depth) && node.Output.Count > 0 && Reaches(g, node.Output[0], up: false, 6);

    private static bool Reaches(GraphIndex g, string start, bool up, int depth)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var frontier = new List<string> { start };
        for (int d = 0; d < depth && frontier.Count > 0; d++)
        {
            var next = new List<string>();
            foreach (var v in frontier.Where(seen.Add))
            {
                var nodes = up ? (g.Producer(v) is { } p ? [p] : []) : g.Consumers(v);
                foreach (var n in nodes)
                {
                    if (AttentionDiagnosis.IsProduct(n))
                    {
                        if (AttentionDiagnosis.IsActivationProduct(g, n)) return true;
                        continue;
                    }
                    if (n.OpType == "Softmax" || IsShapeArithmetic(n)) continue;
                    next.AddRange((up ? n.Input : n.Output).Where(x => x.Length > 0));
                }
            }
            frontier = next;
        }
        return false;
    }

    /// <inheritdoc/>
    public RuleCheck Check(GraphIndex graph, NodeProto node, RewriteOptions options)
    {
        if (AttentionDiagnosis.Explain(graph, node) is { } why) return RuleCheck.Refuse(why);
        if (node.OpType != "Softmax")
            return RuleCheck.Refuse($"{(node.Domain.Length > 0 ? node.Domain + "::" : "")}{node.OpType} is an attention op no rule rewrites");
        return RuleCheck.Refuse("a Softmax between two matrix products in a form no rule matches" +
            (ScoresPath(graph, node) is { } path ? $" (scores: {string.Join(" → ", path)} → Softmax)" : ""));
    }

    /// <inheritdoc/>
    public void Rewrite(RewriteContext context, AttentionMatch match) =>
        throw new InvalidOperationException("unrecognized attention is never rewritten");

    /// <summary>Op types from the scores' product up to the Softmax along the first data inputs, or null when no product is near.</summary>
    public static List<string>? ScoresPath(GraphIndex g, NodeProto softmax)
    {
        var ops = new List<string>();
        var value = softmax.Input[0];
        for (int i = 0; i < Depth && g.Producer(value) is { } p; i++)
        {
            ops.Insert(0, p.OpType);
            if (AttentionDiagnosis.IsProduct(p)) return AttentionDiagnosis.IsActivationProduct(g, p) ? ops : null;
            if (p.OpType == "Softmax") return null;
            // The data operand: the first input produced by a node (not a constant or a graph input).
            var next = p.Input.FirstOrDefault(x => x.Length > 0 && g.Producer(x) is { } q && q.OpType != "Constant" && !IsShapeArithmetic(q));
            if (next is null) return null;
            value = next;
        }
        return null;
    }

    private static bool IsShapeArithmetic(NodeProto n) => n.OpType is "Shape" or "Size" or "ConstantOfShape" or "Range";
}
