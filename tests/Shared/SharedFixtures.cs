namespace InfLlmV2.Onnx.TestSupport;

/// <summary>Where the real-model fixtures are (both test projects compile this file).</summary>
public static class SharedFixtures
{
    /// <summary>
    /// ../shared/fixtures/real-models next to the repository (where CI and developers have it); a
    /// clone elsewhere (e.g. /tmp) finds it through INFLLMV2_SHARED_DIR or the workplace's /work/shared.
    /// The fixtures are read in place, never copied into the repository.
    /// </summary>
    public static string RealModels(string repoRoot)
    {
        var candidates = new List<string> { Path.Combine(repoRoot, "..", "shared") };
        if (Environment.GetEnvironmentVariable("INFLLMV2_SHARED_DIR") is { Length: > 0 } env) candidates.Add(env);
        candidates.Add("/work/shared");
        foreach (var c in candidates)
        {
            var dir = Path.GetFullPath(Path.Combine(c, "fixtures", "real-models"));
            if (Directory.Exists(dir)) return dir;
        }
        throw new DirectoryNotFoundException($"Real-model fixtures not found; tried {string.Join(", ", candidates.Select(c => Path.Combine(c, "fixtures", "real-models")))}");
    }
}
