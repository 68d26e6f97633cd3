namespace InfLlmV2.Onnx.OpContract;

/// <summary>
/// Dense or sparse attention: the values of the op's <c>attention_mode</c> input (docs/op-spec.md,
/// input 10; <c>infllmv2::AttentionMode</c> in C++). A request asks for one of the three; a step
/// that ran used <see cref="Dense"/> or <see cref="Sparse"/>.
/// </summary>
public enum AttentionMode
{
    /// <summary>The op decides per batch entry: dense iff the entry's total length &lt; dense_len.</summary>
    Auto = 0,

    /// <summary>Dense attention (= com.microsoft::GroupQueryAttention).</summary>
    Dense = 1,

    /// <summary>InfLLM-V2 block-sparse attention.</summary>
    Sparse = 2,
}
