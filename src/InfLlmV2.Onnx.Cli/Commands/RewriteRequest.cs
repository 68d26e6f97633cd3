using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.OpContract;
using Attributes = InfLlmV2.Onnx.OpContract.SwitchableAttentionOp.Attributes;

namespace InfLlmV2.Onnx.Cli.Commands;

/// <summary>
/// What one <c>rewrite</c> call asked for: the library's options, and for the printout and the
/// report the preset they started from and the explicit flags that overrode it.
/// </summary>
/// <param name="Options">The options passed to the rewriter.</param>
/// <param name="Preset">The <c>--preset</c> given, or null.</param>
/// <param name="OverriddenByFlags">The explicit flags that replaced a preset (or default) attribute, e.g. <c>--topk 70</c>.</param>
public sealed record RewriteRequest(RewriteOptions Options, SparsePreset? Preset, IReadOnlyList<string> OverriddenByFlags)
{
    /// <summary>The <c>rewrite</c> flag of each sparse attribute.</summary>
    public static string FlagOf(string attribute) => attribute switch
    {
        Attributes.DenseLen => "--dense-len",
        Attributes.TopKBlocks => "--topk",
        Attributes.SparseWindow => "--window",
        Attributes.BlockSize => "--block-size",
        Attributes.InitBlocks => "--init-blocks",
        Attributes.CompressKernel => "--compress-kernel",
        Attributes.CompressStride => "--compress-stride",
        Attributes.LseApprox => "--exact-lse",
        Attributes.ScorePrecision => "--score-precision",
        _ => attribute,
    };

    /// <summary>Returns a reason, naming flags, when the sparse attributes are inconsistent; else null.</summary>
    public string? Validate() => Options.Sparse.Validate(FlagOf);
}
