using InfLlmV2.Onnx.GraphTools.Proto;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;
using Op = InfLlmV2.Onnx.OpContract.SwitchableAttentionOp;

namespace InfLlmV2.Onnx.GraphTools.Rewriting.Rules;

/// <summary>
/// Rule 1: <c>com.microsoft::GroupQueryAttention</c> → SwitchableAttention, a near 1:1 swap: inputs
/// 0–8 keep their meaning (docs/op-spec.md), the seqlens/total subgraph the model already has is
/// reused, outputs keep their names.
/// </summary>
public sealed class GroupQueryAttentionRule : IAttentionRule
{
    private static readonly string[] UnsupportedInputs =
        ["position_ids", "attention_bias", "head_sink", "k_scale", "v_scale", "q_norm_weight", "k_norm_weight"];

    // Attributes we carry over unchanged; others must hold their default (checked) and are dropped.
    private static readonly HashSet<string> Carried =
        [Op.Attributes.Scale, Op.Attributes.Softcap, Op.Attributes.DoRotary, Op.Attributes.RotaryInterleaved, Op.Attributes.SlidingWindow];

    /// <summary>Facts of a GQA node.</summary>
    public sealed record Facts(NodeProto Node, int NumHeads, int KvNumHeads, int? HeadSize, TensorProto.Types.DataType? ElementType)
        : AttentionMatch(Node, NumHeads, KvNumHeads, HeadSize)
    {
        /// <summary>The attention_mask whose key padding the attention_bias was proven to be (<see cref="GqaAttentionBias"/>), or null.</summary>
        public string? PaddingMask { get; init; }
    }

    /// <inheritdoc/>
    public AttentionForm Form => AttentionForm.GroupQueryAttention;

    /// <inheritdoc/>
    public bool Match(GraphIndex graph, NodeProto node) => node.OpType == "GroupQueryAttention" && node.Domain == "com.microsoft";

    /// <inheritdoc/>
    public RuleCheck Check(GraphIndex graph, NodeProto node, RewriteOptions options)
    {
        long heads = node.IntAttr("num_heads") ?? 0, kvHeads = node.IntAttr("kv_num_heads") ?? 0;
        if (heads <= 0 || kvHeads <= 0) return RuleCheck.Refuse("num_heads/kv_num_heads missing or not positive");
        // Read as int64 and checked before narrowing: 2^40 heads must not become H=0.
        if ((node.IntAttrOutOfRange("num_heads", 1, NodeAttributes.MaxHeads) ?? node.IntAttrOutOfRange("kv_num_heads", 1, NodeAttributes.MaxHeads)) is { } heads64)
            return RuleCheck.Refuse(heads64);
        if ((node.IntAttrOutOfRange("local_window_size", -1, int.MaxValue) ?? node.IntAttrOutOfRange("do_rotary", 0, 1)
             ?? node.IntAttrOutOfRange("rotary_interleaved", 0, 1)) is { } range)
            return RuleCheck.Refuse(range);
        int h = (int)heads, hkv = (int)kvHeads;
        int? headSize = HeadSize(graph, node, h, hkv);
        RuleCheck Refuse(string why) => RuleCheck.Refuse(why, h, hkv, headSize);
        if (OpCapability.Heads(h, hkv) is { } headsWhy) return Refuse(headsWhy);
        for (int i = 9; i < node.Input.Count; i++)
            if (node.Input[i].Length > 0 && i != GqaAttentionBias.BiasInput)
                return Refuse($"uses input {i} ({(i - 9 < UnsupportedInputs.Length ? UnsupportedInputs[i - 9] : "unknown")}), which SwitchableAttention does not support");
        if (node.Input.Count < 7 || node.Input[5].Length == 0 || node.Input[6].Length == 0)
            return Refuse("seqlens_k and total_sequence_length inputs are required");
        string? paddingMask = null;
        if (node.Input.Count > GqaAttentionBias.BiasInput && node.Input[GqaAttentionBias.BiasInput].Length > 0)
        {
            var (mask, biasWhy) = GqaAttentionBias.Prove(graph, node);
            if (mask is null) return Refuse($"uses input 10 (attention_bias): {biasWhy}");
            paddingMask = mask;
        }
        for (int i = 3; i < node.Output.Count; i++)
            if (node.Output[i].Length > 0) return Refuse("produces output_qk (qk_output), which SwitchableAttention does not support");
        foreach (var a in node.Attribute)
        {
            if (a.Name is "num_heads" or "kv_num_heads" || Carried.Contains(a.Name)) continue;
            string? why = a.Name switch
            {
                "qk_output" => a.I != 0 ? "qk_output is set" : null,
                "smooth_softmax" => a.I == 1 ? "smooth_softmax=1 (attention sink) changes the softmax" : null,
                "causal" => a.I != 1 ? "causal=0 (bidirectional attention)" : null,
                "sliding_window_cache" => a.I != 0 ? "sliding_window_cache=1 (window-sized ring cache)" : null,
                "k_quant_type" or "v_quant_type" => a.S.ToStringUtf8() is "" or "NONE" ? null : $"quantized KV cache ({a.Name}={a.S.ToStringUtf8()})",
                "kv_cache_bit_width" => "quantized KV cache (kv_cache_bit_width)",
                "qk_norm_epsilon" => null, // only meaningful with q/k norm weights (refused above)
                _ => $"unknown attribute '{a.Name}'",
            };
            if (why is not null) return Refuse(why);
        }
        // Sliding-window layers (Mistral, the local layers of Gemma-style models) keep their window
        // and run dense only (RewriteContext.SlidingWindowAttributes); the report says so.
        long window = node.IntAttr(Op.Attributes.SlidingWindow) ?? -1;
        string? note = window > 0 ? RewriteContext.SlidingWindowNote(window) : null;
        if (node.IntAttr("do_rotary") == 1 && (node.Input.Count < 9 || node.Input[7].Length == 0 || node.Input[8].Length == 0))
            return Refuse("do_rotary=1 without cos_cache/sin_cache");
        var type = graph.ElementType(node.Input[0]) ?? (node.Input.Count > 3 && node.Input[3].Length > 0 ? graph.ElementType(node.Input[3]) : null);
        // The node is rewritten in place: an unknown type stays ORT's to check at load.
        if (OpCapability.Check(h, hkv, headSize, type, typeMustBeKnown: false) is { } cannot) return Refuse(cannot);
        if (options.CompressedState)
        {
            if (node.Input.Count < 5 || !graph.IsGraphInput(node.Input[3]) || node.Output.Count < 2 || !graph.IsGraphOutput(node.Output[1]))
                return Refuse("--compressed-state needs past_key to be a graph input and present_key a graph output");
            if (headSize is null) return Refuse("--compressed-state needs a known head size");
        }
        if (paddingMask is not null) note = note is null ? GqaAttentionBias.Note(paddingMask) : $"{note}; {GqaAttentionBias.Note(paddingMask)}";
        return RuleCheck.Accept(new Facts(node, h, hkv, headSize, type) { Note = note, PaddingMask = paddingMask });
    }

    /// <inheritdoc/>
    public void Rewrite(RewriteContext context, AttentionMatch match)
    {
        var f = (Facts)match;
        var node = f.Node;
        var carried = node.Attribute.Where(a => Carried.Contains(a.Name) && a.Name != Op.Attributes.SlidingWindow).ToList();
        if ((node.IntAttr(Op.Attributes.SlidingWindow) ?? -1) is long window and > 0) carried.AddRange(RewriteContext.SlidingWindowAttributes(window));
        node.OpType = Op.OpType;
        node.Domain = Op.Domain;
        node.Attribute.Clear();
        node.Attribute.AddRange(context.SwitchableAttributes(f.NumHeads, f.KvNumHeads, carried));
        while (node.Input.Count > Op.Inputs.PastCompressedKey) node.Input.RemoveAt(node.Input.Count - 1);
        if (f.PaddingMask is { } mask)
        {
            // The bias is dropped: seqlens_k/total come from the mask's row sums instead (shared per graph).
            var (seqlens, total) = context.MaskLengths(mask);
            node.Input[5] = seqlens;
            node.Input[6] = total;
        }
        while (node.Output.Count > Op.Outputs.PresentCompressedKey) node.Output.RemoveAt(node.Output.Count - 1);

        string compressedIn = "", compressedOut = "";
        if (context.Options.CompressedState)
        {
            var type = f.ElementType ?? TensorProto.Types.DataType.Float;
            compressedIn = CompressedName(context, node.Input[3]);
            compressedOut = CompressedName(context, node.Output[1]);
            context.Graph.Input.Add(Tensor(compressedIn, type, null, f.KvNumHeads, null, f.HeadSize));
            context.Graph.Output.Add(Tensor(compressedOut, type, null, f.KvNumHeads, null, f.HeadSize));
        }
        var mode = context.AttentionModeInput();
        if (compressedIn.Length > 0 || mode.Length > 0)
        {
            while (node.Input.Count < Op.Inputs.PastCompressedKey) node.Input.Add("");
            node.Input.Add(compressedIn);
            if (mode.Length > 0) node.Input.Add(mode);
        }
        if (compressedOut.Length > 0) node.Output.Add(compressedOut);
    }

    /// <summary>past_key_values.0.key → past_key_values.0.compressed_key; present.0.key → present.0.compressed_key.</summary>
    private static string CompressedName(RewriteContext context, string keyName)
    {
        string name = keyName.EndsWith("key", StringComparison.Ordinal) ? keyName[..^3] + "compressed_key" : keyName + ".compressed_key";
        if (context.Index.AllNames.Contains(name) || context.Graph.Input.Any(i => i.Name == name) || context.Graph.Output.Any(o => o.Name == name))
            throw new InvalidDataException($"Cannot add compressed-key value '{name}': the name is already used in the model");
        return name;
    }


    private static int? HeadSize(GraphIndex g, NodeProto n, int heads, int kvHeads)
    {
        if (n.Input.Count > 3 && n.Input[3].Length > 0 && g.StaticDim(n.Input[3], 3) is long d) return d is >= 0 and <= int.MaxValue ? (int)d : null;
        bool packed = n.Input.Count < 2 || n.Input[1].Length == 0;
        if (g.StaticDim(n.Input[0], 2) is long hidden)
        {
            long div = packed ? heads + 2L * kvHeads : heads;
            if (hidden % div == 0 && hidden / div is >= 0 and <= int.MaxValue) return (int)(hidden / div);
        }
        return null;
    }
}
