using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.Models;

/// <summary>
/// A tiny GPT-2-style decoder as ORT's transformers optimizer leaves it: token plus learned position
/// embeddings (int32 <c>input_ids</c>, <c>position_ids</c>), per layer LayerNorm → legacy
/// <c>com.microsoft::Attention</c> (fused QKV weights [hidden, 3·hidden] and bias, unidirectional=1,
/// int32 2-D <c>attention_mask</c> [B, P + S], one packed <c>past_i</c>/<c>present_i</c>
/// [2, B, H, P, D]) → output projection and residual, LayerNorm → GELU MLP and residual, final
/// LayerNorm and lm_head. Seeded like <see cref="TinyDecoderGenerator"/>: the same config gives the same bytes.
/// </summary>
public static class LegacyAttentionDecoder
{
    private const TensorProto.Types.DataType F32 = TensorProto.Types.DataType.Float;
    private const TensorProto.Types.DataType I32 = TensorProto.Types.DataType.Int32;

    /// <summary>Name of layer <paramref name="layer"/>'s packed past input (the optimizer's names).</summary>
    public static string PastName(int layer) => $"past_{layer}";

    /// <summary>Name of layer <paramref name="layer"/>'s packed present output.</summary>
    public static string PresentName(int layer) => $"present_{layer}";

    /// <summary>Generates the model (weights inline); heads are <see cref="TinyDecoderConfig.NumHeads"/> for Q, K and V.</summary>
    public static ModelProto Generate(TinyDecoderConfig c)
    {
        if (c.HeadSize % 8 != 0) throw new ArgumentException("head size must be a multiple of 8");
        if (c.PaddingMask || c.PackedQkv) throw new ArgumentException("the legacy Attention form always takes a 2-D attention_mask and fused QKV");
        var rng = new Random(c.Seed);
        var g = new GraphProto { Name = "tiny_gpt2_legacy_attention" };
        int h = c.Hidden;
        string W(string name, float std, params long[] dims)
        {
            var data = new float[dims.Aggregate(1L, (a, b) => a * b)];
            for (int i = 0; i < data.Length; i++) data[i] = (float)(rng.NextDouble() * 2 - 1) * std * 1.7f;
            g.Initializer.Add(TensorProtos.Float(name, dims, data));
            return name;
        }
        string Norm(string name, float center, int n)
        {
            var data = new float[n];
            for (int i = 0; i < n; i++) data[i] = center + 0.1f * (float)(rng.NextDouble() * 2 - 1);
            g.Initializer.Add(TensorProtos.Float(name, [n], data));
            return name;
        }
        void Add(string op, string[] inputs, string[] outputs, params AttributeProto[] attrs) =>
            g.Node.Add(Node(op, op is "Attention" or "FastGelu" ? "com.microsoft" : "", inputs, outputs, attrs, $"/{outputs[0]}/{op}"));
        ValueInfoProto Cache(string name, string seq)
        {
            var v = Tensor(name, F32, 2, null, c.NumHeads, null, c.HeadSize);
            v.Type.TensorType.Shape.Dim[1].DimParam = "batch_size";
            v.Type.TensorType.Shape.Dim[3].DimParam = seq;
            return v;
        }
        ValueInfoProto Named(ValueInfoProto v, params string[] symbols)
        {
            for (int i = 0; i < symbols.Length; i++) v.Type.TensorType.Shape.Dim[i].DimParam = symbols[i];
            return v;
        }

        g.Input.Add(Named(Tensor("input_ids", I32, null, null), "batch_size", "seq_len"));
        g.Input.Add(Named(Tensor("position_ids", I32, null, null), "batch_size", "seq_len"));
        g.Input.Add(Named(Tensor("attention_mask", I32, null, null), "batch_size", "total_seq_len"));
        for (int l = 0; l < c.Layers; l++) g.Input.Add(Cache(PastName(l), "past_seq_len"));
        g.Output.Add(Named(Tensor("logits", F32, null, null, c.Vocab), "batch_size", "seq_len"));
        for (int l = 0; l < c.Layers; l++) g.Output.Add(Cache(PresentName(l), "total_seq_len"));

        Add("Gather", [W("wte", 1.0f, c.Vocab, h), "input_ids"], ["tokens"]);
        Add("Gather", [W("wpe", 0.5f, c.MaxPositions, h), "position_ids"], ["positions"]);
        Add("Add", ["tokens", "positions"], ["x0"]);
        string x = "x0";
        for (int l = 0; l < c.Layers; l++)
        {
            string P(string s) => $"h{l}_{s}";
            Add("LayerNormalization", [x, Norm(P("ln1_w"), 1, h), Norm(P("ln1_b"), 0, h)], [P("ln1")], Attr("axis", -1L), Attr("epsilon", 1e-5f));
            Add("Attention", [P("ln1"), W(P("c_attn_w"), 1.0f / MathF.Sqrt(h), h, 3 * h), Norm(P("c_attn_b"), 0, 3 * h), "attention_mask", PastName(l)],
                [P("attn"), PresentName(l)], Attr("num_heads", (long)c.NumHeads), Attr("unidirectional", 1L));
            Add("MatMul", [P("attn"), W(P("c_proj_w"), 1.0f / MathF.Sqrt(h), h, h)], [P("attn_out")]);
            Add("Add", [x, P("attn_out")], [P("x1")]);
            Add("LayerNormalization", [P("x1"), Norm(P("ln2_w"), 1, h), Norm(P("ln2_b"), 0, h)], [P("ln2")], Attr("axis", -1L), Attr("epsilon", 1e-5f));
            Add("MatMul", [P("ln2"), W(P("c_fc_w"), 1.0f / MathF.Sqrt(h), h, c.Intermediate)], [P("fc")]);
            Add("FastGelu", [P("fc"), Norm(P("c_fc_b"), 0, c.Intermediate)], [P("gelu")]);
            Add("MatMul", [P("gelu"), W(P("mlp_proj_w"), 1.0f / MathF.Sqrt(c.Intermediate), c.Intermediate, h)], [P("mlp_out")]);
            Add("Add", [P("x1"), P("mlp_out")], [P("x2")]);
            x = P("x2");
        }
        Add("LayerNormalization", [x, Norm("ln_f_w", 1, h), Norm("ln_f_b", 0, h)], ["ln_f"], Attr("axis", -1L), Attr("epsilon", 1e-5f));
        Add("MatMul", ["ln_f", W("lm_head", 1.0f / MathF.Sqrt(h), h, c.Vocab)], ["logits"]);

        var m = Model(g, ("", 17), ("com.microsoft", 1));
        m.IrVersion = 8;
        m.ProducerName = "infllmv2-tiny-decoder";
        m.DocString = $"tiny GPT-2 decoder (legacy Attention): {c}";
        return m;
    }
}
