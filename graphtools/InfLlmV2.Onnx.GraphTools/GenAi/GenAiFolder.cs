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

    /// <summary>Largest <c>genai_config.json</c> read (genai's own are a few KiB).</summary>
    public const long MaxConfigBytes = 16L << 20;

    /// <summary>Most members (files and folders) a genai folder may have.</summary>
    public const int MaxMembers = 100_000;

    /// <summary>Deepest folder nesting inside a genai folder.</summary>
    public const int MaxDepth = 32;

    private GenAiFolder(string folder, JsonObject config, string decoderFileName, string? outputFolder = null)
    {
        Folder = folder;
        Config = config;
        DecoderFileName = decoderFileName;
        OutputFolder = outputFolder;
    }

    /// <summary>
    /// The output genai folder when the caller named it (<c>--genai-folder IN -o OUTDIR</c>); null when
    /// it is the folder of the output model. A decoder in a subfolder (<c>sub/model.onnx</c>) is then
    /// written to <c>OUTDIR/sub/model.onnx</c> with the configuration and the other files in OUTDIR.
    /// </summary>
    public string? OutputFolder { get; }

    /// <summary>This folder, written into <paramref name="outputFolder"/> (see <see cref="OutputFolder"/>).</summary>
    public GenAiFolder WritingTo(string outputFolder) => new(Folder, Config, DecoderFileName, Path.TrimEndingDirectorySeparator(Path.GetFullPath(outputFolder)));

    /// <summary>Full path of the folder.</summary>
    public string Folder { get; }

    /// <summary>Full path of the folder's <c>genai_config.json</c>.</summary>
    public string ConfigPath => Path.Combine(Folder, ConfigFileName);

    /// <summary>The decoder model as <c>model.decoder.filename</c> names it (relative to the folder).</summary>
    public string DecoderFileName { get; }

    /// <summary>Full path of the decoder model.</summary>
    public string DecoderPath => Path.GetFullPath(Path.Combine(Folder, DecoderFileName));

    private JsonObject Config { get; }

    /// <summary>
    /// Opens the genai folder <paramref name="folder"/>: its <c>genai_config.json</c> and the decoder it
    /// names must be regular files whose real paths lie inside the folder (read through
    /// <see cref="SafeFiles.OpenRegular"/>, at most <see cref="MaxConfigBytes"/>); every error names the
    /// file and the field.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">It has no <c>genai_config.json</c>, or the decoder it names is missing.</exception>
    /// <exception cref="InvalidDataException">The configuration is not JSON, is not a regular file inside the folder, or names no decoder file inside the folder.</exception>
    public static GenAiFolder Open(string folder)
    {
        if (folder.Contains('\0')) throw new InvalidDataException("genai folder path contains a NUL character");
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(folder));
        if (SafeFiles.Kind(full, followLinks: true) != FileKind.Directory) throw new DirectoryNotFoundException($"genai folder not found: {full}");
        var configPath = Path.Combine(full, ConfigFileName);
        if (SafeFiles.Kind(configPath, followLinks: false) == FileKind.Missing)
            throw new FileNotFoundException($"{full} is not a genai folder: no {ConfigFileName}", configPath);
        var (configReal, _) = SafeFiles.RegularFileInside(full, ConfigFileName, $"genai folder {full}: {ConfigFileName}");
        var bytes = SafeFiles.ReadBounded(configReal, $"genai configuration {configPath}:", MaxConfigBytes);
        JsonObject config;
        try
        {
            config = JsonNode.Parse(bytes, documentOptions: new JsonDocumentOptions { MaxDepth = 64, AllowDuplicateProperties = false }) as JsonObject
                     ?? throw new InvalidDataException($"{configPath}: not a JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{configPath}: not valid JSON: {e.Message}", e);
        }
        if (config["model"] is not JsonObject modelSection)
            throw new InvalidDataException($"{configPath}: model is missing or not an object");
        if (modelSection["decoder"] is not JsonObject decoder)
            throw new InvalidDataException($"{configPath}: model.decoder is missing or not an object");
        if (decoder["filename"] is not JsonValue name || !name.TryGetValue(out string? fileName) || string.IsNullOrWhiteSpace(fileName))
            throw new InvalidDataException($"{configPath}: model.decoder.filename is missing or not a string (decoder pipelines are not supported)");
        if (fileName.Contains('\0') || fileName.Contains('\\') || Path.IsPathRooted(fileName))
            throw new InvalidDataException($"{configPath}: model.decoder.filename '{Printable(fileName)}' is not a relative POSIX path");
        var decoderPath = Path.GetFullPath(Path.Combine(full, fileName));
        if (!decoderPath.StartsWith(SafeFiles.WithTrailingSeparator(full), StringComparison.Ordinal))
            throw new InvalidDataException($"{configPath}: model.decoder.filename '{Printable(fileName)}' is not a relative path inside the folder");
        if (SafeFiles.Kind(decoderPath, followLinks: false) == FileKind.Missing)
            throw new FileNotFoundException($"{configPath}: the decoder '{Printable(fileName)}' (model.decoder.filename) does not exist", decoderPath);
        SafeFiles.RegularFileInside(full, Path.GetRelativePath(full, decoderPath), $"{configPath}: model.decoder.filename");
        return new GenAiFolder(full, config, Path.GetRelativePath(full, decoderPath));
    }

    // A name as messages show it: control characters (a NUL included) escaped.
    private static string Printable(string name) =>
        string.Concat(name.Select(c => char.IsControl(c) ? $"\\u{(int)c:x4}" : c.ToString()));

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
        if (SafeFiles.Kind(Path.Combine(folder, ConfigFileName), followLinks: false) == FileKind.Missing) return null;
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
        var outFolder = OutputFolder ?? Path.GetDirectoryName(outModel)!;
        if (!IsUnder(outModel, outFolder))
            throw new IOException($"The rewritten decoder {outModel} is not inside the genai output folder {outFolder}");
        // The one alias check: the output folder is not the input folder, nor inside it, nor around it,
        // through any link or mount (real paths, then device and inode).
        if (SafeFiles.SameFile(Folder, outFolder))
            throw new IOException($"The genai output folder {outFolder} is the input folder {Folder} (real path {SafeFiles.ResolvedPath(outFolder)}); its {ConfigFileName} is never overwritten");
        SafeFiles.CheckApart(Folder, outFolder, "The genai output folder", nested: true);
        var library = Path.GetFullPath(opsLibraryPath);
        if (SafeFiles.Kind(library, followLinks: true) != FileKind.Regular) throw new FileNotFoundException($"Op library not found: {library}", library);
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
        SafeFiles.CheckNoLinkBelow(outFolder, outModel, "genai folder output");
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
        foreach (var (source, real) in Members())
        {
            if (skipSources.Contains(source)) continue;
            var relative = Path.GetRelativePath(Folder, source);
            var destination = Path.Combine(outFolder, relative);
            SafeFiles.CheckNoLinkBelow(outFolder, destination, "genai folder output");
            if (ownDestinations.Contains(destination)) { replaced.Add(relative); continue; }
            copies.Add((real, destination, relative));
        }
        var writes = new GenAiFolderWrite(this, outModel, outFolder, library, configText, copies, force)
        {
            ConfigChanges = changes, NotCopied = replaced, DataFiles = dataFiles,
        };
        writes.CheckDestinations();
        return writes;
    }

    /// <summary>
    /// Every file of the folder to copy, as (path in the folder, real path to read). A member must be a
    /// regular file, or a symbolic link to a regular file whose real path lies inside the folder;
    /// anything else (a link leading outside, to a folder or nowhere, a FIFO, a socket, a device, a
    /// name that is not UTF-8) is refused with its name, never followed or opened.
    /// </summary>
    private List<(string Path, string Real)> Members()
    {
        var members = new List<(string, string)>();
        int count = 0;
        void Walk(string dir, int depth)
        {
            if (depth > MaxDepth) throw new InvalidDataException($"genai folder {Folder}: {Path.GetRelativePath(Folder, dir)} is nested more than {MaxDepth} folders deep");
            foreach (var entry in Directory.EnumerateFileSystemEntries(dir, "*", new EnumerationOptions { AttributesToSkip = 0, RecurseSubdirectories = false }).Order(StringComparer.Ordinal))
            {
                if (++count > MaxMembers) throw new InvalidDataException($"genai folder {Folder} has more than {MaxMembers} members");
                var relative = Path.GetRelativePath(Folder, entry);
                if (relative.Contains('\uFFFD'))
                    throw new InvalidDataException($"genai folder {Folder}: member '{Printable(relative)}' has a name that is not valid UTF-8; rename it");
                var kind = SafeFiles.Kind(entry, followLinks: false);
                switch (kind)
                {
                    case FileKind.Directory:
                        Walk(entry, depth + 1);
                        break;
                    case FileKind.Regular:
                        members.Add((Path.GetFullPath(entry), SafeFiles.RealPath(entry)));
                        break;
                    case FileKind.SymbolicLink:
                        if (SafeFiles.Kind(entry, followLinks: true) == FileKind.Directory)
                            throw new InvalidDataException($"genai folder {Folder}: member '{Printable(relative)}' is a symbolic link to a folder; links are not followed");
                        var (real, _) = SafeFiles.RegularFileInside(Folder, relative, $"genai folder {Folder}: member '{Printable(relative)}' (a symbolic link)");
                        members.Add((Path.GetFullPath(entry), real));
                        break;
                    default:
                        throw new InvalidDataException($"genai folder {Folder}: member '{Printable(relative)}' is {SafeFiles.Describe(kind)}; only regular files are copied");
                }
            }
        }
        Walk(Folder, 0);
        return members;
    }

    /// <summary>True when <paramref name="path"/> lies strictly inside <paramref name="folder"/>.</summary>
    internal static bool IsUnder(string path, string folder) =>
        path.StartsWith(folder.TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar, StringComparison.Ordinal);

    internal static bool SameContent(string a, string b)
    {
        using var sa = SafeFiles.OpenRegular(a, "genai folder member", long.MaxValue);
        using var sb = SafeFiles.OpenRegular(b, "genai folder output", long.MaxValue);
        if (sa.Length != sb.Length) return false;
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
        // Every target: no link on the way, nothing but a regular file replaced (also with force).
        foreach (var to in _copies.Select(c => c.To).Append(LibraryDestination).Append(ConfigDestination).Append(_outModel))
        {
            SafeFiles.CheckNoLinkBelow(_outFolder, to, "genai folder output");
            SafeFiles.CheckWritableTarget(to, "genai folder output");
        }
        if (_force) return;
        foreach (var (from, to, _) in _copies.Append((_library, LibraryDestination, "")))
            if (File.Exists(to) && !GenAiFolder.SameContent(from, to))
                throw new IOException($"{to} exists with other content; pass --force to overwrite it");
        if (File.Exists(ConfigDestination)
            && !SafeFiles.ReadBounded(ConfigDestination, "genai folder output", GenAiFolder.MaxConfigBytes + 1).AsSpan().SequenceEqual(System.Text.Encoding.UTF8.GetBytes(_configText)))
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

    private void Copy(string from, string to, List<string> created, List<string> createdDirs)
    {
        SafeFiles.CheckNoLinkBelow(_outFolder, to, "genai folder output");
        bool existed = File.Exists(to);
        if (existed && GenAiFolder.SameContent(from, to)) return;
        CreateFolders(Path.GetDirectoryName(to)!, createdDirs);
        SafeFiles.CheckNoLinkBelow(_outFolder, to, "genai folder output");
        long length;
        using (var source = SafeFiles.OpenRegular(from, "genai folder member", long.MaxValue)) length = source.Length;
        SafeFiles.WriteAtomically(to, stream => SafeFiles.CopyExactly(from, length, stream), "genai folder output");
        if (!existed) created.Add(to);
    }

    private void WriteWhole(string path, string text, List<string> created)
    {
        SafeFiles.CheckNoLinkBelow(_outFolder, path, "genai folder output");
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
