using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools.Rewriting;

/// <summary>
/// The rewriter for apps and tools that convert models themselves (the InfLlmV2.Onnx.GraphTools
/// package) and for <c>infllmv2 rewrite</c>: a model in memory (<see cref="Rewrite(ModelProto, RewriteOptions?, Action{string}?)"/>,
/// or <see cref="Rewrite(byte[], RewriteOptions?, string?)"/> for serialized bytes), or a model file to another
/// file (<see cref="RewriteFile"/>, or <see cref="Load"/> then <see cref="CheckedModelFile.Save"/>), each returning
/// the per-site report. External data is never loaded, the input is never overwritten, and a failed
/// write leaves nothing behind.
/// </summary>
public static class ModelRewriter
{
    /// <summary>
    /// Rewrites every attention of <paramref name="model"/> that a rule accepts, in place.
    /// The model is modified only when at least one site was rewritten.
    /// </summary>
    /// <param name="model">The model (main graph and If/Loop/Scan bodies are searched).</param>
    /// <param name="options">Attributes of the new nodes and optional graph inputs; null for the op's defaults.</param>
    /// <param name="progress">Called with <c>graph/node</c> before each accepted site is rewritten; null for none.</param>
    /// <returns>Every attention site found, with <see cref="AttentionSite.Rewritten"/> and, for refused ones, <see cref="AttentionSite.Reason"/>.</returns>
    /// <exception cref="ArgumentException">The options are inconsistent (the message names the attribute).</exception>
    /// <exception cref="InvalidDataException">The model has no graph.</exception>
    public static RewriteReport Rewrite(ModelProto model, RewriteOptions? options = null, Action<string>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        return new RewriteReport(AttentionRewriter.Rewrite(model, options ?? new RewriteOptions(), progress), []);
    }

    /// <summary>
    /// Reads a model file and checks it as ONNX Runtime would when loading it, its external data
    /// included (which stays on disk): the first half of <see cref="RewriteFile"/>, for callers that
    /// rewrite the model (<see cref="Rewrite(ModelProto, RewriteOptions?, Action{string}?)"/>) and save it themselves.
    /// </summary>
    /// <param name="inputPath">The ONNX model file (never modified).</param>
    /// <exception cref="FileNotFoundException">The input does not exist.</exception>
    /// <exception cref="InvalidDataException">The input is not a valid ONNX model, or its external data is unsafe or truncated.</exception>
    public static CheckedModelFile Load(string inputPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(inputPath);
        var input = Path.GetFullPath(inputPath);
        var model = OnnxModelFile.Load(input);
        ModelValidator.Check(model, Path.GetDirectoryName(input));
        ModelWriter.CheckExternalData(model, input);
        return new CheckedModelFile(input, model);
    }

    /// <summary>
    /// Rewrites a serialized model (checked first as <c>infllmv2 rewrite</c> checks a file). A model
    /// with external data needs <paramref name="modelDirectory"/>, the folder its data files are in;
    /// their relative locations are kept, so the result belongs in that folder too.
    /// </summary>
    /// <param name="model">The ONNX model file's bytes.</param>
    /// <param name="options">Attributes of the new nodes and optional graph inputs; null for the op's defaults.</param>
    /// <param name="modelDirectory">Folder of the model's external data files; null when it has none (external tensors are then refused).</param>
    /// <returns>The rewritten model's bytes (the input bytes themselves when nothing was rewritten) and the report.</returns>
    /// <exception cref="InvalidDataException">The bytes are not a valid ONNX model, or their external data is missing, unsafe or truncated.</exception>
    /// <exception cref="ArgumentException">The options are inconsistent.</exception>
    public static (byte[] Model, RewriteReport Report) Rewrite(byte[] model, RewriteOptions? options = null, string? modelDirectory = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var stream = new MemoryStream(model, writable: false);
        var proto = OnnxModelFile.Parse(stream, "model bytes");
        ModelValidator.Check(proto, modelDirectory);
        var report = Rewrite(proto, options);
        return (report.AnyRewritten ? OnnxModelFile.ToBytes(proto) : model, report);
    }

    /// <summary>
    /// Reads <paramref name="inputPath"/>, rewrites it and, when at least one site was rewritten,
    /// writes <paramref name="outputPath"/> atomically; its external data files are copied next to it
    /// when the folder differs (byte-identical, same relative locations). Nothing is written when no
    /// site could be rewritten: check <see cref="RewriteReport.AnyRewritten"/> and the sites' reasons.
    /// </summary>
    /// <param name="inputPath">The ONNX model file (never modified).</param>
    /// <param name="outputPath">The rewritten model's path; must differ from the input.</param>
    /// <param name="options">Attributes of the new nodes and optional graph inputs; null for the op's defaults.</param>
    /// <param name="overwrite">Replace an existing output (and data files with other content) instead of failing.</param>
    /// <returns>The report, with <see cref="RewriteReport.WrittenFiles"/> listing the files and folders created.</returns>
    /// <exception cref="FileNotFoundException">The input does not exist.</exception>
    /// <exception cref="InvalidDataException">The input is not a valid ONNX model, or its external data is unsafe or truncated.</exception>
    /// <exception cref="IOException">The output would overwrite the input or a data file, exists without <paramref name="overwrite"/>, or is not a regular file.</exception>
    /// <exception cref="ArgumentException">The options are inconsistent.</exception>
    public static RewriteReport RewriteFile(string inputPath, string outputPath, RewriteOptions? options = null, bool overwrite = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(inputPath);
        ArgumentException.ThrowIfNullOrEmpty(outputPath);
        options ??= new RewriteOptions();
        if (options.Validate() is { } why) throw new ArgumentException(why, nameof(options));
        var input = Path.GetFullPath(inputPath);
        var output = Path.GetFullPath(outputPath);
        if (string.Equals(input, output, StringComparison.Ordinal))
            throw new IOException($"Refusing to overwrite the input model {input}; choose another output path");
        if (File.Exists(output) && !overwrite)
            throw new IOException($"Output {output} exists; pass overwrite: true to replace it");
        var file = Load(input);
        var report = Rewrite(file.Model, options);
        return report.AnyRewritten ? report with { WrittenFiles = file.Save(output, overwrite) } : report;
    }
}

/// <summary>A model file read and checked by <see cref="ModelRewriter.Load"/>.</summary>
public sealed class CheckedModelFile
{
    internal CheckedModelFile(string path, ModelProto model)
    {
        Path = path;
        Model = model;
    }

    /// <summary>The file's full path.</summary>
    public string Path { get; }

    /// <summary>The model, its external tensors still pointing at files next to <see cref="Path"/>.</summary>
    public ModelProto Model { get; }

    /// <summary>
    /// Writes <see cref="Model"/> to <paramref name="outputPath"/> atomically, its external data files
    /// copied next to it when the folder differs (byte-identical, same relative locations).
    /// </summary>
    /// <returns>The files and folders created (for <see cref="ModelWriter.Undo"/>).</returns>
    /// <exception cref="IOException">The output would overwrite the input or a data file, exists without <paramref name="overwrite"/>, or is not a regular file.</exception>
    public IReadOnlyList<string> Save(string outputPath, bool overwrite) => ModelWriter.Save(Model, Path, outputPath, overwrite);
}

/// <summary>What a <see cref="ModelRewriter"/> call found and did.</summary>
/// <param name="Sites">Every attention site, in graph order: form, heads, whether it was rewritten, and why not.</param>
/// <param name="WrittenFiles">Files and folders created on disk (<see cref="ModelRewriter.RewriteFile"/>; empty otherwise or when nothing was rewritten).</param>
public sealed record RewriteReport(IReadOnlyList<AttentionSite> Sites, IReadOnlyList<string> WrittenFiles)
{
    /// <summary>How many sites were rewritten.</summary>
    public int RewrittenCount => Sites.Count(s => s.Rewritten);

    /// <summary>Whether at least one site was rewritten (a model file was written by <see cref="ModelRewriter.RewriteFile"/>).</summary>
    public bool AnyRewritten => RewrittenCount > 0;

    /// <summary>One line per site: <c>graph/node: Form rewritten</c>, or <c>... refused: reason</c>.</summary>
    public IEnumerable<string> Lines() => Sites.Select(s =>
        $"{s.Graph}/{s.Node}: {s.Form} " + (s.Rewritten ? "rewritten" : s.Rewritable ? "rewritable" : $"refused: {s.Reason}")
        + (s.Note is null ? "" : $" ({s.Note})"));
}
