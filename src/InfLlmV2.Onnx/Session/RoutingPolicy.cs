using InfLlmV2.Onnx.OpContract;

namespace InfLlmV2.Onnx.Session;

/// <summary>
/// The <see cref="AttentionMode"/> asked for per phase. Needs a model rewritten with an
/// <c>attention_mode</c> input unless both are <see cref="AttentionMode.Auto"/>.
/// </summary>
/// <param name="Prefill">Mode of prompt (and chunked prompt) steps.</param>
/// <param name="Decode">Mode of one-token steps.</param>
public sealed record RoutingPolicy(AttentionMode Prefill = AttentionMode.Auto, AttentionMode Decode = AttentionMode.Auto)
{
    /// <summary>The op's own dense_len rule in both phases.</summary>
    public static RoutingPolicy Auto { get; } = new();

    /// <summary>The same mode in both phases.</summary>
    public static RoutingPolicy Always(AttentionMode mode) => new(mode, mode);
}
