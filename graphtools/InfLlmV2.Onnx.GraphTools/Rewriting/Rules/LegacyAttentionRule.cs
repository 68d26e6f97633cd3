using InfLlmV2.Onnx.GraphTools.Proto;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;
using Op = InfLlmV2.Onnx.OpContract.SwitchableAttentionOp;

namespace InfLlmV2.Onnx.GraphTools.Rewriting.Rules;

/// <summary>
/// Rule 6: the legacy <c>com.microsoft::Attention</c> (ORT's transformers optimizer on GPT-2-family
/// models) → SwitchableAttention as multi-head attention (kv_num_heads = num_heads). The node holds
/// its own projection: <c>input</c> [B, S, in] times the fused <c>weights</c> [in, 3·H·D] (+ <c>bias</c>)
/// is Q, K, V side by side, which is the op's packed-QKV query input. Its cache is one packed tensor
/// per layer, <c>past</c> = <c>present</c> = [2, B, H, P, D] (keys at index 0, values at 1): the rewrite
/// splits the past with Gather and stacks the op's present keys/values back with Unsqueeze/Concat,
/// so the model's inputs and outputs stay exactly as they were. Causality comes from
/// <c>unidirectional=1</c> (queries at the past length); a 2-D int32 <c>mask_index</c> [B, P + S] is
/// key padding, fed as seqlens_k = ReduceSum(mask) − 1 (exact when each row is ones then zeros).
/// <c>scale</c> is carried. Refused with a reason: unidirectional=0 (encoder or vision attention),
/// unequal <c>qkv_hidden_sizes</c>, the node's own rotary (<c>do_rotary</c>), a shared past/present
/// buffer, <c>attention_bias</c>, <c>past_sequence_length</c>, 1-D/3-D/4-D masks.
/// </summary>
public sealed class LegacyAttentionRule : IAttentionRule
{
    private const int InputIndex = 0, Weights = 1, Bias = 2, MaskIndex = 3, Past = 4, AttentionBias = 5, PastSequenceLength = 6;

    /// <summary>Facts of a legacy Attention node.</summary>
    public sealed record Facts(NodeProto Node, int NumHeads, int HeadDim, TensorProto.Types.DataType ElementType, float? Scale,
        string? PaddingMask) : AttentionMatch(Node, NumHeads, NumHeads, HeadDim);

    /// <inheritdoc/>
    public AttentionForm Form => AttentionForm.LegacyAttention;

    /// <inheritdoc/>
    public bool Match(GraphIndex graph, NodeProto node) => node.OpType == "Attention" && node.Domain == "com.microsoft";

    /// <inheritdoc/>
    public RuleCheck Check(GraphIndex g, NodeProto node, RewriteOptions options)
    {
        string Input(int i) => i < node.Input.Count ? node.Input[i] : "";
        if (node.IntAttrOutOfRange("num_heads", 1, NodeAttributes.MaxHeads) is { } range) return RuleCheck.Refuse("Attention: " + range);
        if (node.IntAttr("num_heads") is not long heads64) return RuleCheck.Refuse("Attention: num_heads missing");
        int h = (int)heads64;
        var ws = g.Shape(Input(Weights));
        var sizes = node.Attribute.FirstOrDefault(a => a.Name == "qkv_hidden_sizes")?.Ints;
        long? width = ws is { Count: 2 } && ws[1] is long cols ? cols : null;
        long? qHidden = sizes is { Count: 3 } ? sizes[0] : width is long w3 && w3 % 3 == 0 ? w3 / 3 : null;
        int? d = qHidden is long qh && qh % h == 0 && qh / h <= int.MaxValue ? (int)(qh / h) : null;
        RuleCheck Refuse(string why) => RuleCheck.Refuse("Attention: " + why, h, h, d) with { Operands = node.Input.Where(i => i.Length > 0).ToList() };

        foreach (var a in node.Attribute)
        {
            string? why = a.Name switch
            {
                "num_heads" or "scale" or "qkv_hidden_sizes" => null,
                // Only the masked keys' scores take it; padded keys are left out of seqlens_k instead.
                "mask_filter_value" => null,
                "unidirectional" => a.I == 1 ? null : $"unidirectional={a.I}: bidirectional (encoder or vision) attention cannot be expressed by a causal op",
                "past_present_share_buffer" => a.I == 0 ? null : "past_present_share_buffer=1 (a max-length cache with past_sequence_length) is not rewritten",
                "do_rotary" => a.I == 0 ? null : "do_rotary=1: the node's built-in rotary (no cos/sin caches in the graph) is not carried",
                "rotary_embedding_dim" => node.IntAttr("do_rotary") is null or 0 ? null : "rotary_embedding_dim with do_rotary",
                _ => $"unknown attribute '{a.Name}'",
            };
            if (why is not null) return Refuse(why);
        }
        if (node.IntAttr("unidirectional") is null)
            return Refuse("unidirectional is not set (default 0): bidirectional (encoder or vision) attention cannot be expressed by a causal op");
        if (Input(AttentionBias).Length > 0) return Refuse("uses attention_bias (input 5), which SwitchableAttention does not support");
        if (Input(PastSequenceLength).Length > 0) return Refuse("uses past_sequence_length (input 6): a shared max-length cache");
        for (int i = PastSequenceLength + 1; i < node.Input.Count; i++)
            if (node.Input[i].Length > 0) return Refuse($"uses input {i}, which SwitchableAttention does not support");
        if (sizes is not null && (sizes.Count != 3 || sizes[0] != sizes[1] || sizes[1] != sizes[2]))
            return Refuse($"qkv_hidden_sizes [{string.Join(", ", sizes)}]: Q, K and V of different widths are not rewritten");
        if (ws is not { Count: 2 } || width is null) return Refuse("the fused weights are not [input_hidden, 3·hidden] with a known width");
        if (qHidden is null || width != 3 * qHidden) return Refuse($"the fused weights' width {width} is not 3 × the query width {qHidden?.ToString() ?? "?"}");
        if (d is null) return Refuse($"the query width {qHidden} is not a multiple of num_heads {h}");
        var type = g.ElementType(Input(InputIndex)) ?? g.ElementType(Input(Weights));
        if (OpCapability.Check(h, h, d, type) is { } cannot) return Refuse(cannot);
        if (Input(Bias) is { Length: > 0 } bias && g.Shape(bias) is { } bs && (bs.Count != 1 || (bs[0] is long bw && bw != width)))
            return Refuse($"the bias is [{ShapeInference.Format(bs)}], not [{width}]");

        string past = Input(Past);
        if (past.Length > 0)
        {
            if (g.Shape(past) is not { Count: 5 } ps) return Refuse("the past is not a 5-D [2, B, num_heads, P, head_size] tensor (or its rank is unknown)");
            if (!Equals(ps[0], 2L) || !Equals(ps[2], (long)h) || !Equals(ps[4], (long)d))
                return Refuse($"the past is {ShapeInference.Format(ps)}, not [2, B, {h}, P, {d}]");
        }
        string? paddingMask = null;
        string mask = Input(MaskIndex);
        if (mask.Length > 0)
        {
            var ms = g.Shape(mask);
            if (ms is null) return Refuse("mask_index has an unknown rank (1-D end positions, 2-D key padding, 3-D/4-D masks are different things)");
            if (ms.Count == 1) return Refuse("mask_index is 1-D (per-batch end/start positions): not rewritten");
            if (ms.Count != 2) return Refuse($"mask_index is {ms.Count}-D (a per-query mask): only 2-D key padding is rewritten");
            if (g.ElementType(mask) is { } mt && mt != TensorProto.Types.DataType.Int32) return Refuse($"mask_index is {mt}, not int32");
            paddingMask = mask;
        }
        if (options.CompressedState) return Refuse("--compressed-state is supported for GroupQueryAttention models only");
        float? scale = node.FloatAttr("scale") is float s && s != 0 ? s : null;
        return RuleCheck.Accept(new Facts(node, h, d.Value, type!.Value, scale, paddingMask)
        {
            Note = paddingMask is null ? null : RewriteContext.PaddingMaskNote(paddingMask),
        }) with
        {
            Operands = node.Input.Where(i => i.Length > 0).ToList(),
        };
    }

    /// <inheritdoc/>
    public void Rewrite(RewriteContext c, AttentionMatch match)
    {
        var f = (Facts)match;
        var n = f.Node;
        string Input(int i) => i < n.Input.Count ? n.Input[i] : "";
        string hint = n.Name.Length > 0 ? n.Name : "Attention";
        string N(string h) => c.Index.UniqueName($"{hint}/infllmv2/{h}");
        var nodes = new List<NodeProto>();
        string Scalar(string h, long value)
        {
            var name = N(h);
            c.Graph.Initializer.Add(TensorProtos.Int64(name, [], [value]));
            return name;
        }

        // Q, K, V side by side = the op's packed QKV input.
        var qkv = N("qkv");
        nodes.Add(Node("MatMul", "", [Input(InputIndex), Input(Weights)], [qkv], name: N("MatMul")));
        if (Input(Bias).Length > 0)
        {
            var biased = N("qkv_bias");
            nodes.Add(Node("Add", "", [qkv, Input(Bias)], [biased], name: N("Add")));
            qkv = biased;
        }
        string? pastKey = null, pastValue = null;
        if (Input(Past).Length > 0)
        {
            pastKey = N("past_key");
            pastValue = N("past_value");
            nodes.Add(Node("Gather", "", [Input(Past), Scalar("index_key", 0)], [pastKey], [Attr("axis", 0L)], N("GatherKey")));
            nodes.Add(Node("Gather", "", [Input(Past), Scalar("index_value", 1)], [pastValue], [Attr("axis", 0L)], N("GatherValue")));
        }
        var (seqlens, total) = f.PaddingMask is { } mask ? c.MaskLengths(mask) : c.Lengths(qkv, pastKey, $"{c.Graph.Name}|{Input(InputIndex)}");
        var inputs = new List<string> { qkv, "", "", pastKey ?? "", pastValue ?? "", seqlens, total };
        var mode = c.AttentionModeInput();
        if (mode.Length > 0)
        {
            while (inputs.Count < Op.Inputs.AttentionMode) inputs.Add("");
            inputs.Add(mode);
        }
        var carried = new List<AttributeProto>();
        if (f.Scale is float s) carried.Add(Attr(Op.Attributes.Scale, s));
        string present = n.Output.Count > 1 ? n.Output[1] : "";
        var presentKey = N("present_key");
        var presentValue = N("present_value");
        nodes.Add(Node(Op.OpType, Op.Domain, inputs, [n.Output[0], presentKey, presentValue],
            c.SwitchableAttributes(f.NumHeads, f.NumHeads, carried), N(Op.OpType)));
        foreach (var p in new[] { presentKey, presentValue })
            c.Graph.ValueInfo.Add(Tensor(p, f.ElementType, null, f.NumHeads, null, f.HeadDim));
        if (present.Length > 0)
        {
            // present = [present_key; present_value] stacked on a new leading axis: [2, B, H, P + S, D].
            var stacked = new List<string>();
            string? axes = null;
            if (c.DefaultOpset >= 13)
            {
                axes = N("axes_0");
                c.Graph.Initializer.Add(TensorProtos.Int64(axes, [1], [0]));
            }
            foreach (var (p, what) in new[] { (presentKey, "key"), (presentValue, "value") })
            {
                var u = N($"present_{what}_5d");
                nodes.Add(axes is not null
                    ? Node("Unsqueeze", "", [p, axes], [u], name: N($"Unsqueeze_{what}"))
                    : Node("Unsqueeze", "", [p], [u], [Ints("axes", 0)], N($"Unsqueeze_{what}")));
                stacked.Add(u);
            }
            nodes.Add(Node("Concat", "", stacked, [present], [Attr("axis", 0L)], N("Concat")));
        }
        c.ReplaceNode(n, nodes);
    }
}
