using InfLlmV2.Onnx.GraphTools.Proto;
using Names = InfLlmV2.Onnx.OpContract.SwitchableAttentionOp.Attributes;

namespace InfLlmV2.Onnx.OpContract;

/// <summary>
/// The attributes that make SwitchableAttention sparse, with the op's defaults (MiniCPM4.1's;
/// docs/op-spec.md, <c>AttentionAttributes</c> in customop/include/infllmv2/attention_params.h),
/// the op's rules for them, and the op's dense/sparse decision.
/// </summary>
public sealed record SparseAttentionSettings
{
    /// <summary><c>dense_len</c>: in auto mode a batch entry runs dense iff its total length &lt; this; −1 = always sparse.</summary>
    public long DenseLen { get; init; } = 8192;

    /// <summary><c>topk</c>: blocks chosen by score, the dynamic part of <see cref="BlockBudget"/>.</summary>
    public long TopKBlocks { get; init; } = 64;

    /// <summary><c>window_size</c>: sparse mode's local window in tokens (a multiple of <see cref="BlockSize"/>); not GQA's sliding window.</summary>
    public long SparseWindowTokens { get; init; } = 2048;

    /// <summary><c>block_size</c>: key/value block size of selection and attention, in tokens.</summary>
    public long BlockSize { get; init; } = 64;

    /// <summary><c>init_blocks</c>: always-selected leading blocks.</summary>
    public long InitBlocks { get; init; } = 1;

    /// <summary><c>compress_kernel</c>: level-1 compression window in tokens.</summary>
    public long CompressKernel { get; init; } = 32;

    /// <summary><c>compress_stride</c>: level-1 compression stride in tokens.</summary>
    public long CompressStride { get; init; } = 16;

    /// <summary><c>lse_approx</c>: normalize stage-1 scores with the level-2 LSE approximation.</summary>
    public bool LseApprox { get; init; } = true;

    /// <summary><c>score_precision</c>: the precision the group-summed stage-1 scores are pooled and ranked in.</summary>
    public ScorePrecision ScorePrecision { get; init; } = ScorePrecision.Fp32;

    /// <summary>The op's defaults.</summary>
    public static SparseAttentionSettings Defaults { get; } = new();

    /// <summary>Largest block, compression window and stride, in tokens (the op's <c>kMaxBlockTokens</c>).</summary>
    public const long MaxBlockTokens = 65536;

    /// <summary>Largest <see cref="BlockBudget"/> (the op's <c>kMaxBudget</c>).</summary>
    public const long MaxBlockBudget = 1L << 20;

    /// <summary>Largest token count an attribute may name: positions are int32 (the op's <c>kMaxTokens</c>).</summary>
    public const long MaxTokens = int.MaxValue;

    /// <summary>K: blocks a sparse query row attends to (last dimension of <c>selected_blocks</c>).</summary>
    public long BlockBudget => TopKBlocks + SparseWindowTokens / BlockSize;

    /// <summary>Level-1 compressed keys of <paramref name="length"/> tokens (complete windows).</summary>
    public long CompressedKeys(long length) => length < CompressKernel ? 0 : (length - CompressKernel) / CompressStride + 1;

    /// <summary>
    /// The mode a batch entry of <paramref name="totalLength"/> tokens runs in when <paramref name="requested"/>
    /// is asked for (docs/op-spec.md, "Mode": forced modes win; auto is sparse iff dense_len is −1 or
    /// the total length reaches dense_len). Never <see cref="AttentionMode.Auto"/>.
    /// </summary>
    public AttentionMode ModeFor(AttentionMode requested, long totalLength) => requested switch
    {
        AttentionMode.Dense => AttentionMode.Dense,
        AttentionMode.Sparse => AttentionMode.Sparse,
        _ => DenseLen == -1 || totalLength >= DenseLen ? AttentionMode.Sparse : AttentionMode.Dense,
    };

    /// <summary>
    /// The first broken rule of the op's attribute check (customop/src/common/check_inputs.cc), or
    /// null. <paramref name="displayName"/> turns an attribute name into the name the reader knows
    /// (a command-line flag); by default the attribute name in quotes.
    /// </summary>
    public string? Validate(Func<string, string>? displayName = null)
    {
        var n = displayName ?? (a => $"'{a}'");
        if (CompressStride <= 0 || CompressStride > MaxBlockTokens)
            return $"{n(Names.CompressStride)} must be in [1, {MaxBlockTokens}], got {CompressStride}";
        if (CompressKernel < CompressStride || CompressKernel % CompressStride != 0 || CompressKernel > MaxBlockTokens)
            return $"{n(Names.CompressKernel)} must be a multiple of {n(Names.CompressStride)} ({CompressStride}) and <= {MaxBlockTokens}, got {CompressKernel}";
        if (BlockSize <= 0 || BlockSize % CompressStride != 0 || BlockSize > MaxBlockTokens)
            return $"{n(Names.BlockSize)} must be a positive multiple of {n(Names.CompressStride)} ({CompressStride}) and <= {MaxBlockTokens}, got {BlockSize}";
        if (InitBlocks < 0) return $"{n(Names.InitBlocks)} must be >= 0, got {InitBlocks}";
        if (SparseWindowTokens < 0 || SparseWindowTokens % BlockSize != 0 || SparseWindowTokens > MaxTokens)
            return $"{n(Names.SparseWindow)} must be a non-negative multiple of {n(Names.BlockSize)} ({BlockSize}) and <= {MaxTokens}, got {SparseWindowTokens}";
        if (TopKBlocks < InitBlocks + 1)
            return $"{n(Names.TopKBlocks)} must be >= {n(Names.InitBlocks)} + 1 ({InitBlocks + 1}), got {TopKBlocks}";
        if (TopKBlocks > MaxBlockBudget || BlockBudget > MaxBlockBudget)
            return $"{n(Names.TopKBlocks)} + {n(Names.SparseWindow)} / {n(Names.BlockSize)} (the block budget) must be <= {MaxBlockBudget}, got {TopKBlocks} + {SparseWindowTokens / BlockSize}";
        if (DenseLen < -1 || DenseLen > MaxTokens) return $"{n(Names.DenseLen)} must be -1 or in [0, {MaxTokens}], got {DenseLen}";
        if (ScorePrecision is not (ScorePrecision.Fp32 or ScorePrecision.Bf16))
            return $"{n(Names.ScorePrecision)} must be 0 (fp32) or 1 (bf16), got {(long)ScorePrecision}";
        return null;
    }

    /// <summary>The attributes as written on a node, in the op-spec's order.</summary>
    public IEnumerable<(string Name, long Value)> Attributes()
    {
        yield return (Names.BlockSize, BlockSize);
        yield return (Names.CompressKernel, CompressKernel);
        yield return (Names.CompressStride, CompressStride);
        yield return (Names.InitBlocks, InitBlocks);
        yield return (Names.SparseWindow, SparseWindowTokens);
        yield return (Names.TopKBlocks, TopKBlocks);
        yield return (Names.DenseLen, DenseLen);
        yield return (Names.LseApprox, LseApprox ? 1 : 0);
        yield return (Names.ScorePrecision, (long)ScorePrecision);
    }

    /// <summary>The sparse attributes a node sets with a type other than INT (the op ignores them and uses its defaults), as "name (TYPE)".</summary>
    public static IEnumerable<string> IgnoredAttributes(NodeProto node)
    {
        var names = Defaults.Attributes().Select(a => a.Name).ToHashSet(StringComparer.Ordinal);
        return node.Attribute.Where(a => names.Contains(a.Name) && a.Type != AttributeProto.Types.AttributeType.Int)
            .Select(a => $"{a.Name} ({a.Type.ToString().ToUpperInvariant()})").Distinct();
    }

    /// <summary>The settings a SwitchableAttention node runs with: its attributes, the op's defaults where absent or not INT.</summary>
    /// <exception cref="ArgumentException">The node is not SwitchableAttention.</exception>
    public static SparseAttentionSettings Of(NodeProto node)
    {
        if (!SwitchableAttentionOp.Is(node)) throw new ArgumentException($"'{node.Name}' is {node.Domain}::{node.OpType}, not {SwitchableAttentionOp.Domain}::{SwitchableAttentionOp.OpType}");
        var d = Defaults;
        // As the op reads them (KernelInfoGetAttribute_int64): an attribute that is not an INT is
        // ignored and the op's default used, exactly as when it is absent.
        long Get(string name, long fallback) => node.Attribute.FirstOrDefault(a => a.Name == name) is { Type: AttributeProto.Types.AttributeType.Int } a ? a.I : fallback;
        return new SparseAttentionSettings
        {
            DenseLen = Get(Names.DenseLen, d.DenseLen),
            TopKBlocks = Get(Names.TopKBlocks, d.TopKBlocks),
            SparseWindowTokens = Get(Names.SparseWindow, d.SparseWindowTokens),
            BlockSize = Get(Names.BlockSize, d.BlockSize),
            InitBlocks = Get(Names.InitBlocks, d.InitBlocks),
            CompressKernel = Get(Names.CompressKernel, d.CompressKernel),
            CompressStride = Get(Names.CompressStride, d.CompressStride),
            LseApprox = Get(Names.LseApprox, d.LseApprox ? 1 : 0) != 0,
            ScorePrecision = (ScorePrecision)Get(Names.ScorePrecision, (long)d.ScorePrecision),
        };
    }
}
