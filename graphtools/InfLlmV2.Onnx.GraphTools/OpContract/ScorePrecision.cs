namespace InfLlmV2.Onnx.OpContract;

/// <summary>
/// Value of the <c>score_precision</c> attribute (docs/op-spec.md): the precision in which the
/// group-summed stage-1 scores are max-pooled and ranked.
/// </summary>
public enum ScorePrecision : long
{
    /// <summary>fp32, as computed (the op's default).</summary>
    Fp32 = 0,

    /// <summary>Rounded to bfloat16 (nearest even) before pooling, as the official CUDA kernel stores them.</summary>
    Bf16 = 1,
}
