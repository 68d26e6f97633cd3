using InfLlmV2.Onnx.OpContract;
using Attributes = InfLlmV2.Onnx.OpContract.SwitchableAttentionOp.Attributes;

namespace InfLlmV2.Onnx.GraphTools.Rewriting;

/// <summary>What the rewriter writes into every SwitchableAttention node.</summary>
public sealed record RewriteOptions
{
    /// <summary>The sparse attributes of every node (default: the op's defaults, MiniCPM4.1's).</summary>
    public SparseAttentionSettings Sparse { get; init; } = SparseAttentionSettings.Defaults;

    /// <summary>The preset <see cref="Sparse"/> started from (<c>rewrite --preset</c>), or null; for reports only.</summary>
    public string? Preset { get; init; }

    /// <summary>The explicit flags that overrode the preset's attributes (e.g. <c>--topk 70</c>), for reports only.</summary>
    public IReadOnlyList<string> OverriddenByFlags { get; init; } = [];

    /// <summary>Add a past/present compressed-key graph input/output pair per layer.</summary>
    public bool CompressedState { get; init; }

    /// <summary>Add one shared int32 scalar graph input <c>attention_mode</c> (an <see cref="AttentionMode"/> value).</summary>
    public bool AttentionModeInput { get; init; }

    /// <summary>Name of the shared mode input.</summary>
    public const string AttentionModeInputName = "attention_mode";

    /// <summary>The `rewrite` command-line flag of each sparse attribute.</summary>
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

    /// <summary>Returns a reason when the options are inconsistent (the op's attribute rules, named by flag), else null.</summary>
    public string? Validate() => Sparse.Validate(FlagOf);
}
