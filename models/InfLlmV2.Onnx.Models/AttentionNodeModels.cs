using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.OpContract;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.Models;

/// <summary>Which attention op a single-node model holds.</summary>
public enum AttentionOpKind
{
    /// <summary><c>com.infllmv2::SwitchableAttention</c> (docs/op-spec.md).</summary>
    Switchable,

    /// <summary>ONNX Runtime's <c>com.microsoft::GroupQueryAttention</c>.</summary>
    GroupQueryAttention,
}

/// <summary>Shape and attributes of a single attention node model.</summary>
public sealed record AttentionNodeConfig
{
    /// <summary>Op in the node.</summary>
    public AttentionOpKind Kind { get; init; } = AttentionOpKind.Switchable;

    /// <summary>Element type of activations and caches (Float or Float16).</summary>
    public TensorProto.Types.DataType ElementType { get; init; } = TensorProto.Types.DataType.Float;

    /// <summary>Query heads H.</summary>
    public int NumHeads { get; init; } = 4;

    /// <summary>Key/value heads Hkv.</summary>
    public int KvNumHeads { get; init; } = 2;

    /// <summary>Packed QKV in input 0 (key/value omitted).</summary>
    public bool PackedQkv { get; init; }

    /// <summary>past_key/past_value inputs present.</summary>
    public bool WithPast { get; init; } = true;

    /// <summary>cos_cache/sin_cache inputs present and do_rotary=1.</summary>
    public bool DoRotary { get; init; }

    /// <summary>Extra attributes (e.g. softcap, local_window_size, topk, dense_len).</summary>
    public IReadOnlyDictionary<string, double> Attributes { get; init; } = new Dictionary<string, double>();

    /// <summary>SwitchableAttention only: past_compressed_key input and present_compressed_key output.</summary>
    public bool WithCompressedState { get; init; }

    /// <summary>SwitchableAttention only: attention_mode input.</summary>
    public bool WithAttentionMode { get; init; }

    /// <summary>SwitchableAttention only: selected_blocks output.</summary>
    public bool WithSelectedBlocks { get; init; }
}

/// <summary>Builds one-node attention models (tests, demo, benchmarks) with GQA's input names.</summary>
public static class AttentionNodeModels
{
    /// <summary>Attributes holding floats; every other attribute is an int.</summary>
    private static readonly HashSet<string> FloatAttributes = ["scale", "softcap"];

    /// <summary>The model; graph inputs and outputs are named as the op's inputs/outputs.</summary>
    public static ModelProto Build(AttentionNodeConfig c)
    {
        var t = c.ElementType;
        var i32 = TensorProto.Types.DataType.Int32;
        var g = new GraphProto { Name = "attention" };
        var inputs = new List<string> { "query" };
        g.Input.Add(Tensor("query", t, null, null, null));
        if (c.PackedQkv)
        {
            inputs.AddRange(["", ""]);
        }
        else
        {
            inputs.AddRange(["key", "value"]);
            g.Input.Add(Tensor("key", t, null, null, null));
            g.Input.Add(Tensor("value", t, null, null, null));
        }
        if (c.WithPast)
        {
            inputs.AddRange(["past_key", "past_value"]);
            g.Input.Add(Tensor("past_key", t, null, c.KvNumHeads, null, null));
            g.Input.Add(Tensor("past_value", t, null, c.KvNumHeads, null, null));
        }
        else
        {
            inputs.AddRange(["", ""]);
        }
        inputs.AddRange(["seqlens_k", "total_sequence_length"]);
        g.Input.Add(Tensor("seqlens_k", i32, (long?)null));
        g.Input.Add(Tensor("total_sequence_length", i32));
        if (c.DoRotary)
        {
            inputs.AddRange(["cos_cache", "sin_cache"]);
            g.Input.Add(Tensor("cos_cache", t, null, null));
            g.Input.Add(Tensor("sin_cache", t, null, null));
        }
        bool switchable = c.Kind == AttentionOpKind.Switchable;
        if (switchable && (c.WithCompressedState || c.WithAttentionMode))
        {
            if (!c.DoRotary) inputs.AddRange(["", ""]);
            if (c.WithCompressedState)
            {
                inputs.Add("past_compressed_key");
                g.Input.Add(Tensor("past_compressed_key", t, null, c.KvNumHeads, null, null));
            }
            else
            {
                inputs.Add("");
            }
            if (c.WithAttentionMode)
            {
                inputs.Add("attention_mode");
                g.Input.Add(Tensor("attention_mode", i32));
            }
        }
        while (inputs.Count > 0 && inputs[^1].Length == 0) inputs.RemoveAt(inputs.Count - 1);

        var outputs = new List<string> { "output", "present_key", "present_value" };
        g.Output.Add(Tensor("output", t, null, null, null));
        g.Output.Add(Tensor("present_key", t, null, c.KvNumHeads, null, null));
        g.Output.Add(Tensor("present_value", t, null, c.KvNumHeads, null, null));
        if (switchable && (c.WithCompressedState || c.WithSelectedBlocks))
        {
            outputs.Add(c.WithCompressedState ? "present_compressed_key" : "");
            if (c.WithCompressedState) g.Output.Add(Tensor("present_compressed_key", t, null, c.KvNumHeads, null, null));
            if (c.WithSelectedBlocks)
            {
                outputs.Add("selected_blocks");
                g.Output.Add(Tensor("selected_blocks", i32, null, c.KvNumHeads, null, null));
            }
        }

        var attrs = new List<AttributeProto> { Attr("num_heads", (long)c.NumHeads), Attr("kv_num_heads", (long)c.KvNumHeads) };
        if (c.DoRotary) attrs.Add(Attr("do_rotary", 1L));
        foreach (var (name, value) in c.Attributes)
            attrs.Add(FloatAttributes.Contains(name) ? Attr(name, (float)value) : Attr(name, (long)value));

        var (opType, domain) = switchable ? (SwitchableAttentionOp.OpType, SwitchableAttentionOp.Domain) : ("GroupQueryAttention", "com.microsoft");
        g.Node.Add(Node(opType, domain, inputs, outputs, attrs, "attention"));
        return Model(g, ("", 21), (domain, 1));
    }
}
