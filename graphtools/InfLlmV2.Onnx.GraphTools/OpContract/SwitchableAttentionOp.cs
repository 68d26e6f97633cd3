using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.OpContract;

/// <summary>
/// The identity of <c>com.infllmv2::SwitchableAttention</c> and the positions and names of its
/// inputs, outputs and attributes, as docs/op-spec.md states them. The rewriter, the session and the
/// tests name the op through this type only.
/// </summary>
public static class SwitchableAttentionOp
{
    /// <summary>ONNX domain of the op (and of the op library).</summary>
    public const string Domain = "com.infllmv2";

    /// <summary>Opset version of <see cref="Domain"/>.</summary>
    public const int DomainVersion = 1;

    /// <summary>Op type.</summary>
    public const string OpType = "SwitchableAttention";

    /// <summary>Whether <paramref name="node"/> is a SwitchableAttention node.</summary>
    public static bool Is(NodeProto node) => node.OpType == OpType && node.Domain == Domain;

    /// <summary>Value of a <c>selected_blocks</c> entry that holds no block (the padding of every dense row).</summary>
    public const int NoBlock = -1;

    /// <summary>
    /// dense_len of a sliding-window site: the op runs <c>local_window_size</c> in dense mode only, so
    /// such a site never switches to sparse (total lengths are int32, always below this).
    /// </summary>
    public const long DenseOnly = int.MaxValue;

    /// <summary>Input positions (inputs 0–8 are GroupQueryAttention's).</summary>
    public static class Inputs
    {
        /// <summary>[B, S, H·D], or packed QKV.</summary>
        public const int Query = 0;
        /// <summary>[B, S, Hkv·D], optional.</summary>
        public const int Key = 1;
        /// <summary>[B, S, Hkv·D], optional.</summary>
        public const int Value = 2;
        /// <summary>[B, Hkv, P, D], optional.</summary>
        public const int PastKey = 3;
        /// <summary>[B, Hkv, P, D], optional.</summary>
        public const int PastValue = 4;
        /// <summary>int32 [B]: total length − 1 per entry.</summary>
        public const int SeqlensK = 5;
        /// <summary>int32 scalar: the longest total length.</summary>
        public const int TotalSequenceLength = 6;
        /// <summary>Rotary cos table [max_position, rotary_dim/2].</summary>
        public const int CosCache = 7;
        /// <summary>Rotary sin table.</summary>
        public const int SinCache = 8;
        /// <summary>[B, Hkv, C, D], optional: level-1 compressed keys of the past.</summary>
        public const int PastCompressedKey = 9;
        /// <summary>int32 scalar, optional: an <see cref="AttentionMode"/> value.</summary>
        public const int AttentionMode = 10;
    }

    /// <summary>Output positions.</summary>
    public static class Outputs
    {
        /// <summary>[B, S, H·D].</summary>
        public const int Output = 0;
        /// <summary>[B, Hkv, T, D].</summary>
        public const int PresentKey = 1;
        /// <summary>[B, Hkv, T, D].</summary>
        public const int PresentValue = 2;
        /// <summary>[B, Hkv, Cp, D], optional.</summary>
        public const int PresentCompressedKey = 3;
        /// <summary>int32 [B, Hkv, S, K], optional: the blocks each query row attended to, <see cref="NoBlock"/>-padded; all <see cref="NoBlock"/> in dense mode.</summary>
        public const int SelectedBlocks = 4;
    }

    /// <summary>Attribute names.</summary>
    public static class Attributes
    {
        /// <summary>H (required).</summary>
        public const string NumHeads = "num_heads";
        /// <summary>Hkv (required).</summary>
        public const string KvNumHeads = "kv_num_heads";
        /// <summary>Softmax scale; 0 = 1/√D.</summary>
        public const string Scale = "scale";
        /// <summary>Score softcap; 0 = off.</summary>
        public const string Softcap = "softcap";
        /// <summary>1: rotary inside the op.</summary>
        public const string DoRotary = "do_rotary";
        /// <summary>1: interleaved rotary pairs.</summary>
        public const string RotaryInterleaved = "rotary_interleaved";
        /// <summary>GQA's sliding window in keys (dense mode only); −1 = off.</summary>
        public const string SlidingWindow = "local_window_size";
        /// <summary>Selection and attention block size in tokens.</summary>
        public const string BlockSize = "block_size";
        /// <summary>Level-1 compression window in tokens.</summary>
        public const string CompressKernel = "compress_kernel";
        /// <summary>Level-1 compression stride in tokens.</summary>
        public const string CompressStride = "compress_stride";
        /// <summary>Always-selected leading blocks.</summary>
        public const string InitBlocks = "init_blocks";
        /// <summary>Sparse mode's local window in tokens (always-selected trailing blocks).</summary>
        public const string SparseWindow = "window_size";
        /// <summary>Blocks chosen by score (the dynamic part of the block budget).</summary>
        public const string TopKBlocks = "topk";
        /// <summary>Auto mode: dense iff total length &lt; dense_len; −1 = always sparse.</summary>
        public const string DenseLen = "dense_len";
        /// <summary>1: stage-1 normalizer from level-2 keys.</summary>
        public const string LseApprox = "lse_approx";
        /// <summary>Precision of the group-summed stage-1 scores before pooling: 0 fp32, 1 bf16 (a <see cref="OpContract.ScorePrecision"/>).</summary>
        public const string ScorePrecision = "score_precision";
    }
}
