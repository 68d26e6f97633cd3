using System.Security.Cryptography;
using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools;

/// <summary>
/// Writes a rewritten model so that nothing is ever lost: never over its input, never over an
/// existing file without <c>force</c>, atomically, and with its external data resolvable. External
/// data files are never loaded or modified: when the output folder differs from the input folder,
/// each referenced data file is copied next to the output model under the same relative
/// <c>location</c> (byte-identical); in the same folder the files are shared as they are.
/// </summary>
public static class ModelWriter
{
    /// <summary>Every tensor of a model that lives in external data (initializers, attribute tensors, subgraphs).</summary>
    public static IEnumerable<TensorProto> ExternalTensors(ModelProto model) => Tensors(model.Graph).Where(t => t.DataLocation == TensorProto.Types.DataLocation.External);

    private static IEnumerable<TensorProto> Tensors(GraphProto g)
    {
        foreach (var t in g.Initializer) yield return t;
        foreach (var s in g.SparseInitializer) { yield return s.Values; yield return s.Indices; }
        foreach (var n in g.Node)
            foreach (var a in n.Attribute)
            {
                if (a.T is not null) yield return a.T;
                foreach (var t in a.Tensors) yield return t;
                if (a.G is not null) foreach (var t in Tensors(a.G)) yield return t;
                foreach (var sg in a.Graphs) foreach (var t in Tensors(sg)) yield return t;
            }
    }

    /// <summary>
    /// Checks every external tensor of the model read from <paramref name="inputPath"/> (see
    /// <see cref="ExternalData.Check"/>: a regular file inside its folder after resolving links, with
    /// offset and length inside the file); returns the distinct relative locations.
    /// </summary>
    public static List<string> CheckExternalData(ModelProto model, string inputPath) =>
        CheckExternalFiles(model, inputPath).Select(r => r.Location).ToList();

    /// <summary>One checked range per distinct data file (the file's real path and length when checked).</summary>
    private static List<ExternalRange> CheckExternalFiles(ModelProto model, string inputPath)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(inputPath))!;
        var files = new List<ExternalRange>();
        foreach (var t in ExternalTensors(model))
        {
            var range = ExternalData.Check(t, dir);
            if (!files.Any(f => f.Location == range.Location)) files.Add(range);
        }
        return files;
    }

    /// <summary>
    /// Saves <paramref name="model"/> (read from <paramref name="inputPath"/>) to <paramref name="outputPath"/>
    /// and returns the files and folders it created (none existed before; <see cref="Undo"/> deletes them).
    /// On failure nothing it created is left behind.
    /// </summary>
    /// <exception cref="IOException">The output would overwrite the input, a data file, an existing file without force, or something that is not a regular file.</exception>
    public static IReadOnlyList<string> Save(ModelProto model, string inputPath, string outputPath, bool force)
    {
        var input = Path.GetFullPath(inputPath);
        var output = Path.GetFullPath(outputPath);
        var inDir = Path.GetDirectoryName(input)!;
        var outDir = Path.GetDirectoryName(output)!;
        if (string.Equals(input, output, StringComparison.Ordinal) || SafeFiles.SameFile(input, output))
            throw new IOException($"Refusing to overwrite the input model {input}; choose another output path");
        ModelValidator.Check(model, inDir);
        var files = CheckExternalFiles(model, input);
        foreach (var f in files)
        {
            if (SafeFiles.SameFile(f.RealPath, output) ||
                string.Equals(Path.GetFullPath(Path.Combine(outDir, f.Location)), output, StringComparison.Ordinal))
                throw new IOException($"Refusing to write the model over its external data file {f.Location}");
        }
        if (Directory.Exists(output))
            throw new IOException($"Output {output} is a folder");
        SafeFiles.CheckWritableTarget(output, "Output");
        if (File.Exists(output) && !force)
            throw new IOException($"Output {output} exists; pass --force to overwrite it");

        var created = new List<string>();
        var createdDirs = new List<string>();
        try
        {
            CreateFolder(outDir, createdDirs);
            if (!SafeFiles.SameFile(inDir, outDir))
            {
                var outRoot = SafeFiles.RealPath(outDir);
                foreach (var f in files)
                {
                    var dst = Path.GetFullPath(Path.Combine(outDir, f.Location));
                    SafeFiles.CheckWritableTarget(dst, "External data output");
                    bool existed = File.Exists(dst);
                    if (existed)
                    {
                        if (SameContent(f.RealPath, f.FileLength, dst)) continue;
                        if (!force) throw new IOException($"External data file {dst} exists with other content; pass --force to overwrite it");
                    }
                    CreateFolder(Path.GetDirectoryName(dst)!, createdDirs);
                    var dstDir = SafeFiles.RealPath(Path.GetDirectoryName(dst)!);
                    if (!SafeFiles.WithTrailingSeparator(dstDir).StartsWith(SafeFiles.WithTrailingSeparator(outRoot), StringComparison.Ordinal))
                        throw new IOException($"External data output {dst} resolves outside the output folder {outRoot}");
                    SafeFiles.WriteAtomically(dst, s => SafeFiles.CopyExactly(f.RealPath, f.FileLength, s), "External data output");
                    if (!existed) created.Add(dst);  // an overwritten (--force) file cannot be restored
                }
            }
            bool outputExisted = File.Exists(output);
            OnnxModelFile.Save(model, output);
            if (!outputExisted) created.Add(output);
        }
        catch
        {
            Undo([.. created, .. Enumerable.Reverse(createdDirs)]);
            throw;
        }
        return [.. created, .. Enumerable.Reverse(createdDirs)];
    }

    /// <summary>Deletes what <see cref="Save"/> returned: its files, then its (then empty) folders.</summary>
    public static void Undo(IReadOnlyList<string> created)
    {
        foreach (var path in created)
        {
            if (SafeFiles.Kind(path, followLinks: false) == FileKind.Directory)
                try { Directory.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            else
                SafeFiles.TryDelete(path);
        }
    }

    // Creates a folder and its missing parents, recording each one created (outermost first).
    private static void CreateFolder(string dir, List<string> created)
    {
        var missing = new Stack<string>();
        for (var d = Path.GetFullPath(dir); !Directory.Exists(d); d = Path.GetDirectoryName(d)!)
        {
            if (SafeFiles.Kind(d, followLinks: false) != FileKind.Missing)
                throw new IOException($"Output folder {d} is not a folder");
            missing.Push(d);
        }
        while (missing.Count > 0)
        {
            var d = missing.Pop();
            Directory.CreateDirectory(d);
            created.Add(d);
        }
    }

    // dst was checked to be a regular file (never a FIFO or a device, which could block or never end).
    private static bool SameContent(string src, long srcLength, string dst)
    {
        var fb = new FileInfo(dst);
        if (fb.Length != srcLength || new FileInfo(src).Length != srcLength) return false;
        using var sa = SafeFiles.OpenRegular(src, "external data file", long.MaxValue);
        using var sb = SafeFiles.OpenRegular(dst, "external data output", long.MaxValue);
        return SHA256.HashData(sa).AsSpan().SequenceEqual(SHA256.HashData(sb));
    }
}
