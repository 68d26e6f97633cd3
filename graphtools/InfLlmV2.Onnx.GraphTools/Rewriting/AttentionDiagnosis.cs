using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools.Rewriting;

/// <summary>
/// Names what stops an attention site from being rewritten, from the dataflow around its anchor, for
/// every form alike: a training graph (the probabilities or the scores also feed a backward pass),
/// projection weights that are graph inputs, an ALiBi bias (a CumSum of the attention mask added to
/// the scores), a mask that is a graph input (its values are the caller's: causality cannot be
/// proven), and non-causal attention (nothing masks the scores, as in vision and encoder attention).
/// Training graphs, ALiBi and weight inputs stop a site a rule would accept; the others refine a rule's
/// refusal, which stays appended after the diagnosis.
/// </summary>
public static class AttentionDiagnosis
{
    private const int Depth = 16;

    /// <summary>Ops whose result multiplies two values: the Q·Kᵀ and P·V products in any spelling.</summary>
    public static bool IsProduct(NodeProto n) =>
        n.OpType is "MatMul" or "Gemm" or "FusedMatMul" or "Einsum" or "MatMulInteger" or "QLinearMatMul" or "MatMulNBits" or "MatMulBnb4";

    /// <summary>
    /// Whether a value is fixed by the model (an initializer, a Constant, or computed from such values
    /// only, e.g. dequantized weights): one operand of a projection, never of Q·Kᵀ or P·V.
    /// </summary>
    public static bool IsConstantLike(GraphIndex g, string value, int depth = 4)
    {
        if (g.Initializer(value) is not null && !g.IsGraphInput(value)) return true;
        if (g.Producer(value) is not { } p || depth == 0) return false;
        if (p.OpType == "Constant") return true;
        var inputs = p.Input.Where(i => i.Length > 0).ToList();
        return inputs.Count > 0 && inputs.All(i => IsConstantLike(g, i, depth - 1));
    }

    /// <summary>A product of two computed values (Q·Kᵀ, P·V), not of a value and weights (projections, lm_head, routers).</summary>
    public static bool IsActivationProduct(GraphIndex g, NodeProto n) =>
        IsProduct(n) && n.Input.Count >= 2 && n.Input.Take(2).All(i => i.Length > 0 && !IsConstantLike(g, i));

    /// <summary>Ops of a backward pass (ORT training's gradient ops and the ONNX training domain).</summary>
    public static bool IsBackward(NodeProto n) =>
        n.OpType.EndsWith("Grad", StringComparison.Ordinal) || n.OpType.Contains("Grad_", StringComparison.Ordinal)
        || n.OpType is "Gradient" or "YieldOp" || n.Domain is "ai.onnx.preview.training";

    /// <summary>
    /// The site's check, reviewed: an accepted site in a training graph or with graph-input weights is
    /// refused; a refused one gets the most specific diagnosis in front of the rule's reason.
    /// </summary>
    public static RuleCheck Review(GraphIndex g, NodeProto anchor, RuleCheck check)
    {
        if (check.Match is not null)
        {
            var stop = Training(g, anchor) ?? Alibi(g, anchor) ?? WeightInputs(g, anchor, check.Operands);
            return stop is null ? check : RuleCheck.Refuse(stop, check.NumHeads, check.KvNumHeads, check.HeadSize) with { Operands = check.Operands };
        }
        var why = Explain(g, anchor, check.Operands);
        if (why is null || check.Reason is null || check.Reason.Contains(why, StringComparison.Ordinal)) return check;
        return check with { Reason = $"{why} ({check.Reason})" };
    }

    /// <summary>What stops this site, most specific first, or null when nothing is recognized.</summary>
    public static string? Explain(GraphIndex g, NodeProto anchor, IReadOnlyList<string>? operands = null) =>
        Training(g, anchor) ?? Alibi(g, anchor) ?? WeightInputs(g, anchor, operands) ?? MaskInput(g, anchor) ?? NonCausal(g, anchor);

    /// <summary>A training graph: the anchor's outputs (or the scores before a Softmax) also feed backward ops.</summary>
    public static string? Training(GraphIndex g, NodeProto anchor)
    {
        var values = new List<string>(anchor.Output.Where(o => o.Length > 0));
        if (anchor.OpType == "Softmax") values.Add(anchor.Input[0]);
        foreach (var v in values)
            foreach (var c in DownstreamWithin(g, v, 3))
                if (IsBackward(c))
                    return $"a training graph: the attention's {(anchor.OpType == "Softmax" ? "probabilities" : "outputs")} also feed a backward pass ({c.Domain}{(c.Domain.Length > 0 ? "::" : "")}{c.OpType})";
        return null;
    }

    /// <summary>An ALiBi bias: a CumSum (of the attention mask, BLOOM's positions) on the path into the scores.</summary>
    public static string? Alibi(GraphIndex g, NodeProto anchor)
    {
        if (ScoresInput(anchor) is not { } scores) return null;
        foreach (var n in BiasAncestors(g, scores))
            if (n.OpType == "CumSum")
            {
                var from = GraphInputsAbove(g, n.Input[0]).FirstOrDefault();
                return $"an ALiBi position bias (CumSum{(from is null ? "" : $" of '{from}'")} times per-head slopes, added to the scores): SwitchableAttention has no bias input";
            }
        return null;
    }

    /// <summary>A mask that is a graph input used as it is (not the [batch, keys] integer attention_mask the mask analysis reads).</summary>
    public static string? MaskInput(GraphIndex g, NodeProto anchor)
    {
        string? mask = anchor.OpType switch
        {
            "Attention" when anchor.Domain is "" or "ai.onnx" => Input(anchor, 3),
            "MultiHeadAttention" => Input(anchor, 5),
            "GroupQueryAttention" => Input(anchor, 10),
            _ => null,
        };
        IEnumerable<string> inputs = mask is { Length: > 0 } ? GraphInputsAbove(g, mask)
            : ScoresInput(anchor) is { } scores ? BiasAncestors(g, scores).SelectMany(n => n.Input).Where(g.IsGraphInput) : [];
        foreach (var input in inputs.Distinct())
        {
            var shape = g.Shape(input);
            bool keyPadding = shape is { Count: 2 } && g.ElementType(input) is TensorProto.Types.DataType.Int64 or TensorProto.Types.DataType.Int32;
            if (!keyPadding && (shape is null || shape.Count >= 2))
                return $"the mask is the graph input '{input}' ({ShapeInference.Format(shape)}): its values are the caller's, so causality cannot be proven";
        }
        return null;
    }

    /// <summary>Projection weights that are graph inputs (a training or parameter-fed export).</summary>
    public static string? WeightInputs(GraphIndex g, NodeProto anchor, IReadOnlyList<string>? operands)
    {
        IEnumerable<string> starts = anchor.OpType == "Softmax"
            ? operands?.Take(3) ?? []
            : anchor.Input.Take(3).Where(i => i.Length > 0);
        if (anchor.OpType == "Attention" && anchor.Domain == "com.microsoft")
            return g.IsGraphInput(Input(anchor, 1)) && g.Initializer(Input(anchor, 1)) is null
                ? $"the fused QKV weights '{Input(anchor, 1)}' are a graph input (a training or parameter-fed export): the rewrite keeps weights in the model only"
                : null;
        foreach (var start in starts)
        {
            var value = start;
            for (int i = 0; i < Depth && g.Producer(value) is { } p; i++)
            {
                if (p.OpType is "MatMul" or "Gemm")
                {
                    var w = g.SkipPassThroughUp(p.Input[1]);
                    if (g.Producer(w) is { OpType: "Transpose" } t) w = g.SkipPassThroughUp(t.Input[0]);
                    if (g.IsGraphInput(w) && g.Initializer(w) is null && g.Shape(w) is { Count: 2 })
                        return $"the projection weights '{w}' are a graph input (a training or parameter-fed export): the rewrite keeps weights in the model only";
                    break;
                }
                if (IsProduct(p)) break;  // quantized or fused projections keep their weights inside
                // Follow the data operand: the first input that is not a constant.
                var next = p.Input.FirstOrDefault(x => x.Length > 0 && g.Initializer(x) is null && g.Producer(x) is not { OpType: "Constant" });
                if (next is null) break;
                value = next;
            }
        }
        return null;
    }

    /// <summary>Non-causal attention: the scores reach the Softmax with nothing but constant factors on the way.</summary>
    public static string? NonCausal(GraphIndex g, NodeProto anchor)
    {
        if (anchor.OpType != "Softmax") return null;
        var value = anchor.Input[0];
        for (int i = 0; i < Depth && g.Producer(value) is { } p; i++)
        {
            if (IsProduct(p))
                return "non-causal attention: nothing masks the scores between Q·Kᵀ and the Softmax (encoder or vision attention), and SwitchableAttention is causal";
            if (p.OpType is "Mul" or "Div")
            {
                var data = p.Input.Where(x => g.Initializer(x) is null && g.Producer(x) is not { OpType: "Constant" }).ToList();
                if (data.Count != 1) return null;
                value = data[0];
            }
            else if (p.OpType is "Reshape" or "Cast" or "Identity" or "CastLike" or "Squeeze" or "Unsqueeze" or "Transpose") value = p.Input[0];
            else return null;
        }
        return null;
    }

    // Shape and Size read a value's shape, not its values.
    private static bool ReadsShapeOnly(NodeProto n) => n.OpType is "Shape" or "Size";

    private static string Input(NodeProto n, int i) => i < n.Input.Count ? n.Input[i] : "";

    // The scores value entering a Softmax anchor.
    private static string? ScoresInput(NodeProto anchor) => anchor.OpType == "Softmax" ? anchor.Input[0] : null;

    // Nodes above the scores that are not on the Q·Kᵀ product's own inputs: the bias/mask side.
    private static List<NodeProto> BiasAncestors(GraphIndex g, string scores)
    {
        var found = new List<NodeProto>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var queue = new Queue<(string Value, int Depth)>();  // breadth first: each value at its shortest distance
        queue.Enqueue((scores, 0));
        while (queue.Count > 0)
        {
            var (v, d) = queue.Dequeue();
            if (!seen.Add(v) || d > Depth || g.Producer(v) is not { } p || IsProduct(p) || ReadsShapeOnly(p)) continue;
            found.Add(p);
            foreach (var i in p.Input.Where(i => i.Length > 0)) queue.Enqueue((i, d + 1));
        }
        return found;
    }

    private static IEnumerable<string> GraphInputsAbove(GraphIndex g, string value)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var queue = new Queue<(string, int)>();
        queue.Enqueue((value, 0));
        while (queue.Count > 0)
        {
            var (v, d) = queue.Dequeue();
            if (!seen.Add(v) || d > Depth) continue;
            if (g.IsGraphInput(v) && g.Initializer(v) is null) { yield return v; continue; }
            if (g.Producer(v) is { } p && !IsProduct(p) && !ReadsShapeOnly(p))
                foreach (var i in p.Input.Where(i => i.Length > 0)) queue.Enqueue((i, d + 1));
        }
    }

    private static IEnumerable<NodeProto> DownstreamWithin(GraphIndex g, string value, int depth)
    {
        foreach (var c in g.Consumers(value))
        {
            yield return c;
            if (depth > 1 && !IsProduct(c))
                foreach (var o in c.Output.Where(o => o.Length > 0))
                    foreach (var d in DownstreamWithin(g, o, depth - 1)) yield return d;
        }
    }
}
