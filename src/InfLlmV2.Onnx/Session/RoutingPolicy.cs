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

    /// <summary>
    /// The mode of one step: <see cref="Prefill"/> when it appends more than one token to a request or
    /// is the first step of an empty batch, else <see cref="Decode"/>.
    /// </summary>
    internal AttentionMode ModeOf(int stepTokens, bool emptyBatch) => stepTokens > 1 || emptyBatch ? Prefill : Decode;

    /// <summary>
    /// Splits one append into steps (token arrays per request). Batch size 1: chunks of at most
    /// <paramref name="chunkSize"/> tokens. Larger batches: the first append to an empty batch is one
    /// ragged step; later appends must give every request the same number of tokens, one step per token.
    /// </summary>
    /// <exception cref="ArgumentException">A later append of a larger batch has unequal lengths.</exception>
    internal static List<IReadOnlyList<int[]>> Steps(IReadOnlyList<int[]> tokensPerRequest, bool emptyBatch, int chunkSize)
    {
        var steps = new List<IReadOnlyList<int[]>>();
        if (tokensPerRequest.Count == 1)
        {
            var t = tokensPerRequest[0];
            for (int at = 0; at < t.Length; at += chunkSize)
                steps.Add([t[at..Math.Min(t.Length, at + chunkSize)]]);
            return steps;
        }
        if (emptyBatch)
        {
            steps.Add(tokensPerRequest);
            return steps;
        }
        int n = tokensPerRequest[0].Length;
        if (tokensPerRequest.Any(t => t.Length != n))
            throw new ArgumentException("After the first prompt every request must append the same number of tokens");
        for (int i = 0; i < n; i++) steps.Add(tokensPerRequest.Select(t => new[] { t[i] }).ToList());
        return steps;
    }
}
