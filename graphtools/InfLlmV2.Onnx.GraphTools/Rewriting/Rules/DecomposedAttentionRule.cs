using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools.Rewriting.Rules;

/// <summary>
/// Rule 3: decomposed attention → SwitchableAttention. Anchor: a Softmax between two MatMuls.
/// Matched dataflow (any number of Cast/Identity between steps):
/// <code>
///   scores = MatMul(Q·a, Transpose(repeat_kv(K), [0,1,3,2])·b) | FusedMatMul(Q, repeat_kv(K), transB=1, alpha)
///            [·c | /c | shape-keeping Reshape]* [+ bias | Where(cond, ·, −large)]*
///   out    = MatMul(Softmax(scores) [guarded by Where(all-masked, 0, ·)], repeat_kv(V))
///   repeat_kv(X) = Reshape(Expand(Unsqueeze(X, axis 2), ·), ·) or X itself
/// </code>
/// Q [B, H, S, D] and K, V [B, Hkv, T, D] must have static shapes (through Reshape/Transpose),
/// the scale factors must fold to constants, and the bias must be provably causal: the
/// top-left mask <c>Where(Less(Range(0,S)[:, None] + 0, Range(0,T)[None, :]), -inf, 0)</c> (added
/// to a zero ConstantOfShape or used alone), as the ONNX Attention function body builds it. Any
/// other bias (padding masks, sliding windows, user masks) is refused with a reason, as is attention
/// without a bias (bidirectional). Caches (Concat with a past) are not matched yet.
/// </summary>
public sealed class DecomposedAttentionRule : IAttentionRule
{
    private static readonly HashSet<string> Between = ["Add", "Mul", "Div", "Where", "Cast", "CastLike", "Identity", "Tanh", "Sub", "Reshape"];

    /// <summary>Facts of a decomposed attention.</summary>
    public sealed record Facts(NodeProto Node, NodeProto OutputMatMul, string Query, string Key, string Value, int NumHeads,
        int KvNumHeads, int HeadDim, long? KeySliceTo, float Scale, Cache? Cache) : AttentionMatch(Node, NumHeads, KvNumHeads, HeadDim)
    {
        /// <summary>The attention_mask input whose values the mask's key padding comes from, or null.</summary>
        public string? PaddingMask { get; init; }

        /// <summary>The mask's sliding window in keys (the site then runs dense-only), or null.</summary>
        public long? SlidingWindow { get; init; }
    }

    /// <summary>A KV cache in the graph: present = Concat(past, new, axis 2) for keys and values.</summary>
    public sealed record Cache(string PastKey, string PastValue, string PresentKey, string PresentValue, NodeProto KeyConcat, NodeProto ValueConcat);

    /// <inheritdoc/>
    public AttentionForm Form => AttentionForm.Decomposed;

    /// <inheritdoc/>
    public bool Match(GraphIndex graph, NodeProto node)
    {
        if (node.OpType != "Softmax" || node.Domain is not ("" or "ai.onnx")) return false;
        return WalkUp(graph, node.Input[0], 10) && WalkDown(graph, node.Output[0], 6);
    }

    private static bool WalkUp(GraphIndex g, string value, int depth)
    {
        var p = g.Producer(value);
        if (p is null || depth == 0) return false;
        if (IsScoresMatMul(p)) return true;
        return Between.Contains(p.OpType) && p.Input.Where(i => i.Length > 0).Any(i => WalkUp(g, i, depth - 1));
    }

    private static bool WalkDown(GraphIndex g, string value, int depth) =>
        depth > 0 && g.Consumers(value).Any(c => c.OpType == "MatMul" ||
            Between.Contains(c.OpType) && c.Output.Any(o => WalkDown(g, o, depth - 1)));

    /// <inheritdoc/>
    public RuleCheck Check(GraphIndex g, NodeProto softmax, RewriteOptions options)
    {
        var eval = new StaticEvaluator(g);
        RuleCheck Refuse(string why, int? h = null, int? hkv = null, int? d = null) => RuleCheck.Refuse("decomposed attention: " + why, h, hkv, d);

        // Softmax over the last axis.
        long axis = softmax.IntAttr("axis") ?? -1;
        // Upstream, from the softmax: mask parts (Add(scores, bias), Where(cond, scores, −large)), then
        // constant factors (Mul/Div, through Cast and shape-keeping Reshapes), then the scores
        // MatMul (or com.microsoft::FusedMatMul, whose alpha is a factor). A mask part above a factor
        // would be scaled with the scores: refused.
        string x = g.SkipPassThroughUp(softmax.Input[0]);
        var additive = new List<string>();
        var selects = new List<(string Condition, bool VisibleWhenTrue)>();
        float scale = 1.0f;
        bool scaled = false;
        for (int step = 0; step < 16; step++)
        {
            var n = g.Producer(x);
            if (n is { OpType: "Add" })
            {
                var (a0, a1) = (g.SkipPassThroughUp(n.Input[0]), g.SkipPassThroughUp(n.Input[1]));
                string? bias = UpToMatMul(g, a0) ? n.Input[1] : UpToMatMul(g, a1) ? n.Input[0] : null;
                if (bias is null)
                {
                    if (HasTanh(g, n.Input[0], 6) || HasTanh(g, n.Input[1], 6))
                        return Refuse("softcap (Tanh) in the scores is not supported in the decomposed form");
                    return Refuse("the softmax input is an Add without a scores MatMul operand");
                }
                if (scaled) return Refuse("a mask added before the scores are scaled (it would be scaled too)");
                additive.Add(bias);
                x = bias == n.Input[1] ? a0 : a1;
                continue;
            }
            if (n is { OpType: "Where" } w && w.Input.Count == 3)
            {
                var (whenTrue, whenFalse) = (g.SkipPassThroughUp(w.Input[1]), g.SkipPassThroughUp(w.Input[2]));
                if (UpToMatMul(g, whenTrue) && eval.Scalar(w.Input[2]) is double lo && lo <= -1e4) { selects.Add((w.Input[0], true)); x = whenTrue; }
                else if (UpToMatMul(g, whenFalse) && eval.Scalar(w.Input[1]) is double lo2 && lo2 <= -1e4) { selects.Add((w.Input[0], false)); x = whenFalse; }
                else return Refuse("a Where on the scores that is not Where(condition, scores, −large)");
                if (scaled) return Refuse("a mask applied before the scores are scaled (it would be scaled too)");
                continue;
            }
            if (n is { OpType: "Mul" or "Div" } m)
            {
                if (m.Input.Any(i => g.Producer(i)?.OpType == "Tanh"))
                    return Refuse("softcap (Tanh) in the scores is not supported in the decomposed form");
                int ci = eval.Scalar(m.Input[1]) is not null ? 1 : eval.Scalar(m.Input[0]) is not null && m.OpType == "Mul" ? 0 : -1;
                if (ci < 0) return Refuse($"the scores are scaled by a non-constant ({m.OpType})");
                double factor = eval.Scalar(m.Input[ci])!.Value;
                scale *= (float)(m.OpType == "Div" ? 1 / factor : factor);
                scaled = true;
                x = g.SkipPassThroughUp(m.Input[1 - ci]);
                continue;
            }
            if (n is { OpType: "Reshape" } r && eval.PartialShape(r.Input[0]) is { Length: 4 } rin && eval.PartialShape(x) is { } rout
                && rin.SequenceEqual(rout) && rin.All(d => d is not null))
            {
                x = g.SkipPassThroughUp(r.Input[0]);
                continue;
            }
            break;
        }
        var scores = g.Producer(x);
        bool fused = scores is { OpType: "FusedMatMul", Domain: "com.microsoft" };
        if (scores is null || scores.OpType != "MatMul" && !fused) return Refuse($"the scores are not a MatMul but {scores?.OpType ?? "a graph input"}" +
            (UnrecognizedAttentionRule.ScoresPath(g, softmax) is { } path ? $" (scores: {string.Join(" → ", path)} → Softmax)" : ""));
        bool keyTransposed = false;
        if (fused)
        {
            // FusedMatMul(Q, K, transB=1, alpha=scale): the key operand is K itself.
            if ((scores.IntAttr("transA") ?? 0) != 0 || (scores.IntAttr("transBatchA") ?? 0) != 0 || (scores.IntAttr("transBatchB") ?? 0) != 0)
                return Refuse("a FusedMatMul for Q·Kᵀ with transA or transBatch set");
            keyTransposed = (scores.IntAttr("transB") ?? 0) != 0;
            scale *= scores.Attribute.FirstOrDefault(a => a.Name == "alpha") is { } alpha ? alpha.F : 1.0f;
        }
        // Q side: optional constant factor.
        var (q, qf) = StripFactor(g, eval, scores.Input[0]);
        var (kt, kf) = StripFactor(g, eval, scores.Input[1]);
        if (qf is null || kf is null) return Refuse("Q or Kᵀ is scaled by a non-constant");
        scale *= (float)(qf.Value * kf.Value);
        string k;
        if (keyTransposed)
        {
            k = RepeatKv.Source(g, eval, kt);
        }
        else
        {
            var transpose = g.Producer(kt);
            if (transpose is not { OpType: "Transpose" } || !(transpose.Attribute.FirstOrDefault(a => a.Name == "perm")?.Ints.SequenceEqual([0L, 1, 3, 2]) ?? false))
                return Refuse("the key operand is not Transpose(K, [0,1,3,2])" + (fused ? " (FusedMatMul with transB=0)" : ""));
            k = RepeatKv.Source(g, eval, g.SkipPassThroughUp(transpose.Input[0]));
        }

        // Downstream: Softmax → [Cast]* → [Where(cond, 0, p)] → [Cast]* → MatMul(p, repeat_kv(V)).
        string p = g.SkipPassThroughDown(softmax.Output[0]);
        // Consumers that only borrow the type (CastLike(x, p)) do not read the probabilities.
        List<NodeProto> Readers(string value) => g.Consumers(value).Where(c => !(c.OpType == "CastLike" && c.Input[0] != value)).ToList();
        if (Readers(p) is [{ OpType: "Where" } guard] && guard.Input.Count == 3 && guard.Input[2] == p && eval.Scalar(guard.Input[1]) == 0)
            p = g.SkipPassThroughDown(guard.Output[0]);
        if (Readers(p) is not [{ OpType: "MatMul" } outMatMul] || outMatMul.Input[0] != p)
            return Refuse("the softmax output does not feed exactly one MatMul(probabilities, V)");
        var v = RepeatKv.Source(g, eval, g.SkipPassThroughUp(outMatMul.Input[1]));
        // A cache: K = Concat(past_key, new keys, axis 2), V likewise.
        Cache? cache = null;
        if (PastConcat(g, k) is { } kc && PastConcat(g, v) is { } vc)
        {
            if (!g.IsLocal(kc) || !g.IsLocal(vc))
                return Refuse("the cache Concat is in an enclosing graph (the op would produce the presents inside this body)");
            cache = new Cache(kc.Input[0], vc.Input[0], k, v, kc, vc);
            k = kc.Input[1];
            v = vc.Input[1];
        }
        else if (PastConcat(g, k) is not null || PastConcat(g, v) is not null)
        {
            return Refuse("only one of K and V is concatenated with a past");
        }

        // Shapes: Q [B, H, S, D], K/V [B, Hkv, T, D]; heads and head size static, lengths static or symbolic.
        var qs = eval.PartialShape(q);
        var ks = eval.PartialShape(k);
        var vs = eval.PartialShape(v);
        if (qs is not { Length: 4 } || ks is not { Length: 4 } || vs is not { Length: 4 } ||
            qs[1] is not long qh || ks[1] is not long kh || qs[3] is not long qd)
            return Refuse("Q/K/V are not 4-D [B, heads, sequence, head_size] with static heads and head size");
        if ((OpCapability.Heads(qh, kh) ?? OpCapability.HeadSize(qd)) is { } unsupported) return Refuse(unsupported);
        int h = (int)qh, hkv = (int)kh, d = (int)qd;
        if (axis != -1 && axis != 3) return Refuse($"softmax over axis {axis}, not the key axis", h, hkv, d);
        if (!Equals(ks[3], qs[3]) || !Equals(vs[3], qs[3]) || !Equals(vs[1], ks[1]) || !Equals(vs[2], ks[2]))
            return Refuse("Q/K/V shapes do not agree (head sizes, kv heads or lengths)", h, hkv, d);
        if (OpCapability.ElementType(g.ElementType(q), mustKnow: false) is { } type) return Refuse(type, h, hkv, d);
        // The mask must be causal.
        additive.RemoveAll(b => IsZeros(g, eval, b));
        if (additive.Count + selects.Count == 0)
            return Refuse("no causal mask: bidirectional attention cannot be expressed by a causal op", h, hkv, d);
        object? sq = qs[2], sk = ks[2];
        var offset = additive.Count == 1 && selects.Count == 0 ? CausalOffset(g, eval, additive[0], cache?.PastKey) : null;
        string? paddingMask = null;
        long? window = null;
        if (offset is null || (cache is null && offset != 0))
        {
            // Any other mask (HF/optimum: causal from Trilu or Range/Greater AND padding from attention_mask): prove it.
            var pastLength = cache is null ? null : eval.PartialShape(cache.PastKey) is { Length: 4 } pk ? pk[2] : null;
            var keyLength = cache is null ? sk : ShapeInference.AddDims(pastLength, sq);
            var (facts, why) = MaskAnalysis.Analyze(g, eval, additive, selects, sq, keyLength, pastLength);
            if (facts is null) return Refuse(why!, h, hkv, d);
            if (facts.KeyLimits.Count > 0) return Refuse("the mask also has key padding limits from per-batch inputs", h, hkv, d);
            window = facts.SlidingWindow;
            string? expected = cache is null ? null : MaskAnalysis.DimVariable(pastLength);
            if (facts.QueryOffset != expected || (cache is not null && expected is null && !Equals(pastLength, 0L)))
                return Refuse($"the mask places query row 0 at {facts.QueryOffset ?? "0"}, not at the past length", h, hkv, d);
            paddingMask = facts.PaddingMask;
        }
        long? sliceTo = null;
        if (cache is not null)
        {
            if (sq is null || !Equals(sk, sq)) return Refuse("with a cache, the new keys must be as many as the queries", h, hkv, d);
            if (eval.PartialShape(cache.PastKey) is not { Length: 4 } ps || !Equals(ps[1], (long)hkv) || !Equals(ps[3], (long)d))
                return Refuse("the past keys are not [B, kv_heads, past, head_size] with static heads and head size", h, hkv, d);
        }
        else if (sq is long a && sk is long b && b > a) sliceTo = a;  // top-left causal: keys >= S are never attended
        else if (sq is null || !Equals(sq, sk)) return Refuse($"query length {sq ?? "?"} and key length {sk ?? "?"} are not provably compatible", h, hkv, d);
        if (options.CompressedState) return Refuse("--compressed-state is supported for GroupQueryAttention models only", h, hkv, d);
        foreach (var inner in new[] { scores.Output[0], softmax.Output[0] })
            if (g.IsGraphOutput(inner)) return Refuse("intermediate scores/probabilities are graph outputs", h, hkv, d);
        return RuleCheck.Accept(new Facts(softmax, outMatMul, q, k, v, h, hkv, d, sliceTo, scale, cache)
        {
            PaddingMask = paddingMask, SlidingWindow = window,
            Note = string.Join("; ", new[] { window is long keys ? RewriteContext.SlidingWindowNote(keys) : null, paddingMask is null ? null : RewriteContext.PaddingMaskNote(paddingMask) }
                .Where(x => x is not null)) is { Length: > 0 } note ? note : null,
        }) with
        {
            Operands = [q, k, v, .. additive, .. selects.Select(c => c.Condition), .. cache is null ? Array.Empty<string>() : [cache.PastKey, cache.PastValue]],
        };
    }

    /// <inheritdoc/>
    public void Rewrite(RewriteContext c, AttentionMatch match)
    {
        var f = (Facts)match;
        var target = f.OutputMatMul;
        var nodes = SwitchableAttentionEmitter.Emit(c, target.Name.Length > 0 ? target.Name : f.Node.Name,
            new SwitchableAttentionEmitter.Operands(f.Query, f.Key, f.Value, 4, f.NumHeads, f.KvNumHeads, f.HeadDim, f.KeySliceTo,
                f.Scale, null, target.Output[0])
            {
                PastKey = f.Cache?.PastKey, PastValue = f.Cache?.PastValue,
                PresentKey = f.Cache?.PresentKey ?? "", PresentValue = f.Cache?.PresentValue ?? "", AttentionMask = f.PaddingMask,
                SlidingWindow = f.SlidingWindow,
            });
        if (f.Cache is not null)  // the op now produces the presents
        {
            c.Graph.Node.Remove(f.Cache.KeyConcat);
            c.Graph.Node.Remove(f.Cache.ValueConcat);
        }
        c.ReplaceNode(target, nodes);
    }

    private static bool IsScoresMatMul(NodeProto n) => n.OpType == "MatMul" || n is { OpType: "FusedMatMul", Domain: "com.microsoft" };

    private static bool HasTanh(GraphIndex g, string value, int depth) =>
        depth > 0 && g.Producer(value) is { } p && (p.OpType == "Tanh" || p.Input.Where(i => i.Length > 0).Any(i => HasTanh(g, i, depth - 1)));

    // Whether value is the scores, possibly scaled, reshaped in place, masked (Add, Where) or cast.
    private static bool UpToMatMul(GraphIndex g, string value, int depth = 8)
    {
        if (depth == 0 || g.Producer(value) is not { } p) return false;
        if (IsScoresMatMul(p)) return true;
        return p.OpType switch
        {
            "Mul" or "Div" or "Cast" or "Identity" or "Reshape" => UpToMatMul(g, p.Input[0], depth - 1),
            "Where" when p.Input.Count == 3 => UpToMatMul(g, p.Input[1], depth - 1) || UpToMatMul(g, p.Input[2], depth - 1),
            "Add" => UpToMatMul(g, p.Input[0], depth - 1) || UpToMatMul(g, p.Input[1], depth - 1),
            _ => false,
        };
    }

    // x or Mul(x, constant) (either order): the operand and the factor (1 when none; null when not constant).
    private static (string Value, double? Factor) StripFactor(GraphIndex g, StaticEvaluator eval, string value)
    {
        value = g.SkipPassThroughUp(value);
        if (g.Producer(value) is { OpType: "Mul" } m)
        {
            if (eval.Scalar(m.Input[1]) is double b) return (g.SkipPassThroughUp(m.Input[0]), b);
            if (eval.Scalar(m.Input[0]) is double a) return (g.SkipPassThroughUp(m.Input[1]), a);
            return (value, null);
        }
        return (value, 1.0);
    }


    // Concat(past, new, axis 2) producing value, or null.
    private static NodeProto? PastConcat(GraphIndex g, string value) =>
        g.Producer(value) is { OpType: "Concat" } c && c.Input.Count == 2 &&
        (c.IntAttr("axis") ?? 0) is 2 or -2 ? c : null;

    // The row offset P of a causal mask Where(Less(Range(0,S)[:,None] + P, Range(0,T)[None,:]), -inf, 0),
    // optionally added to a zero ConstantOfShape: a constant, or -1 for "the length of `past`"
    // (Shape(past)[2]); null when the bias is anything else.
    private static long? CausalOffset(GraphIndex g, StaticEvaluator eval, string bias, string? past)
    {
        bias = g.SkipPassThroughUp(bias);
        var n = g.Producer(bias);
        if (n is { OpType: "Add" })
        {
            string? other = IsZeros(g, eval, n.Input[0]) ? n.Input[1] : IsZeros(g, eval, n.Input[1]) ? n.Input[0] : null;
            if (other is null) return null;
            n = g.Producer(g.SkipPassThroughUp(other));
        }
        if (n is not { OpType: "Where" } || eval.Scalar(n.Input[1]) is not double.NegativeInfinity || eval.Scalar(n.Input[2]) is not 0.0)
            return null;
        var less = g.Producer(n.Input[0]);
        if (less is not { OpType: "Less" }) return null;
        // Row side: Unsqueeze(Range(0, S, 1), [1]) [+ P]; column side: Unsqueeze(Range(0, T, 1), [0]).
        long? offset = 0;
        var row = less.Input[0];
        if (g.Producer(row) is { OpType: "Add" } shift)
        {
            offset = null;
            for (int i = 0; i < 2 && offset is null; i++)
            {
                if (eval.Scalar(shift.Input[i]) is double p) offset = (long)p;
                else if (past is not null && IsPastLength(g, eval, shift.Input[i], past)) offset = -1;
                if (offset is not null) row = shift.Input[1 - i];
            }
            if (offset is null) return null;
        }
        return IsIndexRange(g, eval, row, 1) && IsIndexRange(g, eval, less.Input[1], 0) ? offset : null;
    }

    // Shape(past, start=2|-2, end=3|-1) or Gather(Shape(past), 2).
    private static bool IsPastLength(GraphIndex g, StaticEvaluator eval, string value, string past)
    {
        var n = g.Producer(g.SkipPassThroughUp(value));
        if (n is { OpType: "Shape" } s && g.SkipPassThroughUp(s.Input[0]) == past)
        {
            long start = s.IntAttr("start") ?? 0, end = s.IntAttr("end") ?? 4;
            return (start is 2 or -2) && (end is 3 or -1);
        }
        return n is { OpType: "Gather" } gat && g.Producer(gat.Input[0]) is { OpType: "Shape" } sh && g.SkipPassThroughUp(sh.Input[0]) == past &&
               eval.Scalar(gat.Input[1]) == 2 && (sh.IntAttr("start") ?? 0) == 0;
    }

    private static bool IsIndexRange(GraphIndex g, StaticEvaluator eval, string value, int unsqueezeAxis)
    {
        if (g.Producer(value) is not { OpType: "Unsqueeze" } u) return false;
        if (eval.Axes(u) is not { Length: 1 } axes || axes[0] != unsqueezeAxis) return false;
        return g.Producer(u.Input[0]) is { OpType: "Range" } r && eval.Scalar(r.Input[0]) == 0 && eval.Scalar(r.Input[2]) == 1;
    }

    private static bool IsZeros(GraphIndex g, StaticEvaluator eval, string value)
    {
        var n = g.Producer(g.SkipPassThroughUp(value));
        if (n is not { OpType: "ConstantOfShape" }) return false;
        var fill = n.Attribute.FirstOrDefault(a => a.Name == "value")?.T;
        return fill is null || TensorProtos.GetBytes(fill).All(b => b == 0);
    }
}
