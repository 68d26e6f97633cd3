using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.GenAi;

namespace InfLlmV2.Onnx.Cli.Commands;

/// <summary>
/// The onnxruntime-genai side of <c>infllmv2 rewrite</c>: which model and output a call means,
/// and what the written genai folder became.
/// </summary>
public static class GenAiRewrite
{
    /// <summary>
    /// Resolves <c>rewrite IN -o OUT</c> and <c>rewrite --genai-folder IN -o OUTDIR</c> to the model
    /// to rewrite, the output model path and, when a genai folder is to be written, its source folder.
    /// <c>rewrite IN -o OUT</c> writes a genai folder when IN's folder has a genai_config.json naming
    /// IN as its decoder and OUT lies in another folder; in IN's own folder only the model is written
    /// (its genai_config.json is never overwritten), and a note says so.
    /// </summary>
    /// <exception cref="UsageException">Neither or both of IN and --genai-folder, or the output folder is the input folder.</exception>
    public static (FileInfo Model, FileInfo Output, GenAiFolder? Genai) Resolve(FileInfo? input, DirectoryInfo? genaiFolder, FileInfo output)
    {
        if (input is not null && genaiFolder is not null) throw new UsageException("Give either IN or --genai-folder FOLDER, not both");
        if (genaiFolder is not null)
        {
            var genai = GenAiFolder.Open(genaiFolder.FullName);
            var outDir = Path.TrimEndingDirectorySeparator(Path.GetFullPath(output.FullName));
            if (SafeFiles.SameFile(outDir, genai.Folder))
                throw new UsageException($"The output folder {outDir} is the genai folder {genai.Folder} (real path {SafeFiles.ResolvedPath(outDir)}); the input is never overwritten");
            var outKind = SafeFiles.Kind(outDir, followLinks: true);
            if (outKind is not (FileKind.Missing or FileKind.Directory))
                throw new UsageException($"--output {outDir} is {SafeFiles.Describe(outKind)}; with --genai-folder it names the output folder");
            // The decoder keeps its place in the folder (sub/model.onnx goes to OUTDIR/sub/model.onnx);
            // the configuration and every other file go to OUTDIR itself.
            return (new FileInfo(genai.DecoderPath), new FileInfo(Path.Combine(outDir, genai.DecoderFileName)), genai.WritingTo(outDir));
        }
        if (input is null) throw new UsageException("Missing the model to rewrite: give IN or --genai-folder FOLDER");
        if (!input.Exists) return (input, output, null);  // reported as "Model not found" by rewrite
        var found = GenAiFolder.ForModel(input.FullName);
        if (found is not null && SafeFiles.SameFile(Path.GetDirectoryName(Path.GetFullPath(output.FullName))!, found.Folder))
        {
            Console.WriteLine($"note: {found.ConfigPath} names this model, but the output is in the same folder: only the model is written " +
                              "(write to another folder, or use --genai-folder, for a complete genai folder)");
            found = null;
        }
        return (input, output, found);
    }

    /// <summary>
    /// The runtime identifier a genai folder is written for: <paramref name="targetOs"/> (linux or
    /// windows, case-insensitive; default this process's) and <paramref name="targetArch"/> (x64 or
    /// arm64; default this process's). <see cref="OpLibraryFor"/> then checks that the op library is
    /// built for it (<see cref="NativeOpLibrary.RuntimeIdentifiers"/>).
    /// </summary>
    /// <exception cref="UsageException">An unknown operating system or architecture.</exception>
    public static string TargetRuntimeIdentifier(string? targetOs, string? targetArch)
    {
        var current = NativeOpLibrary.CurrentRuntimeIdentifier;
        int dash = current.IndexOf('-', StringComparison.Ordinal);
        var os = (targetOs?.Trim().ToLowerInvariant()) switch
        {
            null => current[..dash],
            "linux" => "linux",
            "windows" or "win" => "win",
            _ => throw new UsageException($"--target-os must be linux or windows, got '{targetOs}'"),
        };
        var arch = (targetArch?.Trim().ToLowerInvariant()) switch
        {
            null => current[(dash + 1)..],
            "x64" or "amd64" or "x86_64" => "x64",
            "arm64" or "aarch64" => "arm64",
            _ => throw new UsageException($"--target-arch must be x64 or arm64, got '{targetArch}'"),
        };
        return $"{os}-{arch}";
    }

    /// <summary>
    /// The op library to copy into a genai folder for <paramref name="rid"/> (<see cref="NativeOpLibrary.LocateFor"/>:
    /// the package's or tool's runtimes/RID/native, or artifacts/natives/RID in a checkout).
    /// </summary>
    /// <exception cref="UsageException">No op library is built for <paramref name="rid"/> (win-arm64, or this machine's platform when it is none of <see cref="NativeOpLibrary.RuntimeIdentifiers"/>).</exception>
    /// <exception cref="FileNotFoundException">That platform's library is not here; the message names every path tried.</exception>
    public static string OpLibraryFor(string rid)
    {
        if (!NativeOpLibrary.RuntimeIdentifiers.Contains(rid))
            throw new UsageException($"no op library is built for {rid} (--target-os/--target-arch, defaulting to this machine's): " +
                                     $"the platforms are {string.Join(", ", NativeOpLibrary.RuntimeIdentifiers)}");
        return NativeOpLibrary.LocateFor(rid);
    }

    /// <summary>Prints what the genai folder became.</summary>
    public static void Print(GenAiFolderReport r)
    {
        Console.WriteLine($"genai folder {r.OutputFolder}:");
        Console.WriteLine($"  rewritten model  {Path.GetRelativePath(r.OutputFolder, r.Model)}" +
                          (r.DataFiles.Count > 0 ? $" (external data: {string.Join(", ", r.DataFiles)})" : ""));
        Console.WriteLine($"  op library       {Path.GetFileName(r.OpsLibrary)} (copied from {r.OpsLibrary})");
        var copied = r.CopiedFiles.Count <= 8 ? string.Join(", ", r.CopiedFiles)
            : $"{string.Join(", ", r.CopiedFiles.Take(6))} and {r.CopiedFiles.Count - 6} more (all {r.CopiedFiles.Count} in --report)";
        Console.WriteLine($"  copied unchanged {(r.CopiedFiles.Count == 0 ? "(no other files)" : copied)}");
        if (r.NotCopied.Count > 0) Console.WriteLine($"  not copied       {string.Join(", ", r.NotCopied)} (replaced by the files above)");
        Console.WriteLine($"  {GenAiFolder.ConfigFileName} changes (nothing else differs):");
        foreach (var c in r.ConfigChanges) Console.WriteLine($"    {c}");
    }

    /// <summary>The report's <c>genai</c> object (null when no genai folder was written).</summary>
    public static object? Json(GenAiFolderReport? r) => r is null ? null : new
    {
        output_folder = r.OutputFolder, model = r.Model, data_files = r.DataFiles, ops_library = r.OpsLibrary,
        config_changes = r.ConfigChanges, copied_files = r.CopiedFiles, not_copied = r.NotCopied,
    };
}
