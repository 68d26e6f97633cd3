namespace InfLlmV2.Onnx.Session;

/// <summary>Sampling and stopping settings of <see cref="TextGeneration.Generate"/>.</summary>
public sealed record GenerationOptions
{
    /// <summary>Most tokens to generate.</summary>
    public int MaxNewTokens { get; init; } = 32;

    /// <summary>0 = greedy (argmax, ties to the lower id); &gt; 0 = sample from softmax(logits / T).</summary>
    public float Temperature { get; init; }

    /// <summary>Sample only among the k most likely tokens (0 = all).</summary>
    public int TopKTokens { get; init; }

    /// <summary>Sample only within the smallest set of tokens whose probability reaches p (1 = all).</summary>
    public float TopP { get; init; } = 1.0f;

    /// <summary>Sampling seed (null: nondeterministic).</summary>
    public int? Seed { get; init; }

    /// <summary>Generation stops after emitting one of these.</summary>
    public IReadOnlyCollection<int> StopTokens { get; init; } = [];
}

/// <summary>Picks the next token from logits.</summary>
public sealed class TokenSampler
{
    private readonly GenerationOptions _o;
    private readonly Random _rng;

    /// <summary>A sampler for these options.</summary>
    public TokenSampler(GenerationOptions options)
    {
        _o = options;
        if (options.Temperature < 0) throw new ArgumentException("Temperature must be >= 0");
        if (options.TopKTokens < 0) throw new ArgumentException("TopKTokens must be >= 0");
        if (!(options.TopP > 0 && options.TopP <= 1)) throw new ArgumentException("TopP must be in (0, 1]");
        _rng = options.Seed is int s ? new Random(s) : new Random();
    }

    /// <summary>The next token id.</summary>
    public int Next(ReadOnlySpan<float> logits)
    {
        if (_o.Temperature == 0) return ArgMax(logits);
        var order = Enumerable.Range(0, logits.Length).ToArray();
        var l = logits.ToArray();
        Array.Sort(order, (a, b) => l[b].CompareTo(l[a]) is var c && c != 0 ? c : a.CompareTo(b));
        int keep = _o.TopKTokens > 0 ? Math.Min(_o.TopKTokens, order.Length) : order.Length;
        double max = l[order[0]];
        var p = new double[keep];
        double sum = 0;
        for (int i = 0; i < keep; i++) { p[i] = Math.Exp((l[order[i]] - max) / _o.Temperature); sum += p[i]; }
        double cum = 0;
        int cut = keep;
        for (int i = 0; i < keep; i++)
        {
            cum += p[i] / sum;
            if (cum >= _o.TopP) { cut = i + 1; break; }
        }
        double total = p.Take(cut).Sum(), r = _rng.NextDouble() * total;
        for (int i = 0; i < cut; i++)
        {
            r -= p[i];
            if (r <= 0) return order[i];
        }
        return order[cut - 1];
    }

    /// <summary>Index of the largest logit (lowest index on ties).</summary>
    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }
}

/// <summary>Greedy and sampled generation over a batch-1 <see cref="DecoderSession"/>.</summary>
public static class TextGeneration
{
    /// <summary>
    /// Appends <paramref name="prompt"/> (when not empty) and yields generated tokens one by one
    /// (a stop token is yielded, then generation ends). Without a prompt the session must hold the
    /// logits of its last token.
    /// </summary>
    public static IEnumerable<int> Generate(this DecoderSession session, IReadOnlyList<int> prompt, GenerationOptions options,
        CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(session);
        if (session.BatchSize != 1) throw new InvalidOperationException("Generate works on batch-1 sessions");
        var sampler = new TokenSampler(options);
        cancellation.ThrowIfCancellationRequested();
        if (prompt.Count > 0) session.AppendTokens(prompt.ToArray());
        var logits = session.LastLogits() ?? throw new InvalidOperationException("No logits: append a prompt first (after RewindTo, re-append the last token)");
        for (int n = 0; n < options.MaxNewTokens; n++)
        {
            cancellation.ThrowIfCancellationRequested();
            int token = sampler.Next(logits);
            yield return token;
            if (options.StopTokens.Contains(token) || n + 1 == options.MaxNewTokens || session.Lengths[0] >= session.LengthLimit) break;
            logits = session.NextToken(token);
        }
    }
}
