namespace InfLlmV2.Onnx.Models;

/// <summary>How a generated decoder expresses attention.</summary>
public enum DecoderAttentionForm
{
    /// <summary>com.microsoft::GroupQueryAttention with rotary inside (genai model builder).</summary>
    GroupQueryAttention,

    /// <summary>ONNX Attention-23 (is_causal, past_key/past_value inputs), rotary from plain ops.</summary>
    OnnxAttention,

    /// <summary>Decomposed MatMul/Softmax/MatMul with Concat caches, repeat_kv and a causal mask (as the ONNX Attention function body).</summary>
    Decomposed,

    /// <summary>
    /// com.microsoft::MultiHeadAttention as the ORT transformer optimizer fuses it: separate
    /// com.microsoft::RotaryEmbedding nodes on 3-D q/k, K/V repeated to every query head in the
    /// 3-D layout (Reshape/Expand/Reshape) when kv heads are fewer, past/present with all query
    /// heads, and a 4-D additive causal attention_bias offset by the past length.
    /// </summary>
    MultiHeadAttention,

    /// <summary>
    /// The legacy com.microsoft::Attention of ORT's transformers optimizer on GPT-2 (<see cref="LegacyAttentionDecoder"/>):
    /// fused QKV weights and bias, unidirectional=1, one packed past/present [2, B, H, P, D] per layer,
    /// int32 input_ids/position_ids/attention_mask. Multi-head: KvNumHeads is ignored.
    /// </summary>
    LegacyAttention,

    /// <summary>
    /// Decomposed, with the scores as ORT's transformers optimizer fuses them:
    /// <c>com.microsoft::FusedMatMul(Q, repeat_kv(K), transB=1, alpha=1/√D)</c>.
    /// </summary>
    FusedMatMul,

    /// <summary>
    /// The TorchScript export of HF GPT-2's attention: <c>MatMul(Q, Kᵀ) / √D</c>, the causal part
    /// <c>Where(Cast(Slice(Slice(tril buffer, T − S..T, axis 2), 0..T, axis 3)), scores, −1e4)</c> from a
    /// constant lower-triangular [1, 1, N, N] buffer, then <c>+ (1 − attention_mask)·−1e4</c>.
    /// </summary>
    TorchScriptGpt2,

    /// <summary>
    /// Decomposed attention (scale, scores, mask, softmax, output) inside a model-local function
    /// called once per layer, as the dynamo exporter emits <c>aten_scaled_dot_product_attention</c>.
    /// </summary>
    Function,
}

/// <summary>Shape, seed and form of a generated tiny GQA decoder.</summary>
public sealed record TinyDecoderConfig
{
    /// <summary>Decoder layers.</summary>
    public int Layers { get; init; } = 2;

    /// <summary>Query heads.</summary>
    public int NumHeads { get; init; } = 4;

    /// <summary>Key/value heads.</summary>
    public int KvNumHeads { get; init; } = 2;

    /// <summary>Head size (multiple of 8).</summary>
    public int HeadSize { get; init; } = 32;

    /// <summary>Vocabulary size.</summary>
    public int Vocab { get; init; } = 256;

    /// <summary>MLP inner size.</summary>
    public int Intermediate { get; init; } = 256;

    /// <summary>Rows of the rotary cos/sin caches (maximum position + 1).</summary>
    public int MaxPositions { get; init; } = 4096;

    /// <summary>Weight seed.</summary>
    public int Seed { get; init; } = 1;

    /// <summary>Attention form.</summary>
    public DecoderAttentionForm Form { get; init; } = DecoderAttentionForm.GroupQueryAttention;

    /// <summary>One packed QKV projection (genai CPU builder) instead of separate q/k/v (GroupQueryAttention form only).</summary>
    public bool PackedQkv { get; init; }

    /// <summary>
    /// The mask is built from the <c>attention_mask</c> values as each exporter lays it out: causal AND
    /// key padding (Decomposed: transformers/optimum's Trilu + Greater(cache_position) min-mask, padding
    /// added and Equal/Where; OnnxAttention: the same mask as attn_mask with is_causal=0;
    /// MultiHeadAttention: the genai builder's square Range/Less/Where mask expanded to past + S, padding
    /// from Sub/Cast/Where, Add, Tile). Not for the GroupQueryAttention form.
    /// </summary>
    public bool PaddingMask { get; init; }

    /// <summary>
    /// GroupQueryAttention form only: padding reaches the op as onnx-community exports pass it,
    /// through input 10 <c>attention_bias = Expand((1 − Cast(attention_mask)) · −FLT_MAX)</c> to
    /// [B, 1, S, T], with <c>seqlens_k = Expand(T − 1)</c> and total_sequence_length = T (no ReduceSum).
    /// </summary>
    public bool AttentionBias { get; init; }

    /// <summary>
    /// optimum's merged decoder: weights in the main graph, one <c>If</c> on the bool input
    /// <c>use_cache_branch</c> whose branches are the decoder with past and without (any form).
    /// </summary>
    public bool Merged { get; init; }

    /// <summary>Whether the model carries value_info for intermediate values (optimum and dynamo exports carry none).</summary>
    public bool ValueInfo { get; init; } = true;

    /// <summary>Hidden size = heads x head size.</summary>
    public int Hidden => NumHeads * HeadSize;

    /// <summary>Name of layer <paramref name="layer"/>'s past key or value input (genai and optimum name them alike).</summary>
    public string PastName(int layer, string kv) => $"past_key_values.{layer}.{kv}";

    /// <summary>Name of layer <paramref name="layer"/>'s present key or value output.</summary>
    public string PresentName(int layer, string kv) => $"present.{layer}.{kv}";

    /// <summary>The embedded default model of <c>infllmv2 demo</c>.</summary>
    public static TinyDecoderConfig Default => new() { Layers = 2, NumHeads = 8, KvNumHeads = 2, HeadSize = 32, Vocab = 512, Intermediate = 512, MaxPositions = 32768, Seed = 2026 };
}
