using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools.Rewriting;

/// <summary>
/// What SwitchableAttention can run (docs/op-spec.md): query and kv heads in [1, <see cref="NodeAttributes.MaxHeads"/>]
/// with the query heads a multiple of the kv heads, a head size that is a multiple of 8 up to 256, and
/// fp32 or fp16 elements (the CPU kernels; bf16 exists on CUDA only). Every rule asks this one gate
/// once it knows the site's heads, head size and element type; what it does not know yet it does not judge.
/// </summary>
public static class OpCapability
{
    /// <summary>Largest head size the kernels take.</summary>
    public const int MaxHeadSize = 256;

    /// <summary>The head size must be a multiple of this.</summary>
    public const int HeadSizeMultiple = 8;

    /// <summary>Why the op cannot run these heads (null: it can, or a count is unknown).</summary>
    public static string? Heads(long? heads, long? kvHeads)
    {
        foreach (var (n, what) in new[] { (heads, "query"), (kvHeads, "kv") })
            if (n is long v && (v < 1 || v > NodeAttributes.MaxHeads))
                return $"{v} {what} heads: SwitchableAttention takes 1 to {NodeAttributes.MaxHeads}";
        if (heads is long h && kvHeads is long hkv && h % hkv != 0) return $"{h} query heads are not a multiple of {hkv} kv heads";
        return null;
    }

    /// <summary>Why the op cannot run this head size (null: it can, or it is unknown).</summary>
    public static string? HeadSize(long? headSize) =>
        headSize is long d && (d < 1 || d % HeadSizeMultiple != 0 || d > MaxHeadSize)
            ? $"head size {d} is not a multiple of {HeadSizeMultiple} up to {MaxHeadSize}" : null;

    /// <summary>
    /// Why the op cannot run this element type. An unknown type is refused when <paramref name="mustKnow"/>
    /// (the rule emits nodes whose types it must state), else left to ORT's type check at load.
    /// </summary>
    public static string? ElementType(TensorProto.Types.DataType? type, bool mustKnow = true) => type switch
    {
        TensorProto.Types.DataType.Float or TensorProto.Types.DataType.Float16 => null,
        null => mustKnow ? "element type unknown (no type information): SwitchableAttention takes fp32 or fp16" : null,
        TensorProto.Types.DataType.Bfloat16 => "bfloat16: SwitchableAttention has no bfloat16 CPU kernel (CPU kernels are fp32/fp16)",
        _ => $"element type {type} is not supported (fp32, fp16)",
    };

    /// <summary>The first reason of <see cref="Heads"/>, <see cref="HeadSize"/> and <see cref="ElementType"/>, or null.</summary>
    public static string? Check(long? heads, long? kvHeads, long? headSize, TensorProto.Types.DataType? type, bool typeMustBeKnown = true) =>
        Heads(heads, kvHeads) ?? HeadSize(headSize) ?? ElementType(type, typeMustBeKnown);
}
