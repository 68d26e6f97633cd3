namespace InfLlmV2.Onnx.GraphTools.Rewriting;

/// <summary>What the rewriter writes into every SwitchableAttention node (defaults: MiniCPM4.1).</summary>
public sealed record RewriteOptions
{
    /// <summary>Auto mode: dense iff total length &lt; DenseLen; -1 = always sparse.</summary>
    public long DenseLen { get; init; } = 8192;

    /// <summary>Dynamic top-k blocks (budget = TopK + WindowSize / BlockSize).</summary>
    public long TopK { get; init; } = 64;

    /// <summary>Local window in tokens (multiple of BlockSize).</summary>
    public long WindowSize { get; init; } = 2048;

    /// <summary>Key/value block size.</summary>
    public long BlockSize { get; init; } = 64;

    /// <summary>Always-selected leading blocks.</summary>
    public long InitBlocks { get; init; } = 1;

    /// <summary>Level-1 compression window.</summary>
    public long CompressKernel { get; init; } = 32;

    /// <summary>Level-1 compression stride.</summary>
    public long CompressStride { get; init; } = 16;

    /// <summary>Normalize stage-1 scores with the level-2 LSE approximation.</summary>
    public bool LseApprox { get; init; } = true;

    /// <summary>Add a past/present compressed-key graph input/output pair per layer.</summary>
    public bool CompressedState { get; init; }

    /// <summary>Add one shared int32 scalar graph input <c>attention_mode</c> (0 auto, 1 dense, 2 sparse).</summary>
    public bool AttentionModeInput { get; init; }

    /// <summary>Name of the shared mode input.</summary>
    public const string AttentionModeInputName = "attention_mode";

    /// <summary>Returns a reason when the options are inconsistent (same rules as the op's attribute check), else null.</summary>
    public string? Validate()
    {
        if (CompressStride <= 0) return $"--compress-stride must be > 0, got {CompressStride}";
        if (CompressKernel < CompressStride || CompressKernel % CompressStride != 0)
            return $"--compress-kernel must be a multiple of --compress-stride ({CompressStride}), got {CompressKernel}";
        if (BlockSize <= 0 || BlockSize % CompressStride != 0)
            return $"--block-size must be a positive multiple of --compress-stride ({CompressStride}), got {BlockSize}";
        if (WindowSize < 0 || WindowSize % BlockSize != 0)
            return $"--window must be a non-negative multiple of --block-size ({BlockSize}), got {WindowSize}";
        if (InitBlocks < 0) return $"--init-blocks must be >= 0, got {InitBlocks}";
        if (TopK < InitBlocks + 1) return $"--topk must be >= init blocks + 1 ({InitBlocks + 1}), got {TopK}";
        if (DenseLen < -1) return $"--dense-len must be -1 or >= 0, got {DenseLen}";
        return null;
    }

    /// <summary>The sparse attributes as written on the node.</summary>
    public IEnumerable<(string Name, long Value)> SparseAttributes()
    {
        yield return ("block_size", BlockSize);
        yield return ("compress_kernel", CompressKernel);
        yield return ("compress_stride", CompressStride);
        yield return ("init_blocks", InitBlocks);
        yield return ("window_size", WindowSize);
        yield return ("topk", TopK);
        yield return ("dense_len", DenseLen);
        yield return ("lse_approx", LseApprox ? 1 : 0);
    }
}
