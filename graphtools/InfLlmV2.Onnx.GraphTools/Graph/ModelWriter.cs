using System.Security.Cryptography;
using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools;

/// <summary>
/// Writes a rewritten model so that nothing is ever lost: never over its input, never over an
/// existing file without <c>force</c>, atomically, and with its external data resolvable. External
/// data files are never loaded or modified: when the output folder differs from the input folder,
/// each referenced data file is copied next to the output model under the same relative
/// <c>location</c> (byte-identical); in the same folder the files are shared as they are. On
/// failure the data files copied so far and the (empty) subfolders created for them are removed.
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
    /// Checks that every external location of the model read from <paramref name="inputPath"/>
    /// resolves inside its folder and exists; returns the distinct relative locations.
    /// </summary>
    public static List<string> CheckExternalData(ModelProto model, string inputPath)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(inputPath))!;
        var locations = new List<string>();
        foreach (var t in ExternalTensors(model))
        {
            var file = ExternalData.ResolveLocation(t, dir);
            if (!File.Exists(file)) throw new FileNotFoundException($"Tensor '{t.Name}': external data file not found: {file}", file);
            var loc = ExternalData.Entry(t, "location")!;
            if (!locations.Contains(loc)) locations.Add(loc);
        }
        return locations;
    }

    /// <summary>Saves <paramref name="model"/> (read from <paramref name="inputPath"/>) to <paramref name="outputPath"/>.</summary>
    /// <exception cref="IOException">The output would overwrite the input, a data file, or an existing file without force.</exception>
    public static void Save(ModelProto model, string inputPath, string outputPath, bool force)
    {
        var input = Path.GetFullPath(inputPath);
        var output = Path.GetFullPath(outputPath);
        var inDir = Path.GetDirectoryName(input)!;
        var outDir = Path.GetDirectoryName(output)!;
        if (string.Equals(input, output, StringComparison.Ordinal))
            throw new IOException($"Refusing to overwrite the input model {input}; choose another output path");
        var locations = CheckExternalData(model, input);
        foreach (var loc in locations)
        {
            if (string.Equals(Path.GetFullPath(Path.Combine(inDir, loc)), output, StringComparison.Ordinal) ||
                string.Equals(Path.GetFullPath(Path.Combine(outDir, loc)), output, StringComparison.Ordinal))
                throw new IOException($"Refusing to write the model over its external data file {loc}");
        }
        if (File.Exists(output) && !force)
            throw new IOException($"Output {output} exists; pass --force to overwrite it");
        if (Directory.Exists(output))
            throw new IOException($"Output {output} is a folder");

        var created = new List<string>();
        var createdDirs = new List<string>();  // deepest first, removed (when empty) on failure
        try
        {
            if (!string.Equals(inDir, outDir, StringComparison.Ordinal))
            {
                foreach (var loc in locations)
                {
                    var src = Path.Combine(inDir, loc);
                    var dst = Path.GetFullPath(Path.Combine(outDir, loc));
                    bool existed = File.Exists(dst);
                    if (existed)
                    {
                        if (SameContent(src, dst)) continue;
                        if (!force) throw new IOException($"External data file {dst} exists with other content; pass --force to overwrite it");
                    }
                    CreateFolders(Path.GetDirectoryName(dst)!, createdDirs);
                    var tmp = dst + $".{Environment.ProcessId}.tmp";
                    File.Copy(src, tmp, overwrite: true);
                    created.Add(tmp);
                    File.Move(tmp, dst, overwrite: true);
                    created.Remove(tmp);
                    if (!existed) created.Add(dst);  // an overwritten (--force) file cannot be restored
                }
            }
            OnnxModelFile.Save(model, output);
        }
        catch
        {
            foreach (var f in created) TryDelete(f);
            foreach (var d in createdDirs) TryDeleteEmptyFolder(d);
            throw;
        }
    }

    /// <summary>Creates <paramref name="folder"/> and records the folders that did not exist, deepest first.</summary>
    private static void CreateFolders(string folder, List<string> createdDirs)
    {
        var missing = new List<string>();
        for (var d = folder; !string.IsNullOrEmpty(d) && !Directory.Exists(d); d = Path.GetDirectoryName(d)) missing.Add(d);
        Directory.CreateDirectory(folder);
        foreach (var d in missing) if (!createdDirs.Contains(d)) createdDirs.Add(d);
        createdDirs.Sort((a, b) => b.Length.CompareTo(a.Length));
    }

    private static void TryDeleteEmptyFolder(string path)
    {
        try
        {
            if (Directory.Exists(path) && !Directory.EnumerateFileSystemEntries(path).Any()) Directory.Delete(path);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    private static bool SameContent(string a, string b)
    {
        var fa = new FileInfo(a);
        var fb = new FileInfo(b);
        if (fa.Length != fb.Length) return false;
        using var sa = fa.OpenRead();
        using var sb = fb.OpenRead();
        return SHA256.HashData(sa).AsSpan().SequenceEqual(SHA256.HashData(sb));
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
