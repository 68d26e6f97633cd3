namespace InfLlmV2.Onnx.OpContract;

/// <summary>One named set of sparse attributes: the selection a family of official checkpoints was trained and served with.</summary>
/// <param name="Name">The <c>rewrite --preset</c> name.</param>
/// <param name="Settings">The attributes.</param>
/// <param name="Description">Where the values come from, in one line.</param>
public sealed record SparsePreset(string Name, SparseAttentionSettings Settings, string Description);

/// <summary>
/// The presets of <c>rewrite --preset</c> (docs/op-spec.md, "Compatibility with the official
/// implementation"). The old scheme (MiniCPM4 June 2025, CPM.cu) ranks a top-k of K blocks that
/// includes the init block but not its W-block window [qb − W + 1, qb]; the op expresses it with
/// <c>window_size = (W − 1)·block_size</c>, <c>topk = K + 1</c>, <c>lse_approx = 0</c>.
/// </summary>
public static class SparsePresets
{
    /// <summary>MiniCPM4.1 / infllmv2_cuda_impl main: the op's defaults.</summary>
    public const string MiniCpm41 = "minicpm4.1";

    /// <summary>MiniCPM4 (June 2025): top-k 64 without the 32-block window, exact stage-1 LSE.</summary>
    public const string MiniCpm4 = "minicpm4";

    /// <summary>CPM.cu's <c>LLM</c> defaults: block window 32, top-k 32, sparse switch 8192, exact stage-1 LSE.</summary>
    public const string CpmCu = "cpmcu";

    /// <summary>Every preset, in the order the CLI lists them.</summary>
    public static IReadOnlyList<SparsePreset> All { get; } =
    [
        new(MiniCpm41, SparseAttentionSettings.Defaults,
            "MiniCPM4.1 (unified scheme: 33 local blocks inside the budget of 96, level-2 LSE approximation)"),
        new(MiniCpm4, SparseAttentionSettings.Defaults with { SparseWindowTokens = 31 * 64, TopKBlocks = 65, LseApprox = false },
            "MiniCPM4, June 2025 (old scheme: top-64 incl. the init block plus a 32-block window, exact LSE)"),
        new(CpmCu, SparseAttentionSettings.Defaults with { SparseWindowTokens = 31 * 64, TopKBlocks = 33, LseApprox = false, DenseLen = 8224 },
            "CPM.cu LLM defaults (old scheme: top-32 incl. the init block plus a 32-block window, exact LSE; sparse once 16 c1_len > 8192)"),
    ];

    /// <summary>The known preset names, comma separated (for messages).</summary>
    public static string Names => string.Join(", ", All.Select(p => p.Name));

    /// <summary>The preset called <paramref name="name"/> (case-insensitive), or null.</summary>
    public static SparsePreset? Find(string name) => All.FirstOrDefault(p => string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase));

    /// <summary>The preset whose attributes are exactly <paramref name="settings"/>, or null ("custom").</summary>
    public static SparsePreset? Matching(SparseAttentionSettings settings) => All.FirstOrDefault(p => p.Settings == settings);

    /// <summary>The preset with the fewest attributes different from <paramref name="settings"/>, and those attributes (name=value as in <paramref name="settings"/>).</summary>
    public static (SparsePreset Preset, IReadOnlyList<string> Differences) Closest(SparseAttentionSettings settings)
    {
        var ours = settings.Attributes().ToList();
        return All.Select(p => (p, (IReadOnlyList<string>)p.Settings.Attributes().Zip(ours)
                .Where(x => x.First.Value != x.Second.Value).Select(x => $"{x.Second.Name}={x.Second.Value}").ToList()))
            .OrderBy(x => x.Item2.Count).First();
    }

    /// <summary>The attributes as <c>name=value</c> pairs, space separated.</summary>
    public static string Describe(SparseAttentionSettings settings) => string.Join(" ", settings.Attributes().Select(a => $"{a.Name}={a.Value}"));
}
