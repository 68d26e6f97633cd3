using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.Models;

/// <summary>
/// One <see cref="TinyDecoderGenerator.Generate"/> call: the graph under construction, the weight
/// generator (called in a fixed order, so a config always gives the same bytes) and one method per
/// attention form; the masks shared by every layer are built once, on first use.
/// </summary>
internal sealed class TinyDecoderBuilder
{
    private const TensorProto.Types.DataType F32 = TensorProto.Types.DataType.Float;
    private const TensorProto.Types.DataType I64 = TensorProto.Types.DataType.Int64;
    private readonly TinyDecoderConfig c;
    private readonly GraphProto g = new() { Name = "tiny_decoder" };
    private readonly Random rng;
    private readonly bool gqa, mha;
    private readonly int cacheHeads, h, kvw;
    private readonly long opset;
    private string? cosFull, sinFull, hfMask, causalBias, genaiMask;

    public TinyDecoderBuilder(TinyDecoderConfig config)
    {
        c = config;
        rng = new Random(c.Seed);
        gqa = c.Form == DecoderAttentionForm.GroupQueryAttention;
        mha = c.Form == DecoderAttentionForm.MultiHeadAttention;
        cacheHeads = mha ? c.NumHeads : c.KvNumHeads;
        opset = gqa || mha ? 17 : 23;
        h = c.Hidden;
        kvw = c.KvNumHeads * c.HeadSize;
    }

    private static float Std(int fanIn) => 1.0f / MathF.Sqrt(fanIn);

    public ModelProto Build()
    {
        InputsAndOutputs();
        MaskLengths();
        RotaryCaches();
        if (opset >= 18) I64C("const_axis_last", [1], [-1]);
        W("embed_tokens.weight", c.Vocab, h, 1.0f);
        Add("Gather", ["embed_tokens.weight", "input_ids"], ["hidden_0"]);
        g.Initializer.Add(TensorProtos.Float("const_eps", [], [1e-5f]));
        if (!gqa && !mha) RotaryFromPositions();
        string x0 = "hidden_0";
        for (int l = 0; l < c.Layers; l++) x0 = Layer(l, x0);
        var xf = RmsNorm(x0, Ones("final_norm.weight", h), "final_norm");
        W("lm_head.weight", h, c.Vocab, Std(h));
        Add("MatMul", [xf, "lm_head.weight"], ["logits"]);
        if (!c.ValueInfo) g.ValueInfo.Clear();
        var m = gqa || mha || c.Form == DecoderAttentionForm.FusedMatMul ? Model(g, ("", opset), ("com.microsoft", 1))
            : c.Form == DecoderAttentionForm.Function ? Model(g, ("", opset), (AttentionFunction.Domain, 1))
            : Model(g, ("", opset));
        if (c.Form == DecoderAttentionForm.Function) m.Functions.Add(AttentionFunction.Build(c.HeadSize));
        m.IrVersion = gqa || mha ? 8 : 10;
        m.ProducerName = "infllmv2-tiny-decoder";
        m.DocString = $"tiny GQA decoder: {c}";
        return m;
    }

    private void InputsAndOutputs()
    {
        g.Input.Add(Tensor("input_ids", I64, null, null));
        g.Input.Add(Tensor("attention_mask", I64, null, null));
        if (!gqa) g.Input.Add(Tensor("position_ids", I64, null, null));
        for (int l = 0; l < c.Layers; l++)
        {
            g.Input.Add(TinyDecoderGenerator.CacheInfo(c.PastName(l, "key"), c, cacheHeads, "past_sequence_length"));
            g.Input.Add(TinyDecoderGenerator.CacheInfo(c.PastName(l, "value"), c, cacheHeads, "past_sequence_length"));
        }
        g.Output.Add(Tensor("logits", F32, null, null, c.Vocab));
        for (int l = 0; l < c.Layers; l++)
        {
            g.Output.Add(TinyDecoderGenerator.CacheInfo(c.PresentName(l, "key"), c, cacheHeads, "total_sequence_length"));
            g.Output.Add(TinyDecoderGenerator.CacheInfo(c.PresentName(l, "value"), c, cacheHeads, "total_sequence_length"));
        }
        // Rename symbolic dims to genai's names.
        foreach (var v in g.Input.Concat(g.Output))
        {
            var dims = v.Type.TensorType.Shape.Dim;
            if (dims[0].ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam) dims[0].DimParam = "batch_size";
            if (v.Name is "input_ids" or "logits" or "position_ids") dims[1].DimParam = "sequence_length";
            if (v.Name == "attention_mask") dims[1].DimParam = "total_sequence_length";
        }
    }

    // seqlens_k = ReduceSum(mask, 1) - 1 (int32), total = Shape(mask)[1] (int32 scalar): genai's subgraph.
    private void MaskLengths()
    {
        var one = I64C("const_one", [1], [1]);
        var axis1 = I64C("const_axis1", [1], [1]);
        var idx1 = I64C("const_index1", [], [1]);
        Add("ReduceSum", ["attention_mask", axis1], ["mask_sum"]);
        Add("Sub", ["mask_sum", one], ["mask_sum_minus_one"]);
        Add("Cast", ["mask_sum_minus_one"], ["seqlens_k"], Attr("to", (long)TensorProto.Types.DataType.Int32));
        Add("Shape", ["attention_mask"], ["mask_shape"]);
        Add("Gather", ["mask_shape", idx1], ["total_len_i64"], Attr("axis", 0L));
        Add("Cast", ["total_len_i64"], ["total_sequence_length"], Attr("to", (long)TensorProto.Types.DataType.Int32));
    }

    // Rotary caches [max_positions, head/2], base 10000.
    private void RotaryCaches()
    {
        int half = c.HeadSize / 2;
        var cos = new float[c.MaxPositions * half];
        var sin = new float[c.MaxPositions * half];
        for (int p = 0; p < c.MaxPositions; p++)
            for (int i = 0; i < half; i++)
            {
                double theta = p / Math.Pow(10000.0, 2.0 * i / c.HeadSize);
                cos[p * half + i] = (float)Math.Cos(theta);
                sin[p * half + i] = (float)Math.Sin(theta);
            }
        g.Initializer.Add(TensorProtos.Float("cos_cache", [c.MaxPositions, half], cos));
        g.Initializer.Add(TensorProtos.Float("sin_cache", [c.MaxPositions, half], sin));
    }

    // Rotary (non-interleaved, as GQA's) from position_ids with plain ops, for the 4-D forms.
    private void RotaryFromPositions()
    {
        int half = c.HeadSize / 2;
        foreach (var (table, name) in new[] { ("cos_cache", "rot_cos"), ("sin_cache", "rot_sin") })
        {
            Add("Gather", [table, "position_ids"], [$"{name}_half"]);
            Add("Concat", [$"{name}_half", $"{name}_half"], [$"{name}_full"], Attr("axis", -1L));
            Add("Unsqueeze", [$"{name}_full", I64C($"{name}_axis", [1], [2])], [$"{name}_bs1d"]);
        }
        cosFull = "rot_cos_bs1d";
        sinFull = "rot_sin_bs1d";
        I64C("rot_first_half", [1], [0]);
        I64C("rot_mid", [1], [half]);
        I64C("rot_end", [1], [c.HeadSize]);
        I64C("rot_axis", [1], [3]);
    }

    // One decoder layer: RMSNorm, attention in the configured form, residual, RMSNorm, SiLU MLP, residual.
    private string Layer(int l, string x0)
    {
        string p = $"layers.{l}";
        var xn = RmsNorm(x0, Ones($"{p}.input_layernorm.weight", h), $"{p}/input_norm");
        var attn = c.Form switch
        {
            DecoderAttentionForm.GroupQueryAttention => GroupQueryAttentionLayer(p, l, xn),
            DecoderAttentionForm.MultiHeadAttention => MultiHeadAttentionLayer(p, l, xn),
            DecoderAttentionForm.OnnxAttention => FourDimensionalLayer(p, l, xn, OnnxAttention),
            _ => FourDimensionalLayer(p, l, xn, DecomposedAttention),
        };
        W($"{p}.attn.o_proj.weight", h, h, Std(h));
        Add("MatMul", [attn, $"{p}.attn.o_proj.weight"], [$"{p}/attn_out"]);
        Add("Add", [x0, $"{p}/attn_out"], [$"{p}/resid1"]);
        var xn2 = RmsNorm($"{p}/resid1", Ones($"{p}.post_attention_layernorm.weight", h), $"{p}/post_norm");
        W($"{p}.mlp.gate_proj.weight", h, c.Intermediate, Std(h));
        W($"{p}.mlp.up_proj.weight", h, c.Intermediate, Std(h));
        W($"{p}.mlp.down_proj.weight", c.Intermediate, h, Std(c.Intermediate));
        Add("MatMul", [xn2, $"{p}.mlp.gate_proj.weight"], [$"{p}/gate"]);
        Add("Sigmoid", [$"{p}/gate"], [$"{p}/gate_sig"]);
        Add("Mul", [$"{p}/gate", $"{p}/gate_sig"], [$"{p}/silu"]);
        Add("MatMul", [xn2, $"{p}.mlp.up_proj.weight"], [$"{p}/up"]);
        Add("Mul", [$"{p}/silu", $"{p}/up"], [$"{p}/act"]);
        Add("MatMul", [$"{p}/act", $"{p}.mlp.down_proj.weight"], [$"{p}/mlp_out"]);
        Add("Add", [$"{p}/resid1", $"{p}/mlp_out"], [$"hidden_{l + 1}"]);
        return $"hidden_{l + 1}";
    }

    private void QkvWeights(string p)
    {
        W($"{p}.attn.q_proj.weight", h, h, Std(h));
        W($"{p}.attn.k_proj.weight", h, kvw, Std(h));
        W($"{p}.attn.v_proj.weight", h, kvw, Std(h));
    }

    // genai's GroupQueryAttention: rotary inside, seqlens_k/total from the attention_mask subgraph.
    private string GroupQueryAttentionLayer(string p, int l, string xn)
    {
        string[] gqaInputs;
        if (c.PackedQkv)
        {
            W($"{p}.attn.qkv_proj.weight", h, h + 2 * kvw, Std(h));
            Add("MatMul", [xn, $"{p}.attn.qkv_proj.weight"], [$"{p}/qkv"]);
            gqaInputs = [$"{p}/qkv", "", ""];
        }
        else
        {
            QkvWeights(p);
            Add("MatMul", [xn, $"{p}.attn.q_proj.weight"], [$"{p}/q"]);
            Add("MatMul", [xn, $"{p}.attn.k_proj.weight"], [$"{p}/k"]);
            Add("MatMul", [xn, $"{p}.attn.v_proj.weight"], [$"{p}/v"]);
            gqaInputs = [$"{p}/q", $"{p}/k", $"{p}/v"];
        }
        string[] lengths = c.AttentionBias ? [.. BiasLengths(), "cos_cache", "sin_cache", "", "gqa_attention_bias/bias"]
            : ["seqlens_k", "total_sequence_length", "cos_cache", "sin_cache"];
        Add("GroupQueryAttention",
            [.. gqaInputs, c.PastName(l, "key"), c.PastName(l, "value"), .. lengths],
            [$"{p}/attn", c.PresentName(l, "key"), c.PresentName(l, "value")],
            Attr("num_heads", (long)c.NumHeads), Attr("kv_num_heads", (long)c.KvNumHeads), Attr("do_rotary", 1L),
            Attr("scale", 1.0f / MathF.Sqrt(c.HeadSize)));
        return $"{p}/attn";
    }

    // onnx-community's GQA inputs (once per model): seqlens_k = Expand(T − 1) to [B, 1] for every
    // entry, total = T, and padding only in attention_bias = Expand((1 − Cast(mask)) · −FLT_MAX) to [B, 1, S, T].
    private string[] BiasLengths()
    {
        const string m = "gqa_attention_bias";
        if (g.Node.Any(n => n.Output.Contains($"{m}/bias"))) return [$"{m}/seqlens_k", $"{m}/total"];
        I64C($"{m}/zero", [], [0]);
        I64C($"{m}/one", [], [1]);
        I64C($"{m}/axis0", [1], [0]);
        Add("Shape", ["attention_mask"], [$"{m}/am_shape"]);
        Add("Gather", [$"{m}/am_shape", $"{m}/one"], [$"{m}/width"], Attr("axis", 0L));
        Add("Gather", [$"{m}/am_shape", $"{m}/zero"], [$"{m}/batch"], Attr("axis", 0L));
        Add("Sub", [$"{m}/width", $"{m}/one"], [$"{m}/width_minus_one"]);
        Add("Unsqueeze", [$"{m}/width_minus_one", $"{m}/axis0"], [$"{m}/width_minus_one_1d"]);
        Add("Unsqueeze", [$"{m}/batch", $"{m}/axis0"], [$"{m}/batch_1d"]);
        Add("Concat", [$"{m}/batch_1d", I64C($"{m}/one_1d", [1], [1])], [$"{m}/b1"], Attr("axis", 0L));
        Add("Expand", [$"{m}/width_minus_one_1d", $"{m}/b1"], [$"{m}/seqlens_b1"]);
        Add("Cast", [$"{m}/seqlens_b1"], [$"{m}/seqlens_k"], Attr("to", (long)TensorProto.Types.DataType.Int32));
        Add("Cast", [$"{m}/width"], [$"{m}/total"], Attr("to", (long)TensorProto.Types.DataType.Int32));
        Add("Cast", ["attention_mask"], [$"{m}/am_f"], Attr("to", (long)F32));
        g.Initializer.Add(TensorProtos.Float($"{m}/one_f", [], [1f]));
        g.Initializer.Add(TensorProtos.Float($"{m}/lowest", [], [float.MinValue]));
        Add("Sub", [$"{m}/one_f", $"{m}/am_f"], [$"{m}/inverted"]);
        Add("Mul", [$"{m}/inverted", $"{m}/lowest"], [$"{m}/bias_2d"]);
        Add("Unsqueeze", [$"{m}/bias_2d", I64C($"{m}/axes12", [2], [1, 2])], [$"{m}/bias_4d"]);
        Add("Shape", ["input_ids"], [$"{m}/ids_shape"]);
        Add("Gather", [$"{m}/ids_shape", $"{m}/one"], [$"{m}/seq"], Attr("axis", 0L));
        Add("Unsqueeze", [$"{m}/seq", $"{m}/axis0"], [$"{m}/seq_1d"]);
        Add("Unsqueeze", [$"{m}/width", $"{m}/axis0"], [$"{m}/width_1d"]);
        Add("Concat", [$"{m}/batch_1d", $"{m}/one_1d", $"{m}/seq_1d", $"{m}/width_1d"], [$"{m}/target"], Attr("axis", 0L));
        Add("Expand", [$"{m}/bias_4d", $"{m}/target"], [$"{m}/bias"]);
        return [$"{m}/seqlens_k", $"{m}/total"];
    }

    private string MultiHeadAttentionLayer(string p, int l, string xn)
    {
        QkvWeights(p);
        MultiHeadAttention(p, l, xn);
        return $"{p}/attn";
    }

    // The 4-D forms: q/k/v as [B, N, S, D] with rotary from plain ops, the attention core, output back to [B, S, N·D].
    private string FourDimensionalLayer(string p, int l, string xn, Action<string, int, string, string, string, string> core)
    {
        QkvWeights(p);
        var q4 = Heads(p, "q", xn, c.NumHeads, rotary: true);
        var k4 = Heads(p, "k", xn, c.KvNumHeads, rotary: true);
        var v4 = Heads(p, "v", xn, c.KvNumHeads, rotary: false);
        string y4 = $"{p}/attn_bhsd";
        core(p, l, q4, k4, v4, y4);
        Add("Transpose", [y4], [$"{p}/attn_bshd"], Ints("perm", 0, 2, 1, 3));
        Add("Reshape", [$"{p}/attn_bshd", I64C($"{p}/merge_shape", [3], [0, 0, h])], [$"{p}/attn"]);
        return $"{p}/attn";
    }

    // ONNX Attention-23 with its past/present cache (is_causal, or the HF mask with padding).
    private void OnnxAttention(string p, int l, string q4, string k4, string v4, string y4) =>
        g.Node.Add(Node("Attention", "", [q4, k4, v4, c.PaddingMask ? HfMask() : "", c.PastName(l, "key"), c.PastName(l, "value")],
            [y4, c.PresentName(l, "key"), c.PresentName(l, "value")],
            [Attr("is_causal", c.PaddingMask ? 0L : 1L), Attr("scale", 1.0f / MathF.Sqrt(c.HeadSize))], $"/{p}/Attention"));

    private string W(string name, int rows, int cols, float std)
    {
        var data = new float[rows * cols];
        for (int i = 0; i < data.Length; i++) data[i] = (float)(rng.NextDouble() * 2 - 1) * std * 1.7f;
        g.Initializer.Add(TensorProtos.Float(name, [rows, cols], data));
        return name;
    }

    private string Ones(string name, int n)
    {
        var data = new float[n];
        for (int i = 0; i < n; i++) data[i] = 1.0f + 0.1f * (float)(rng.NextDouble() * 2 - 1);
        g.Initializer.Add(TensorProtos.Float(name, [n], data));
        return name;
    }

    private string I64C(string name, long[] dims, long[] values) { g.Initializer.Add(TensorProtos.Int64(name, dims, values)); return name; }

    private void Add(string op, string[] inputs, string[] outputs, params AttributeProto[] attrs) =>
        g.Node.Add(Node(op, op is "GroupQueryAttention" or "MultiHeadAttention" or "RotaryEmbedding" ? "com.microsoft" : op == AttentionFunction.Name ? AttentionFunction.Domain : "",
            inputs, outputs, attrs, $"/{outputs[0]}/{op}"));

    private string RmsNorm(string x, string weight, string prefix)
    {
        Add("Mul", [x, x], [$"{prefix}/sq"]);
        if (opset >= 18) Add("ReduceMean", [$"{prefix}/sq", "const_axis_last"], [$"{prefix}/mean"], Attr("keepdims", 1L));
        else Add("ReduceMean", [$"{prefix}/sq"], [$"{prefix}/mean"], Ints("axes", -1), Attr("keepdims", 1L));
        Add("Add", [$"{prefix}/mean", "const_eps"], [$"{prefix}/mean_eps"]);
        Add("Sqrt", [$"{prefix}/mean_eps"], [$"{prefix}/rms"]);
        Add("Div", [x, $"{prefix}/rms"], [$"{prefix}/normed"]);
        Add("Mul", [$"{prefix}/normed", weight], [$"{prefix}/out"]);
        return $"{prefix}/out";
    }

    // Projection → [B, N, S, D] (rotated for q and k); value info as exporters write it.
    private string Heads(string p, string which, string xn, int heads, bool rotary)
    {
        Add("MatMul", [xn, $"{p}.attn.{which}_proj.weight"], [$"{p}/{which}"]);
        Add("Reshape", [$"{p}/{which}", I64C($"{p}/{which}_split_shape", [4], [0, 0, heads, c.HeadSize])], [$"{p}/{which}_bsnd"]);
        string x = $"{p}/{which}_bsnd";
        if (rotary)
        {
            Add("Slice", [x, "rot_first_half", "rot_mid", "rot_axis"], [$"{p}/{which}_x1"]);
            Add("Slice", [x, "rot_mid", "rot_end", "rot_axis"], [$"{p}/{which}_x2"]);
            Add("Neg", [$"{p}/{which}_x2"], [$"{p}/{which}_neg_x2"]);
            Add("Concat", [$"{p}/{which}_neg_x2", $"{p}/{which}_x1"], [$"{p}/{which}_rot"], Attr("axis", -1L));
            Add("Mul", [x, cosFull!], [$"{p}/{which}_cos"]);
            Add("Mul", [$"{p}/{which}_rot", sinFull!], [$"{p}/{which}_sin"]);
            Add("Add", [$"{p}/{which}_cos", $"{p}/{which}_sin"], [$"{p}/{which}_roped"]);
            x = $"{p}/{which}_roped";
        }
        var y = $"{p}/{which}_bnsd";
        Add("Transpose", [x], [y], Ints("perm", 0, 2, 1, 3));
        var vi = Tensor(y, F32, null, heads, null, c.HeadSize);
        vi.Type.TensorType.Shape.Dim[0].DimParam = "batch_size";
        vi.Type.TensorType.Shape.Dim[2].DimParam = "sequence_length";
        g.ValueInfo.Add(vi);
        return y;
    }

    // The scalars both attention_mask-derived masks start from, as their exporters compute them:
    // {m}/batch and {m}/seq from input_ids' shape, {m}/past from the first past key's, and the
    // constants {m}/zero, one, two (scalars) and {m}/axis0 ([0]).
    private void BatchSeqPast(string m)
    {
        I64C($"{m}/zero", [], [0]);
        I64C($"{m}/one", [], [1]);
        I64C($"{m}/two", [], [2]);
        I64C($"{m}/axis0", [1], [0]);
        Add("Shape", ["input_ids"], [$"{m}/ids_shape"]);
        Add("Gather", [$"{m}/ids_shape", $"{m}/zero"], [$"{m}/batch"], Attr("axis", 0L));
        Add("Gather", [$"{m}/ids_shape", $"{m}/one"], [$"{m}/seq"], Attr("axis", 0L));
        Add("Shape", [c.PastName(0, "key")], [$"{m}/past_shape"]);
        Add("Gather", [$"{m}/past_shape", $"{m}/two"], [$"{m}/past"], Attr("axis", 0L));
    }

    // transformers' _update_causal_mask as TorchScript exports it (optimum): once per model, [B, 1, S, T].
    private string HfMask()
    {
        if (hfMask is not null) return hfMask;
        const string m = "hf_mask";
        BatchSeqPast(m);
        Add("Shape", ["attention_mask"], [$"{m}/am_shape"]);
        Add("Gather", [$"{m}/am_shape", $"{m}/one"], [$"{m}/target"], Attr("axis", 0L));
        Add("Unsqueeze", [$"{m}/seq", $"{m}/axis0"], [$"{m}/seq_1d"]);
        Add("Unsqueeze", [$"{m}/target", $"{m}/axis0"], [$"{m}/target_1d"]);
        Add("Unsqueeze", [$"{m}/batch", $"{m}/axis0"], [$"{m}/batch_1d"]);
        Add("Concat", [$"{m}/seq_1d", $"{m}/target_1d"], [$"{m}/full_shape"], Attr("axis", 0L));
        // causal_mask = torch.full((S, T), min); triu(diagonal=1); *= arange(T) > cache_position.reshape(-1, 1)
        g.Node.Add(Node("ConstantOfShape", "", [$"{m}/full_shape"], [$"{m}/full"],
            [new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = TensorProtos.Float("", [1], [float.MinValue]) }], $"/{m}/full/ConstantOfShape"));
        Add("Trilu", [$"{m}/full", $"{m}/one"], [$"{m}/triu"], Attr("upper", 1L));
        Add("Add", [$"{m}/past", $"{m}/seq"], [$"{m}/past_plus_seq"]);
        Add("Range", [$"{m}/past", $"{m}/past_plus_seq", $"{m}/one"], [$"{m}/cache_position"]);
        Add("Range", [$"{m}/zero", $"{m}/target", $"{m}/one"], [$"{m}/arange"]);
        Add("Reshape", [$"{m}/cache_position", I64C($"{m}/col_shape", [2], [-1, 1])], [$"{m}/cache_position_col"]);
        Add("Greater", [$"{m}/arange", $"{m}/cache_position_col"], [$"{m}/after"]);
        Add("Cast", [$"{m}/after"], [$"{m}/after_f"], Attr("to", (long)F32));
        Add("Mul", [$"{m}/triu", $"{m}/after_f"], [$"{m}/causal_2d"]);
        // causal_mask[None, None, :, :].expand(B, 1, -1, -1), with the exporters' Where(Equal(shape, -1), 1, shape) guard
        Add("Unsqueeze", [$"{m}/causal_2d", I64C($"{m}/axes01", [2], [0, 1])], [$"{m}/causal_4d"]);
        Add("Concat", [$"{m}/batch_1d", I64C($"{m}/one_1d", [1], [1]), $"{m}/seq_1d", $"{m}/target_1d"], [$"{m}/expand_shape_raw"], Attr("axis", 0L));
        g.Node.Add(Node("ConstantOfShape", "", [I64C($"{m}/four", [1], [4])], [$"{m}/ones4"],
            [new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = TensorProtos.Int64("", [1], [1]) }], $"/{m}/ones4/ConstantOfShape"));
        Add("Mul", [$"{m}/ones4", I64C($"{m}/minus_one", [], [-1])], [$"{m}/minus_ones4"]);
        Add("Equal", [$"{m}/expand_shape_raw", $"{m}/minus_ones4"], [$"{m}/is_minus_one"]);
        Add("Where", [$"{m}/is_minus_one", $"{m}/ones4", $"{m}/expand_shape_raw"], [$"{m}/expand_shape"]);
        Add("Expand", [$"{m}/causal_4d", $"{m}/expand_shape"], [$"{m}/causal"]);
        // padding_mask = (causal + attention_mask[:, None, None, :]) == 0 → min
        Add("Unsqueeze", ["attention_mask", I64C($"{m}/axes12", [2], [1, 2])], [$"{m}/am_4d"]);
        Add("Cast", [$"{m}/am_4d"], [$"{m}/am_f"], Attr("to", (long)F32));
        Add("Add", [$"{m}/causal", $"{m}/am_f"], [$"{m}/sum"]);
        g.Initializer.Add(TensorProtos.Float($"{m}/zero_f", [], [0f]));
        g.Initializer.Add(TensorProtos.Float($"{m}/min", [], [float.MinValue]));
        Add("Equal", [$"{m}/sum", $"{m}/zero_f"], [$"{m}/padded"]);
        Add("Where", [$"{m}/padded", $"{m}/min", $"{m}/causal"], [$"{m}/mask"]);
        return hfMask = $"{m}/mask";
    }

    // The ONNX Attention function body: Concat caches, repeat_kv, scaled scores, causal mask offset by the past.
    private void DecomposedAttention(string p, int l, string q4, string k4, string v4, string y4)
    {
        string pk = c.PresentName(l, "key"), pv = c.PresentName(l, "value");
        Add("Concat", [c.PastName(l, "key"), k4], [pk], Attr("axis", 2L));
        Add("Concat", [c.PastName(l, "value"), v4], [pv], Attr("axis", 2L));
        int group = c.NumHeads / c.KvNumHeads;
        string RepeatKv(string x, string name)
        {
            Add("Shape", [x], [$"{p}/{name}_lead"], Attr("start", 0L), Attr("end", 2L));
            Add("Shape", [x], [$"{p}/{name}_tail"], Attr("start", 2L), Attr("end", 4L));
            Add("Concat", [$"{p}/{name}_lead", I64C($"{p}/{name}_group", [1], [group]), $"{p}/{name}_tail"], [$"{p}/{name}_expand_shape"], Attr("axis", 0L));
            Add("Unsqueeze", [x, I64C($"{p}/{name}_unsq_axis", [1], [2])], [$"{p}/{name}_unsq"]);
            Add("Expand", [$"{p}/{name}_unsq", $"{p}/{name}_expand_shape"], [$"{p}/{name}_expanded"]);
            Add("Reshape", [$"{p}/{name}_expanded", I64C($"{p}/{name}_rep_shape", [4], [0, c.NumHeads, -1, c.HeadSize])], [$"{p}/{name}_rep"]);
            return $"{p}/{name}_rep";
        }
        var kRep = RepeatKv(pk, "k");
        var vRep = RepeatKv(pv, "v");
        if (c.Form == DecoderAttentionForm.Function)
        {
            Add(AttentionFunction.Name, [q4, kRep, vRep, CausalMask(p, l, q4, pk)], [y4]);
            return;
        }
        var masked = c.Form switch
        {
            DecoderAttentionForm.FusedMatMul => Masked(p, FusedScores(p, q4, kRep), CausalMask(p, l, q4, pk)),
            DecoderAttentionForm.TorchScriptGpt2 => Gpt2MaskedScores(p, q4, kRep, pk),
            _ => Masked(p, ScaledScores(p, q4, kRep), CausalMask(p, l, q4, pk)),
        };
        Add("Softmax", [masked], [$"{p}/probs"], Attr("axis", -1L));
        Add("MatMul", [$"{p}/probs", vRep], [y4]);
    }

    // (Q·√s)(Kᵀ·√s) with s = 1/√D, as the ONNX Attention function body scales both operands.
    private string ScaledScores(string p, string q4, string kRep)
    {
        var factor = $"{p}/scale_sqrt";
        g.Initializer.Add(TensorProtos.Float(factor, [], [MathF.Sqrt(1.0f / MathF.Sqrt(c.HeadSize))]));
        Add("Mul", [q4, factor], [$"{p}/q_scaled"]);
        Add("Transpose", [kRep], [$"{p}/k_t"], Ints("perm", 0, 1, 3, 2));
        Add("Mul", [$"{p}/k_t", factor], [$"{p}/k_scaled"]);
        Add("MatMul", [$"{p}/q_scaled", $"{p}/k_scaled"], [$"{p}/scores"]);
        return $"{p}/scores";
    }

    // com.microsoft::FusedMatMul(Q, K, transB=1, alpha=1/√D): Q·Kᵀ scaled in one node.
    private string FusedScores(string p, string q4, string kRep)
    {
        g.Node.Add(Node("FusedMatMul", "com.microsoft", [q4, kRep], [$"{p}/scores"],
            [Attr("transB", 1L), Attr("alpha", 1.0f / MathF.Sqrt(c.HeadSize))], $"/{p}/scores/FusedMatMul"));
        return $"{p}/scores";
    }

    private string Masked(string p, string scores, string mask)
    {
        Add("Add", [scores, mask], [$"{p}/scores_masked"]);
        return $"{p}/scores_masked";
    }

    // Causal mask (key j is hidden from query i when past + i < j), or the HF mask with padding.
    private string CausalMask(string p, int l, string q4, string pk)
    {
        var zero = I64C($"{p}/zero", [], [0]);
        var oneS = I64C($"{p}/one", [], [1]);
        var squeezeAxis = I64C($"{p}/squeeze_axis", [1], [0]);
        Add("Shape", [q4], [$"{p}/q_len_1d"], Attr("start", 2L), Attr("end", 3L));
        Add("Shape", [pk], [$"{p}/t_len_1d"], Attr("start", 2L), Attr("end", 3L));
        Add("Shape", [c.PastName(l, "key")], [$"{p}/past_len"], Attr("start", 2L), Attr("end", 3L));
        Add("Squeeze", [$"{p}/q_len_1d", squeezeAxis], [$"{p}/q_len"]);
        Add("Squeeze", [$"{p}/t_len_1d", squeezeAxis], [$"{p}/t_len"]);
        Add("Range", [zero, $"{p}/q_len", oneS], [$"{p}/rows"]);
        Add("Range", [zero, $"{p}/t_len", oneS], [$"{p}/cols"]);
        Add("Unsqueeze", [$"{p}/rows", I64C($"{p}/row_axis", [1], [1])], [$"{p}/rows_2d"]);
        Add("Unsqueeze", [$"{p}/cols", I64C($"{p}/col_axis", [1], [0])], [$"{p}/cols_2d"]);
        Add("Add", [$"{p}/rows_2d", $"{p}/past_len"], [$"{p}/rows_past"]);
        Add("Less", [$"{p}/rows_past", $"{p}/cols_2d"], [$"{p}/hidden"]);
        g.Initializer.Add(TensorProtos.Float($"{p}/neg_inf", [], [float.NegativeInfinity]));
        g.Initializer.Add(TensorProtos.Float($"{p}/zero_f", [], [0f]));
        Add("Where", [$"{p}/hidden", $"{p}/neg_inf", $"{p}/zero_f"], [$"{p}/mask"]);
        return c.PaddingMask ? HfMask() : $"{p}/mask";
    }

    // TorchScript GPT-2: MatMul(Q, Kᵀ) / √D; Where(Cast(bias[:, :, T − S:T, :T]), scores, −1e4) with the
    // constant tril buffer; + (1 − attention_mask)[:, None, None, :]·−1e4 (built once).
    private string Gpt2MaskedScores(string p, string q4, string kRep, string pk)
    {
        const string m = "gpt2";
        if (!g.Initializer.Any(t => t.Name == $"{m}/bias"))
        {
            int n = Math.Min(c.MaxPositions, 1024);
            var tril = new byte[n * n];
            for (int i = 0; i < n; i++)
                for (int j = 0; j <= i; j++) tril[i * n + j] = 1;
            g.Initializer.Add(TensorProtos.Create<byte>($"{m}/bias", TensorProto.Types.DataType.Uint8, [1, 1, n, n], tril));
            g.Initializer.Add(TensorProtos.Float($"{m}/masked_bias", [], [-1e4f]));
            g.Initializer.Add(TensorProtos.Float($"{m}/sqrt_d", [], [MathF.Sqrt(c.HeadSize)]));
            g.Initializer.Add(TensorProtos.Float($"{m}/one_f", [], [1f]));
            I64C($"{m}/two", [], [2]);
            I64C($"{m}/axis0", [1], [0]);
            I64C($"{m}/zero_1d", [1], [0]);
            I64C($"{m}/axis2_1d", [1], [2]);
            I64C($"{m}/axis3_1d", [1], [3]);
            Add("Unsqueeze", ["attention_mask", I64C($"{m}/axes12", [2], [1, 2])], [$"{m}/am_4d"]);
            Add("Cast", [$"{m}/am_4d"], [$"{m}/am_f"], Attr("to", (long)F32));
            Add("Sub", [$"{m}/one_f", $"{m}/am_f"], [$"{m}/inverted"]);
            Add("Mul", [$"{m}/inverted", $"{m}/masked_bias"], [$"{m}/padding"]);
        }
        Add("Transpose", [kRep], [$"{p}/k_t"], Ints("perm", 0, 1, 3, 2));
        Add("MatMul", [q4, $"{p}/k_t"], [$"{p}/qk"]);
        Add("Div", [$"{p}/qk", $"{m}/sqrt_d"], [$"{p}/scores"]);
        Add("Shape", [q4], [$"{p}/q_shape"]);
        Add("Gather", [$"{p}/q_shape", $"{m}/two"], [$"{p}/query_length"], Attr("axis", 0L));
        Add("Shape", [pk], [$"{p}/k_shape"]);
        Add("Gather", [$"{p}/k_shape", $"{m}/two"], [$"{p}/key_length"], Attr("axis", 0L));
        Add("Sub", [$"{p}/key_length", $"{p}/query_length"], [$"{p}/row_start"]);
        Add("Unsqueeze", [$"{p}/row_start", $"{m}/axis0"], [$"{p}/row_start_1d"]);
        Add("Unsqueeze", [$"{p}/key_length", $"{m}/axis0"], [$"{p}/key_length_1d"]);
        Add("Slice", [$"{m}/bias", $"{p}/row_start_1d", $"{p}/key_length_1d", $"{m}/axis2_1d"], [$"{p}/bias_rows"]);
        Add("Slice", [$"{p}/bias_rows", $"{m}/zero_1d", $"{p}/key_length_1d", $"{m}/axis3_1d"], [$"{p}/causal_u8"]);
        Add("Cast", [$"{p}/causal_u8"], [$"{p}/causal"], Attr("to", (long)TensorProto.Types.DataType.Bool));
        Add("Where", [$"{p}/causal", $"{p}/scores", $"{m}/masked_bias"], [$"{p}/scores_causal"]);
        Add("Add", [$"{p}/scores_causal", $"{m}/padding"], [$"{p}/scores_masked"]);
        return $"{p}/scores_masked";
    }

    // The Function form's attention body: scale, Q·Kᵀ, + mask, softmax, · V (constants as Constant nodes).
    private static class AttentionFunction
    {
        public const string Name = "CausalAttention", Domain = "pkg.torch_lib";

        public static FunctionProto Build(int headSize)
        {
            var f = new FunctionProto { Name = Name, Domain = Domain };
            f.Input.AddRange(["query", "key", "value", "attn_mask"]);
            f.Output.Add("output");
            f.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 23 });
            f.Node.Add(Node("Constant", "", [], ["scale"],
                [new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = TensorProtos.Float("", [], [1.0f / MathF.Sqrt(headSize)]) }], "n0"));
            f.Node.Add(Node("Transpose", "", ["key"], ["key_t"], [Ints("perm", 0, 1, 3, 2)], "n1"));
            f.Node.Add(Node("MatMul", "", ["query", "key_t"], ["qk"], name: "n2"));
            f.Node.Add(Node("Mul", "", ["qk", "scale"], ["scores"], name: "n3"));
            f.Node.Add(Node("Add", "", ["scores", "attn_mask"], ["masked"], name: "n4"));
            f.Node.Add(Node("Softmax", "", ["masked"], ["probs"], [Attr("axis", -1L)], "n5"));
            f.Node.Add(Node("MatMul", "", ["probs", "value"], ["output"], name: "n6"));
            return f;
        }
    }

    // The ORT optimizer's MHA layout: RotaryEmbedding on 3-D q/k, repeat_kv in 3-D, one causal
    // attention_bias [1, 1, S, P + S] (rows offset by the past length) shared by every layer.
    private string CausalBias(string q3)
    {
        if (causalBias is not null) return causalBias;
        I64C("mask/zero", [], [0]);
        I64C("mask/one", [], [1]);
        I64C("mask/two", [], [2]);
        Add("Shape", [q3], ["mask/q_shape"]);
        Add("Gather", ["mask/q_shape", "mask/one"], ["mask/q_len"], Attr("axis", 0L));
        Add("Shape", [c.PastName(0, "key")], ["mask/past_shape"]);
        Add("Gather", ["mask/past_shape", "mask/two"], ["mask/past_len"], Attr("axis", 0L));
        Add("Add", ["mask/past_len", "mask/q_len"], ["mask/total_len"]);
        Add("Range", ["mask/zero", "mask/q_len", "mask/one"], ["mask/rows"]);
        Add("Range", ["mask/zero", "mask/total_len", "mask/one"], ["mask/cols"]);
        Add("Unsqueeze", ["mask/rows", I64C("mask/row_axis", [1], [1])], ["mask/rows_2d"]);
        Add("Unsqueeze", ["mask/cols", I64C("mask/col_axis", [1], [0])], ["mask/cols_2d"]);
        Add("Add", ["mask/rows_2d", "mask/past_len"], ["mask/positions"]);
        Add("Less", ["mask/positions", "mask/cols_2d"], ["mask/hidden"]);
        g.Initializer.Add(TensorProtos.Float("mask/min", [], [float.MinValue]));
        g.Initializer.Add(TensorProtos.Float("mask/zero_f", [], [0f]));
        Add("Where", ["mask/hidden", "mask/min", "mask/zero_f"], ["mask/bias_2d"]);
        Add("Unsqueeze", ["mask/bias_2d", I64C("mask/bias_axes", [2], [0, 1])], ["mask/attention_bias"]);
        return causalBias = "mask/attention_bias";
    }

    // The genai builder's MHA mask (attn_mask_reformat): a square [S, S] causal mask expanded to
    // [B, 1, S, P + S] (valid when P = 0 or S = 1, the only steps genai runs), plus key padding
    // from attention_mask values, added, tiled by ones; shared by every layer.
    private string GenAiMask()
    {
        if (genaiMask is not null) return genaiMask;
        const string m = "attn_mask_reformat";
        BatchSeqPast(m);
        Add("Add", [$"{m}/seq", $"{m}/past"], [$"{m}/total"]);
        foreach (var (v, name) in new[] { ($"{m}/batch", "batch_1d"), ($"{m}/seq", "seq_1d"), ($"{m}/total", "total_1d") })
            Add("Unsqueeze", [v, $"{m}/axis0"], [$"{m}/{name}"]);
        Add("Concat", [$"{m}/seq_1d", $"{m}/seq_1d"], [$"{m}/square_shape"], Attr("axis", 0L));
        g.Node.Add(Node("ConstantOfShape", "", [$"{m}/square_shape"], [$"{m}/lowest"],
            [new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = TensorProtos.Float("", [1], [float.MinValue]) }], $"/{m}/lowest/ConstantOfShape"));
        Add("Range", [$"{m}/zero", $"{m}/seq", $"{m}/one"], [$"{m}/range"]);
        Add("Add", [$"{m}/range", $"{m}/one"], [$"{m}/range_plus_one"]);
        Add("Concat", [$"{m}/seq_1d", I64C($"{m}/one_1d", [1], [1])], [$"{m}/col_shape"], Attr("axis", 0L));
        Add("Reshape", [$"{m}/range_plus_one", $"{m}/col_shape"], [$"{m}/rows"]);
        Add("Less", [$"{m}/range", $"{m}/rows"], [$"{m}/visible"]);
        g.Initializer.Add(TensorProtos.Float($"{m}/zero_f", [], [0f]));
        Add("Where", [$"{m}/visible", $"{m}/zero_f", $"{m}/lowest"], [$"{m}/square"]);
        Add("Unsqueeze", [$"{m}/square", $"{m}/axis0"], [$"{m}/square_3d"]);
        Add("Unsqueeze", [$"{m}/square_3d", I64C($"{m}/axis1", [1], [1])], [$"{m}/square_4d"]);
        Add("Concat", [$"{m}/batch_1d", $"{m}/one_1d", $"{m}/seq_1d", $"{m}/total_1d"], [$"{m}/causal_shape"], Attr("axis", 0L));
        Add("Expand", [$"{m}/square_4d", $"{m}/causal_shape"], [$"{m}/causal"]);
        // padding: 1 - mask, as bool → lowest, else 0
        Add("Unsqueeze", ["attention_mask", $"{m}/axis1"], [$"{m}/am_3d"]);
        Add("Unsqueeze", [$"{m}/am_3d", I64C($"{m}/axis2", [1], [2])], [$"{m}/am_4d"]);
        Add("Shape", ["attention_mask"], [$"{m}/am_shape"]);
        Add("Gather", [$"{m}/am_shape", $"{m}/one"], [$"{m}/am_width"], Attr("axis", 0L));
        Add("Unsqueeze", [$"{m}/am_width", $"{m}/axis0"], [$"{m}/am_width_1d"]);
        Add("Concat", [$"{m}/batch_1d", $"{m}/one_1d", $"{m}/seq_1d", $"{m}/am_width_1d"], [$"{m}/pad_shape"], Attr("axis", 0L));
        Add("Expand", [$"{m}/am_4d", $"{m}/pad_shape"], [$"{m}/am_expanded"]);
        Add("Cast", [$"{m}/am_expanded"], [$"{m}/am_f"], Attr("to", (long)F32));
        g.Initializer.Add(TensorProtos.Float($"{m}/one_f", [], [1f]));
        Add("Sub", [$"{m}/one_f", $"{m}/am_f"], [$"{m}/inverted"]);
        Add("Cast", [$"{m}/inverted"], [$"{m}/inverted_bool"], Attr("to", (long)TensorProto.Types.DataType.Bool));
        g.Initializer.Add(TensorProtos.Float($"{m}/lowest_f", [], [float.MinValue]));
        Add("Where", [$"{m}/inverted_bool", $"{m}/lowest_f", $"{m}/inverted"], [$"{m}/padding"]);
        Add("Add", [$"{m}/padding", $"{m}/causal"], [$"{m}/sum"]);
        Add("Tile", [$"{m}/sum", I64C($"{m}/repeats", [4], [1, 1, 1, 1])], [$"{m}/mask"]);
        return genaiMask = $"{m}/mask";
    }

    private void MultiHeadAttention(string p, int l, string xn)
    {
        string Rotary(string x, string which)
        {
            Add("RotaryEmbedding", [x, "position_ids", "cos_cache", "sin_cache"], [$"{p}/{which}_rot"], Attr("num_heads", (long)(which == "q" ? c.NumHeads : c.KvNumHeads)));
            return $"{p}/{which}_rot";
        }
        string Repeat(string x, string which)
        {
            int group = c.NumHeads / c.KvNumHeads;
            if (group == 1) return x;
            Add("Reshape", [x, I64C($"{p}/{which}_kv_split", [5], [0, 0, c.KvNumHeads, 1, c.HeadSize])], [$"{p}/{which}_kv5"]);
            Add("Expand", [$"{p}/{which}_kv5", I64C($"{p}/{which}_kv_expand", [5], [1, 1, c.KvNumHeads, group, c.HeadSize])], [$"{p}/{which}_kv5_rep"]);
            Add("Reshape", [$"{p}/{which}_kv5_rep", I64C($"{p}/{which}_kv_merge", [3], [0, 0, h])], [$"{p}/{which}_rep"]);
            return $"{p}/{which}_rep";
        }
        Add("MatMul", [xn, $"{p}.attn.q_proj.weight"], [$"{p}/q"]);
        Add("MatMul", [xn, $"{p}.attn.k_proj.weight"], [$"{p}/k"]);
        Add("MatMul", [xn, $"{p}.attn.v_proj.weight"], [$"{p}/v"]);
        var q = Rotary($"{p}/q", "q");
        var k = Repeat(Rotary($"{p}/k", "k"), "k");
        var v = Repeat($"{p}/v", "v");
        Add("MultiHeadAttention", [q, k, v, "", "", c.PaddingMask ? GenAiMask() : CausalBias(q), c.PastName(l, "key"), c.PastName(l, "value")],
            [$"{p}/attn", c.PresentName(l, "key"), c.PresentName(l, "value")],
            Attr("num_heads", (long)c.NumHeads), Attr("scale", 1.0f / MathF.Sqrt(c.HeadSize)));
    }
}
