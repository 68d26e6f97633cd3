using System.Security.Cryptography;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools.GenAi;

/// <summary>
/// An onnxruntime-genai model folder: <c>genai_config.json</c>, the decoder model it names
/// (<c>model.decoder.filename</c>), the decoder's external data and whatever else the folder holds
/// (tokenizer files, other models). <see cref="Prepare"/> plans a rewritten copy of the folder in
/// another folder and <see cref="GenAiFolderWrite.Write"/> writes it: the rewritten decoder and its
/// data, every other file copied byte for byte, the op library copied in, and a
/// <c>genai_config.json</c> whose decoder session options load that library
/// (<c>custom_ops_library</c>) with everything else unchanged.
/// </summary>
/// <remarks>
/// onnxruntime-genai 0.18 loads <c>custom_ops_library</c> only from inside the model folder or the
/// folder of its own native library (an absolute path elsewhere fails with "custom_ops_library path
/// is not within an allowed directory"), and resolves a relative path against the model folder
/// first. So the op library is copied into the output folder and named by its file name.
/// </remarks>
public sealed class GenAiFolder
{
    /// <summary>The configuration file that makes a folder a genai model folder.</summary>
    public const string ConfigFileName = "genai_config.json";

    /// <summary>genai's session option (in <c>model.decoder.session_options</c>) naming a custom-op library to register.</summary>
    public const string CustomOpsLibraryKey = "custom_ops_library";

    private GenAiFolder(string folder, JsonObject config, string decoderFileName)
    {
        Folder = folder;
        Config = config;
        DecoderFileName = decoderFileName;
    }

    /// <summary>Full path of the folder.</summary>
    public string Folder { get; }

    /// <summary>Full path of the folder's <c>genai_config.json</c>.</summary>
    public string ConfigPath => Path.Combine(Folder, ConfigFileName);

    /// <summary>The decoder model as <c>model.decoder.filename</c> names it (relative to the folder).</summary>
    public string DecoderFileName { get; }

    /// <summary>Full path of the decoder model.</summary>
    public string DecoderPath => Path.GetFullPath(Path.Combine(Folder, DecoderFileName));

    private JsonObject Config { get; }

    /// <summary>Opens the genai folder <paramref name="folder"/>.</summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">It has no <c>genai_config.json</c>, or the decoder it names is missing.</exception>
    /// <exception cref="InvalidDataException">The configuration is not JSON or names no decoder file inside the folder.</exception>
    public static GenAiFolder Open(string folder)
    {
        var full = Path.GetFullPath(folder);
        if (!Directory.Exists(full)) throw new DirectoryNotFoundException($"genai folder not found: {full}");
        var configPath = Path.Combine(full, ConfigFileName);
        if (!File.Exists(configPath)) throw new FileNotFoundException($"{full} is not a genai folder: no {ConfigFileName}", configPath);
        JsonObject config;
        try
        {
            config = JsonNode.Parse(File.ReadAllText(configPath)) as JsonObject
                     ?? throw new InvalidDataException($"{configPath}: not a JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{configPath}: not valid JSON: {e.Message}", e);
        }
        if (config["model"]?["decoder"] is not JsonObject decoder)
            throw new InvalidDataException($"{configPath}: no model.decoder object");
        if (decoder["filename"] is not JsonValue name || !name.TryGetValue(out string? fileName) || string.IsNullOrWhiteSpace(fileName))
            throw new InvalidDataException($"{configPath}: model.decoder.filename is missing (decoder pipelines are not supported)");
        var decoderPath = Path.GetFullPath(Path.Combine(full, fileName));
        if (Path.IsPathRooted(fileName) || !decoderPath.StartsWith(full + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            throw new InvalidDataException($"{configPath}: model.decoder.filename '{fileName}' is not inside the folder");
        if (!File.Exists(decoderPath)) throw new FileNotFoundException($"{configPath}: the decoder '{fileName}' does not exist", decoderPath);
        return new GenAiFolder(full, config, fileName);
    }

    /// <summary>
    /// The genai folder whose decoder is <paramref name="modelPath"/>: its folder holds a
    /// <c>genai_config.json</c> whose <c>model.decoder.filename</c> is this model. Null when the
    /// folder has no such file, or when the model is not the decoder it names.
    /// </summary>
    /// <exception cref="InvalidDataException">The folder's <c>genai_config.json</c> is not a valid genai configuration.</exception>
    public static GenAiFolder? ForModel(string modelPath)
    {
        var model = Path.GetFullPath(modelPath);
        var folder = Path.GetDirectoryName(model)!;
        if (!File.Exists(Path.Combine(folder, ConfigFileName))) return null;
        try
        {
            var genai = Open(folder);
            return string.Equals(genai.DecoderPath, model, StringComparison.Ordinal) ? genai : null;
        }
        catch (FileNotFoundException e)
        {
            throw new InvalidDataException(e.Message, e);
        }
    }

    /// <summary>
    /// Plans the rewritten copy of this folder around <paramref name="outputModelPath"/> (its folder
    /// is the output genai folder) and checks everything that can be checked before writing:
    /// the output folder is another folder that does not contain this one, no file would be
    /// replaced without <paramref name="force"/>, the configuration can name our library.
    /// </summary>
    /// <param name="inputModel">The decoder as loaded from <see cref="DecoderPath"/> (for its external data files).</param>
    /// <param name="outputModelPath">Where the rewritten decoder goes.</param>
    /// <param name="opsLibraryPath">The op library file to copy into the output folder.</param>
    /// <param name="force">Replace existing files whose content differs.</param>
    /// <exception cref="IOException">The output folder is this folder or contains it, or a file exists with other content without force.</exception>
    /// <exception cref="InvalidDataException">The configuration already names another custom-op library.</exception>
    public GenAiFolderWrite Prepare(ModelProto inputModel, string outputModelPath, string opsLibraryPath, bool force)
    {
        var outModel = Path.GetFullPath(outputModelPath);
        var outFolder = Path.GetDirectoryName(outModel)!;
        if (string.Equals(outFolder, Folder, StringComparison.Ordinal))
            throw new IOException($"The genai output folder must differ from the input folder {Folder} (its {ConfigFileName} is never overwritten)");
        if (IsUnder(Folder, outFolder))
            throw new IOException($"The genai output folder {outFolder} contains the input folder {Folder}");
        var library = Path.GetFullPath(opsLibraryPath);
        if (!File.Exists(library)) throw new FileNotFoundException($"Op library not found: {library}", library);
        var libraryName = Path.GetFileName(library);

        // The configuration: our library in the decoder's session options, the new model name.
        var config = (JsonObject)Config.DeepClone();
        var decoder = (JsonObject)config["model"]!["decoder"]!;
        var changes = new List<string>();
        if (decoder["session_options"] is not JsonObject sessionOptions)
        {
            if (decoder["session_options"] is not null) throw new InvalidDataException($"{ConfigPath}: model.decoder.session_options is not an object");
            sessionOptions = new JsonObject();
            decoder["session_options"] = sessionOptions;
            changes.Add("model.decoder.session_options: added");
        }
        if (sessionOptions[CustomOpsLibraryKey] is { } existing)
        {
            var value = existing is JsonValue v && v.TryGetValue(out string? s) ? s : existing.ToJsonString();
            if (value != libraryName)
                throw new InvalidDataException($"{ConfigPath}: model.decoder.session_options.{CustomOpsLibraryKey} already names '{value}'; genai registers one library per session");
        }
        else
        {
            sessionOptions[CustomOpsLibraryKey] = libraryName;
            changes.Add($"model.decoder.session_options.{CustomOpsLibraryKey}: set to \"{libraryName}\" (copied into the folder)");
        }
        var newFileName = Path.GetRelativePath(outFolder, outModel).Replace(Path.DirectorySeparatorChar, '/');
        if (newFileName != DecoderFileName)
        {
            decoder["filename"] = newFileName;
            changes.Add($"model.decoder.filename: \"{DecoderFileName}\" -> \"{newFileName}\"");
        }
        var configText = config.ToJsonString(new JsonSerializerOptions
        {
            WriteIndented = true, IndentSize = 4, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        }) + "\n";

        // Files written by others: the model and its data (ModelWriter), the config and the library (here).
        var dataFiles = ModelWriter.CheckExternalData(inputModel, DecoderPath);
        var skipSources = new HashSet<string>(StringComparer.Ordinal) { ConfigPath, DecoderPath };
        foreach (var loc in dataFiles) skipSources.Add(Path.GetFullPath(Path.Combine(Folder, loc)));
        var ownDestinations = new HashSet<string>(StringComparer.Ordinal) { outModel, Path.Combine(outFolder, ConfigFileName), Path.Combine(outFolder, libraryName) };
        foreach (var loc in dataFiles) ownDestinations.Add(Path.GetFullPath(Path.Combine(outFolder, loc)));

        var copies = new List<(string From, string To, string Relative)>();
        var replaced = new List<string>();
        foreach (var source in FilesUnder(Folder, skipFolder: outFolder))
        {
            if (skipSources.Contains(source)) continue;
            var relative = Path.GetRelativePath(Folder, source);
            var destination = Path.Combine(outFolder, relative);
            if (ownDestinations.Contains(destination)) { replaced.Add(relative); continue; }
            copies.Add((source, destination, relative));
        }
        var writes = new GenAiFolderWrite(this, outModel, outFolder, library, configText, copies, force)
        {
            ConfigChanges = changes, NotCopied = replaced, DataFiles = dataFiles,
        };
        writes.CheckDestinations();
        return writes;
    }

    /// <summary>Every file under <paramref name="folder"/> (symbolic links to files followed, linked folders not entered), minus <paramref name="skipFolder"/>'s subtree.</summary>
    private static IEnumerable<string> FilesUnder(string folder, string skipFolder)
    {
        foreach (var file in Directory.EnumerateFiles(folder).Order(StringComparer.Ordinal)) yield return Path.GetFullPath(file);
        foreach (var sub in Directory.EnumerateDirectories(folder).Order(StringComparer.Ordinal))
        {
            var full = Path.GetFullPath(sub);
            if (new DirectoryInfo(full).LinkTarget is not null) continue;
            if (string.Equals(full, skipFolder, StringComparison.Ordinal) || IsUnder(skipFolder, full)) continue;
            foreach (var file in FilesUnder(full, skipFolder)) yield return file;
        }
    }

    /// <summary>True when <paramref name="path"/> lies strictly inside <paramref name="folder"/>.</summary>
    internal static bool IsUnder(string path, string folder) =>
        path.StartsWith(folder.TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar, StringComparison.Ordinal);

    internal static bool SameContent(string a, string b)
    {
        var fa = new FileInfo(a);
        var fb = new FileInfo(b);
        if (fa.Length != fb.Length) return false;
        using var sa = fa.OpenRead();
        using var sb = fb.OpenRead();
        return SHA256.HashData(sa).AsSpan().SequenceEqual(SHA256.HashData(sb));
    }
}

/// <summary>What a rewritten genai folder became (for the command's report).</summary>
/// <param name="OutputFolder">The output genai folder.</param>
/// <param name="Model">The rewritten decoder (full path).</param>
/// <param name="DataFiles">The decoder's external data files (relative locations), copied by the model writer.</param>
/// <param name="OpsLibrary">The op library copied into the folder (its source path).</param>
/// <param name="ConfigChanges">Every change made to <c>genai_config.json</c>; nothing else in it differs.</param>
/// <param name="CopiedFiles">The other files of the input folder, copied byte for byte (relative paths).</param>
/// <param name="NotCopied">Input files not copied because the rewritten model, its data, the config or the library take their place.</param>
public sealed record GenAiFolderReport(
    string OutputFolder, string Model, IReadOnlyList<string> DataFiles, string OpsLibrary,
    IReadOnlyList<string> ConfigChanges, IReadOnlyList<string> CopiedFiles, IReadOnlyList<string> NotCopied);

/// <summary>
/// A planned genai folder write (<see cref="GenAiFolder.Prepare"/>). <see cref="Write"/> writes it
/// all or nothing: on failure every file it created (and every folder it created, when empty) is
/// removed. Files replaced with force cannot be restored.
/// </summary>
public sealed class GenAiFolderWrite
{
    private readonly GenAiFolder _source;
    private readonly string _outModel;
    private readonly string _outFolder;
    private readonly string _library;
    private readonly string _configText;
    private readonly List<(string From, string To, string Relative)> _copies;
    private readonly bool _force;

    internal GenAiFolderWrite(GenAiFolder source, string outModel, string outFolder, string library, string configText,
                              List<(string From, string To, string Relative)> copies, bool force)
    {
        _source = source;
        _outModel = outModel;
        _outFolder = outFolder;
        _library = library;
        _configText = configText;
        _copies = copies;
        _force = force;
    }

    /// <summary>The changes made to <c>genai_config.json</c>.</summary>
    public required IReadOnlyList<string> ConfigChanges { get; init; }

    /// <summary>Input files that the output's own files take the place of.</summary>
    public required IReadOnlyList<string> NotCopied { get; init; }

    /// <summary>The decoder's external data locations.</summary>
    public required IReadOnlyList<string> DataFiles { get; init; }

    private string ConfigDestination => Path.Combine(_outFolder, GenAiFolder.ConfigFileName);

    private string LibraryDestination => Path.Combine(_outFolder, Path.GetFileName(_library));

    /// <summary>Refuses (before anything is written) files that exist with other content, without force.</summary>
    internal void CheckDestinations()
    {
        if (_force) return;
        foreach (var (from, to, _) in _copies.Append((_library, LibraryDestination, "")))
            if (File.Exists(to) && !GenAiFolder.SameContent(from, to))
                throw new IOException($"{to} exists with other content; pass --force to overwrite it");
        if (File.Exists(ConfigDestination) && File.ReadAllText(ConfigDestination) != _configText)
            throw new IOException($"{ConfigDestination} exists with other content; pass --force to overwrite it");
        if (File.Exists(_outModel))
            throw new IOException($"Output {_outModel} exists; pass --force to overwrite it");
    }

    /// <summary>What <see cref="Write"/> writes, known before it writes anything.</summary>
    public GenAiFolderReport Planned =>
        new(_outFolder, _outModel, DataFiles, _library, ConfigChanges, _copies.Select(c => c.Relative).ToList(), NotCopied);

    /// <summary>
    /// Writes the folder: the copies, the library, the configuration, then the rewritten model and
    /// its data. Only regular files are ever replaced (<see cref="SafeFiles.CheckWritableTarget"/>).
    /// Returns what it created (files, then folders deepest first) for <see cref="ModelWriter.Undo"/>.
    /// </summary>
    /// <param name="rewritten">The rewritten decoder.</param>
    public IReadOnlyList<string> Write(ModelProto rewritten)
    {
        CheckDestinations();
        var created = new List<string>();
        var createdDirs = new List<string>();
        try
        {
            foreach (var (from, to, _) in _copies) Copy(from, to, created, createdDirs);
            Copy(_library, LibraryDestination, created, createdDirs);
            CreateFolders(_outFolder, createdDirs);
            WriteWhole(ConfigDestination, _configText, created);
            CreateFolders(Path.GetDirectoryName(_outModel)!, createdDirs);
            created.AddRange(ModelWriter.Save(rewritten, _source.DecoderPath, _outModel, _force));
        }
        catch
        {
            ModelWriter.Undo([.. created, .. createdDirs]);
            throw;
        }
        return [.. created, .. createdDirs];
    }

    private static void Copy(string from, string to, List<string> created, List<string> createdDirs)
    {
        bool existed = File.Exists(to);
        if (existed && GenAiFolder.SameContent(from, to)) return;
        CreateFolders(Path.GetDirectoryName(to)!, createdDirs);
        long length = new FileInfo(from).Length;
        SafeFiles.WriteAtomically(to, stream => SafeFiles.CopyExactly(from, length, stream), "genai folder output");
        if (!existed) created.Add(to);
    }

    private static void WriteWhole(string path, string text, List<string> created)
    {
        bool existed = File.Exists(path);
        SafeFiles.WriteAtomically(path, stream => stream.Write(System.Text.Encoding.UTF8.GetBytes(text)), "genai folder output");
        if (!existed) created.Add(path);
    }

    private static void CreateFolders(string folder, List<string> createdDirs)
    {
        var missing = new List<string>();
        for (var d = folder; !string.IsNullOrEmpty(d) && !Directory.Exists(d); d = Path.GetDirectoryName(d)) missing.Add(d);
        Directory.CreateDirectory(folder);
        foreach (var d in missing) if (!createdDirs.Contains(d)) createdDirs.Add(d);
        createdDirs.Sort((a, b) => b.Length.CompareTo(a.Length));
    }
}
