using InfLlmV2.Onnx.OpContract;

namespace InfLlmV2.Onnx.GraphTools.Rewriting;

/// <summary>What the rewriter writes into every SwitchableAttention node.</summary>
public sealed record RewriteOptions
{
    /// <summary>The sparse attributes of every node (default: the op's defaults, MiniCPM4.1's).</summary>
    public SparseAttentionSettings Sparse { get; init; } = SparseAttentionSettings.Defaults;

    /// <summary>Add a past/present compressed-key graph input/output pair per layer.</summary>
    public bool CompressedState { get; init; }

    /// <summary>Add one shared int32 scalar graph input <c>attention_mode</c> (an <see cref="AttentionMode"/> value).</summary>
    public bool AttentionModeInput { get; init; }

    /// <summary>
    /// Add each main-graph SwitchableAttention node's <c>selected_blocks</c> output (int32
    /// [batch, kv_heads, sequence, K], K = topk + window_size / block_size; docs/op-spec.md) to the
    /// graph outputs, named <see cref="SelectedBlocksOutputFormat"/> with the node's index in graph
    /// order (the layer). For selection maps; default off.
    /// </summary>
    public bool ExposeSelection { get; init; }

    /// <summary>Name of the exposed <c>selected_blocks</c> graph output of layer {0} (see <see cref="ExposeSelection"/>).</summary>
    public const string SelectedBlocksOutputFormat = "selected_blocks.{0}";

    /// <summary>Name of the shared mode input.</summary>
    public const string AttentionModeInputName = "attention_mode";

    /// <summary>Returns a reason when the options are inconsistent (the op's attribute rules, named by attribute), else null.</summary>
    public string? Validate() => Sparse.Validate();
}
