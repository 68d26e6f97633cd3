using InfLlmV2.Onnx.GraphTools.Proto;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;
using static InfLlmV2.Onnx.GraphTools.Rewriting.Rules.OnnxAttentionRule;

namespace InfLlmV2.Onnx.GraphTools.Rewriting.Rules;

/// <summary>
/// Rule 2b: ONNX <c>Attention</c> (opset 24) over a static KV cache: K and V are the outputs of
/// <c>TensorScatter</c> nodes that write the new keys/values into a fixed-capacity cache at
/// <c>write_indices[b]</c>, and an explicit <c>attn_mask</c> (plus <c>nonpad_kv_seqlen</c>) makes it
/// causal. The mask is analyzed symbolically (<see cref="MaskAnalysis"/>) and must be exactly
/// "key ≤ write_indices[b] + row", optionally with a sliding window and key padding; then query row
/// s of entry b sits at position write_indices[b] + s, which is the op's past_b + s with
/// seqlens_k = write_indices + S − 1, and the op writes the new rows where TensorScatter does.
/// The TensorScatter nodes stay (they produce the cache outputs, byte-identical); the op receives
/// the cache before the write (3-D [B, L, Hkv·D] caches are reshaped/transposed to [B, Hkv, L, D]) and
/// the new keys/values. Rows past nonpad_kv_seqlen (right padding) are the only ones whose outputs
/// may differ: the original attends there to keys below nonpad_kv_seqlen, the op causally.
/// A sliding window becomes local_window_size and makes the site dense-only (the op supports the
/// window in dense mode only), which the report notes.
/// </summary>
public sealed class StaticCacheAttentionRule : IAttentionRule
{
    /// <summary>Facts of a static-cache ONNX Attention node.</summary>
    public sealed record Facts(NodeProto Node, int NumHeads, int KvNumHeads, int HeadDim, int Rank, NodeProto KeyScatter, NodeProto ValueScatter,
        string? QueryOffset, long? SlidingWindow, float? Scale, float? Softcap)
        : AttentionMatch(Node, NumHeads, KvNumHeads, HeadDim);

    /// <inheritdoc/>
    public AttentionForm Form => AttentionForm.OnnxAttention;

    /// <inheritdoc/>
    public bool Match(GraphIndex graph, NodeProto node) =>
        IsOnnxAttention(node)
        && ((node.Input.Count > 6 && node.Input[6].Length > 0)
            || (node.Input.Count > 1 && graph.Producer(node.Input[1]) is { OpType: "TensorScatter" }));

    /// <inheritdoc/>
    public RuleCheck Check(GraphIndex g, NodeProto node, RewriteOptions options)
    {
        var eval = new StaticEvaluator(g);
        string Input(int i) => i < node.Input.Count ? node.Input[i] : "";
        var qs = eval.PartialShape(Input(0));
        int rank = qs?.Length ?? 0;
        var (heads, kvHeads, headSize) = HeadCounts(node, qs, eval.PartialShape(Input(1)));
        RuleCheck Refuse(string why) => RuleCheck.Refuse(why, heads, kvHeads, headSize);

        var kScatter = g.Producer(Input(1));
        var vScatter = g.Producer(Input(2));
        if (kScatter?.OpType != "TensorScatter" || vScatter?.OpType != "TensorScatter")
            return Refuse("nonpad_kv_seqlen without TensorScatter-written K and V: only the static-cache form (TensorScatter + nonpad_kv_seqlen) is rewritten");
        if (Input(4).Length > 0 || Input(5).Length > 0) return Refuse("past_key/past_value together with a static cache");
        for (int i = 1; i < node.Output.Count; i++)
            if (node.Output[i].Length > 0 && (g.Consumers(node.Output[i]).Count > 0 || g.IsGraphOutput(node.Output[i])))
                return Refuse($"output {i} ({(i == 3 ? "qk_matmul_output" : "present cache")}) is used");
        if (AttributeProblem(node) is { } attribute) return Refuse(attribute);
        if ((node.IntAttr("is_causal") ?? 0) != 0)
            return Refuse("is_causal=1 with a static cache: ONNX's top-left causal mask ignores the cache positions");
        if (qs is null) return Refuse("the shape of Q is unknown");
        if (rank is not (3 or 4)) return Refuse($"Q has rank {rank}: need 3-D or 4-D");
        if ((node.IntAttrOutOfRange("q_num_heads", 1, NodeAttributes.MaxHeads) ?? node.IntAttrOutOfRange("kv_num_heads", 1, NodeAttributes.MaxHeads)) is { } range)
            return Refuse(range);
        if (heads is null || kvHeads is null) return Refuse("head counts unknown (need static head dims or q_num_heads/kv_num_heads)");
        if (headSize is null) return Refuse("head size unknown");
        if (OpCapability.Check(heads, kvHeads, headSize, g.ElementType(Input(0)) ?? g.ElementType(kScatter.Input[0])) is { } cannot) return Refuse(cannot);

        // The two scatters: same layout, same write positions, linear mode, along the sequence axis.
        int seqAxis = rank - 2;
        string? writeIndices = null;
        object? keyLength = null;
        foreach (var (scatter, what) in new[] { (kScatter, "key"), (vScatter, "value") })
        {
            if ((scatter.Attribute.FirstOrDefault(a => a.Name == "mode")?.S.ToStringUtf8() ?? "linear") != "linear")
                return Refuse($"the {what} cache TensorScatter uses circular mode (a ring buffer)");
            long axis = scatter.IntAttr("axis") ?? -2;
            var cache = eval.PartialShape(scatter.Input[0]);
            var update = eval.PartialShape(scatter.Input[1]);
            if (cache is null || update is null || cache.Length != rank || update.Length != rank)
                return Refuse($"the {what} cache and its update must have Q's rank ({rank}) and known ranks");
            if (axis < 0) axis += rank;
            if (axis != seqAxis) return Refuse($"the {what} cache is scattered along axis {axis}, not the sequence axis {seqAxis}");
            int? n = rank == 4 ? Dim(cache[1]) : Dim(cache[2]) is int w && w % kvHeads == 0 ? w / kvHeads : null;
            int? d = rank == 4 ? Dim(cache[3]) : n;
            if ((rank == 4 && (n != kvHeads || d != headSize)) || (rank == 3 && Dim(cache[2]) != kvHeads * headSize))
                return Refuse($"the {what} cache is not [B, {(rank == 4 ? $"{kvHeads}, L, {headSize}" : $"L, {kvHeads * headSize}")}]");
            if (!Equals(update[seqAxis], qs[seqAxis]) || update[seqAxis] is null)
                return Refuse($"the new {what}s are not provably as many as the queries");
            var wi = scatter.Input.Count > 2 && scatter.Input[2].Length > 0 ? scatter.Input[2] : null;
            if (what == "key") (writeIndices, keyLength) = (wi, cache[seqAxis]);
            else if (wi != writeIndices) return Refuse("the key and value caches are written at different positions");
            else if (!Equals(cache[seqAxis], keyLength)) return Refuse("the key and value caches have different lengths");
        }
        if (writeIndices is not null && g.IsGraphInput(writeIndices) is false)
            return Refuse("the cache write positions are not a graph input");

        if (Input(3).Length == 0) return Refuse("no attn_mask: a static cache needs a mask to be causal");
        var (mask, why) = MaskAnalysis.Analyze(g, eval, Input(3), qs[seqAxis], keyLength);
        if (mask is null) return Refuse(why!);
        if (mask.PaddingMask is not null)
            return Refuse($"the mask also reads the values of '{mask.PaddingMask}' (key padding from an attention_mask is not rewritten over a static cache)");
        if (mask.QueryOffset != writeIndices)
            return Refuse($"the mask places queries at {mask.QueryOffset ?? "0"} + row but the cache is written at {writeIndices ?? "0"}: not the same positions");
        if (options.CompressedState) return Refuse("--compressed-state is supported for GroupQueryAttention models only");
        string? note = mask.SlidingWindow is long win ? RewriteContext.SlidingWindowNote(win) : null;
        return RuleCheck.Accept(new Facts(node, heads.Value, kvHeads.Value, headSize.Value, rank, kScatter, vScatter, writeIndices, mask.SlidingWindow,
            node.FloatAttr("scale"), node.FloatAttr("softcap"))
        {
            Note = note
        });
    }

    /// <inheritdoc/>
    public void Rewrite(RewriteContext c, AttentionMatch match)
    {
        var f = (Facts)match;
        var node = f.Node;
        string N(string h) => c.Index.UniqueName($"{node.Name}/infllmv2/{h}");
        var before = new List<NodeProto>();
        string Past(NodeProto scatter, string what)
        {
            var cache = scatter.Input[0];
            if (f.Rank == 4) return cache;
            var target = N($"{what}_cache_bsnh_shape");
            c.Graph.Initializer.Add(TensorProtos.Int64(target, [4], [0, 0, f.KvNumHeads, f.HeadDim]));
            var split = N($"{what}_cache_bsnh");
            var bnsh = N($"{what}_cache_bnsh");
            before.Add(Node("Reshape", "", [cache, target], [split], name: N($"{what}_cache_Reshape")));
            before.Add(Node("Transpose", "", [split], [bnsh], [Ints("perm", 0, 2, 1, 3)], N($"{what}_cache_Transpose")));
            return bnsh;
        }
        // Without write positions the queries sit at 0..S-1 and see new keys only: no past.
        var pastKey = f.QueryOffset is null ? null : Past(f.KeyScatter, "key");
        var pastValue = f.QueryOffset is null ? null : Past(f.ValueScatter, "value");
        var nodes = SwitchableAttentionEmitter.Emit(c, node.Name, new SwitchableAttentionEmitter.Operands(
            node.Input[0], f.KeyScatter.Input[1], f.ValueScatter.Input[1], f.Rank, f.NumHeads, f.KvNumHeads, f.HeadDim, null,
            f.Scale, f.Softcap, node.Output[0])
        {
            PastKey = pastKey, PastValue = pastValue, QueryOffset = f.QueryOffset, SlidingWindow = f.SlidingWindow,
        });
        c.ReplaceNode(node, [.. before, .. nodes]);
    }
}
