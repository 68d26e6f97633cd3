namespace InfLlmV2.Onnx.Session;

/// <summary>How a step's attention runs (the op's <c>attention_mode</c> input).</summary>
public enum AttentionRouting
{
    /// <summary>The op decides per request: dense iff total length &lt; dense_len.</summary>
    Auto = 0,

    /// <summary>Force dense attention (= GroupQueryAttention).</summary>
    Dense = 1,

    /// <summary>Force InfLLM-V2 sparse attention.</summary>
    Sparse = 2,
}

/// <summary>Routing per phase. Needs a model rewritten with an <c>attention_mode</c> input unless both are Auto.</summary>
/// <param name="Prefill">Routing of prompt (and chunked prompt) steps.</param>
/// <param name="Decode">Routing of one-token steps.</param>
public sealed record RoutingPolicy(AttentionRouting Prefill = AttentionRouting.Auto, AttentionRouting Decode = AttentionRouting.Auto)
{
    /// <summary>The op's own dense_len rule in both phases.</summary>
    public static RoutingPolicy Auto { get; } = new();

    /// <summary>The same routing in both phases.</summary>
    public static RoutingPolicy Always(AttentionRouting routing) => new(routing, routing);
}

/// <summary>The mode a request's last step actually used.</summary>
public enum AttentionModeUsed
{
    /// <summary>No step ran yet.</summary>
    None,

    /// <summary>Dense attention (also every step of an unrewritten model).</summary>
    Dense,

    /// <summary>InfLLM-V2 sparse attention.</summary>
    Sparse,
}
