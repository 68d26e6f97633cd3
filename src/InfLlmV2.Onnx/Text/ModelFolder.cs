using System.Text.Json;
using InfLlmV2.Onnx.GraphTools;

namespace InfLlmV2.Onnx.Text;

/// <summary>
/// The search settings a model's configuration files state (null where none states one). As in
/// onnxruntime-genai and Hugging Face transformers, a model samples only when <see cref="DoSample"/>
/// is true; otherwise it is greedy whatever the temperature says.
/// </summary>
public sealed record SearchDefaults
{
    /// <summary><c>do_sample</c>.</summary>
    public bool? DoSample { get; init; }

    /// <summary><c>temperature</c>.</summary>
    public float? Temperature { get; init; }

    /// <summary><c>top_k</c>.</summary>
    public int? TopK { get; init; }

    /// <summary><c>top_p</c>.</summary>
    public float? TopP { get; init; }

    /// <summary><c>max_length</c>: most tokens of prompt and answer together.</summary>
    public int? MaxLength { get; init; }

    /// <summary><c>max_new_tokens</c> (generation_config.json).</summary>
    public int? MaxNewTokens { get; init; }

    /// <summary>The temperature to use: 0 (greedy) unless <see cref="DoSample"/> is true, then <see cref="Temperature"/> (1 when unstated).</summary>
    public float EffectiveTemperature => DoSample == true ? Temperature ?? 1f : 0f;
}

/// <summary>
/// A model given as a file or a folder, with what its configuration files say: an onnxruntime-genai
/// folder (<c>genai_config.json</c> naming the decoder), a Hugging Face style export folder
/// (<c>config.json</c>, <c>generation_config.json</c>, tokenizer files and exactly one <c>.onnx</c>
/// decoder), or a model file (the configuration files of its folder apply).
/// </summary>
/// <remarks>
/// Every file is read through <see cref="SafeFiles"/>: a regular file inside the folder (real path)
/// of at most <see cref="MaxConfigBytes"/>; every field used is checked for its type and range, and an
/// error names the file and the field.
/// </remarks>
public sealed class ModelFolder
{
    /// <summary>onnxruntime-genai's configuration file.</summary>
    public const string GenAiConfigFile = "genai_config.json";

    /// <summary>Hugging Face's generation configuration file.</summary>
    public const string GenerationConfigFile = "generation_config.json";

    /// <summary>Hugging Face's model configuration file.</summary>
    public const string ConfigFile = "config.json";

    /// <summary>Hugging Face's tokenizer configuration file (holds <c>chat_template</c>).</summary>
    public const string TokenizerConfigFile = "tokenizer_config.json";

    /// <summary>Largest configuration file read (real ones are a few KB; chat templates a few tens).</summary>
    public const long MaxConfigBytes = 4L << 20;

    /// <summary>Token ids are below 2^24 (as in the tokenizer).</summary>
    public const int MaxTokenId = (1 << 24) - 1;

    private ModelFolder(string folder, string modelPath, string kind)
    {
        Folder = folder;
        ModelPath = modelPath;
        Kind = kind;
    }

    /// <summary>The folder holding the model (full path).</summary>
    public string Folder { get; }

    /// <summary>The decoder file (full path).</summary>
    public string ModelPath { get; }

    /// <summary>"genai folder", "folder" (Hugging Face style) or "file".</summary>
    public string Kind { get; }

    /// <summary>Whether the folder has a <c>genai_config.json</c>.</summary>
    public bool IsGenAi { get; private set; }

    /// <summary>End-of-sequence token ids of every configuration file (union, in order of first mention).</summary>
    public IReadOnlyList<int> EosTokenIds { get; private set; } = [];

    /// <summary>Tokens the model can hold (genai <c>context_length</c> or <c>max_position_embeddings</c>; the smallest), or null.</summary>
    public long? ContextLength { get; private set; }

    /// <summary>The search settings, genai_config.json first, then generation_config.json, then config.json (not its max_length).</summary>
    public SearchDefaults Search { get; private set; } = new();

    /// <summary>The configuration files read.</summary>
    public IReadOnlyList<string> ConfigFiles { get; private set; } = [];

    /// <summary>
    /// Opens a model file or folder. A folder: the decoder named by <c>genai_config.json</c>, else
    /// its one <c>.onnx</c> file.
    /// </summary>
    /// <exception cref="FileNotFoundException">The path, or the decoder the config names, does not exist.</exception>
    /// <exception cref="InvalidDataException">No decoder, several (listed), or a configuration file is not valid; the message names it.</exception>
    public static ModelFolder Open(string path) => OpenCore(path, readConfigs: true);

    /// <summary>
    /// The decoder file of a model file or folder (see <see cref="Open(string)"/>) without reading the
    /// configuration files (for commands that only run the graph).
    /// </summary>
    public static string ResolveModelFile(string path) => OpenCore(path, readConfigs: false).ModelPath;

    private static ModelFolder OpenCore(string path, bool readConfigs)
    {
        ArgumentNullException.ThrowIfNull(path);
        var full = Path.GetFullPath(path);
        var kind = SafeFiles.Kind(full, followLinks: true);
        ModelFolder result;
        if (kind == FileKind.Missing) throw new FileNotFoundException($"Model not found: {full}", full);
        if (kind == FileKind.Directory)
        {
            var genai = Path.Combine(full, GenAiConfigFile);
            if (SafeFiles.Kind(genai, followLinks: false) != FileKind.Missing)
            {
                using var doc = ReadJson(full, GenAiConfigFile);
                var fileName = doc.RootElement.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.Object
                    && m.TryGetProperty("decoder", out var d) && d.ValueKind == JsonValueKind.Object
                    && d.TryGetProperty("filename", out var f) && f.ValueKind == JsonValueKind.String ? f.GetString() : null;
                if (string.IsNullOrEmpty(fileName))
                    throw new InvalidDataException($"{genai}: model.decoder.filename is missing or not a string");
                var (_, _) = SafeFiles.RegularFileInside(full, fileName, $"decoder {Path.Combine(full, fileName)} (model.decoder.filename of {genai})");
                result = new ModelFolder(full, Path.Combine(full, fileName), "genai folder");
            }
            else
            {
                var models = Directory.EnumerateFiles(full, "*.onnx").Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal).ToList();
                if (models.Count == 0)
                    throw new InvalidDataException($"{full} holds no .onnx model and no {GenAiConfigFile}: give the model file");
                if (models.Count > 1)
                    throw new InvalidDataException($"{full} holds {models.Count} ONNX models ({string.Join(", ", models)}): give the model file");
                SafeFiles.RegularFileInside(full, models[0], $"model {Path.Combine(full, models[0])}");
                result = new ModelFolder(full, Path.Combine(full, models[0]), "folder");
            }
        }
        else if (kind == FileKind.Regular)
            result = new ModelFolder(Path.GetDirectoryName(full)!, full, "file");
        else
            throw new InvalidDataException($"Model {full} is {SafeFiles.Describe(kind)}, not a model file or folder");
        if (readConfigs) result.ReadConfigs();
        return result;
    }

    private void ReadConfigs()
    {
        var eos = new List<int>();
        var files = new List<string>();
        long? context = null;
        SearchDefaults? genaiSearch = null, generation = null, config = null;
        void AddEos(JsonElement parent, string file, string field)
        {
            if (!parent.TryGetProperty("eos_token_id", out var e) || e.ValueKind == JsonValueKind.Null) return;
            var where = field.Length == 0 ? "eos_token_id" : $"{field}.eos_token_id";
            if (e.ValueKind == JsonValueKind.Array)
            {
                int i = 0;
                foreach (var x in e.EnumerateArray())
                {
                    if (i >= 1024) throw Bad(file, where, "has more than 1024 ids");
                    var id = TokenId(x, file, $"{where}[{i++}]");
                    if (!eos.Contains(id)) eos.Add(id);
                }
            }
            else
            {
                var id = TokenId(e, file, where);
                if (!eos.Contains(id)) eos.Add(id);
            }
        }
        void AddContext(long? value)
        {
            if (value is long v) context = Math.Min(context ?? long.MaxValue, v);
        }

        if (Exists(GenAiConfigFile))
        {
            IsGenAi = true;
            var file = Path.Combine(Folder, GenAiConfigFile);
            files.Add(file);
            using var doc = ReadJson(Folder, GenAiConfigFile);
            var root = doc.RootElement;
            if (root.TryGetProperty("model", out var model) && model.ValueKind == JsonValueKind.Object)
            {
                AddEos(model, file, "model");
                AddContext(Positive(model, "context_length", file, "model.context_length"));
            }
            if (root.TryGetProperty("search", out var search) && search.ValueKind == JsonValueKind.Object)
                genaiSearch = SearchOf(search, file, "search.");
        }
        if (Exists(GenerationConfigFile))
        {
            var file = Path.Combine(Folder, GenerationConfigFile);
            files.Add(file);
            using var doc = ReadJson(Folder, GenerationConfigFile);
            AddEos(doc.RootElement, file, "");
            generation = SearchOf(doc.RootElement, file, "");
        }
        if (Exists(ConfigFile))
        {
            var file = Path.Combine(Folder, ConfigFile);
            files.Add(file);
            using var doc = ReadJson(Folder, ConfigFile);
            AddEos(doc.RootElement, file, "");
            AddContext(Positive(doc.RootElement, "max_position_embeddings", file, "max_position_embeddings"));
            // Not its max_length / max_new_tokens: older exports serialize transformers' defaults there (max_length 20).
            config = SearchOf(doc.RootElement, file, "") with { MaxLength = null, MaxNewTokens = null };
        }
        EosTokenIds = eos;
        ContextLength = context;
        ConfigFiles = files;
        Search = Merge(genaiSearch, Merge(generation, config));
    }

    private static SearchDefaults Merge(SearchDefaults? first, SearchDefaults? then) =>
        first is null ? then ?? new() : then is null ? first : new SearchDefaults
        {
            DoSample = first.DoSample ?? then.DoSample,
            Temperature = first.Temperature ?? then.Temperature,
            TopK = first.TopK ?? then.TopK,
            TopP = first.TopP ?? then.TopP,
            MaxLength = first.MaxLength ?? then.MaxLength,
            MaxNewTokens = first.MaxNewTokens ?? then.MaxNewTokens,
        };

    private static SearchDefaults SearchOf(JsonElement e, string file, string prefix)
    {
        bool? doSample = null;
        if (e.TryGetProperty("do_sample", out var ds) && ds.ValueKind != JsonValueKind.Null)
        {
            if (ds.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw Bad(file, prefix + "do_sample", $"must be true or false, got {Printable(ds)}");
            doSample = ds.ValueKind == JsonValueKind.True;
        }
        float? temperature = Number(e, "temperature", file, prefix, 0, 1e6);
        float? topP = Number(e, "top_p", file, prefix, 0, 1);
        if (topP == 0) throw Bad(file, prefix + "top_p", "must be in (0, 1], got 0");
        int? topK = (int?)Integer(e, "top_k", file, prefix, 0, int.MaxValue);
        int? maxLength = (int?)Integer(e, "max_length", file, prefix, 1, int.MaxValue);
        int? maxNew = (int?)Integer(e, "max_new_tokens", file, prefix, 1, int.MaxValue);
        return new SearchDefaults { DoSample = doSample, Temperature = temperature, TopK = topK, TopP = topP, MaxLength = maxLength, MaxNewTokens = maxNew };
    }

    private static float? Number(JsonElement e, string name, string file, string prefix, double min, double max)
    {
        if (!e.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out var d) || !(d >= min && d <= max))
            throw Bad(file, prefix + name, $"must be a number in [{min}, {max}], got {Printable(v)}");
        return (float)d;
    }

    private static long? Integer(JsonElement e, string name, string file, string prefix, long min, long max)
    {
        if (!e.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out var l) || l < min || l > max)
            throw Bad(file, prefix + name, $"must be an integer in [{min}, {max}], got {Printable(v)}");
        return l;
    }

    private static long? Positive(JsonElement e, string name, string file, string field)
    {
        if (!e.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out var l) || l < 1 || l > int.MaxValue)
            throw Bad(file, field, $"must be an integer in [1, {int.MaxValue}], got {Printable(v)}");
        return l;
    }

    private bool Exists(string name) => SafeFiles.Kind(Path.Combine(Folder, name), followLinks: false) != FileKind.Missing;

    /// <summary>Reads and parses a JSON file of <paramref name="folder"/> (a regular file inside it, at most <see cref="MaxConfigBytes"/>).</summary>
    /// <exception cref="InvalidDataException">Not a regular file inside the folder, too large, or not valid JSON; the message names the file.</exception>
    public static JsonDocument ReadJson(string folder, string name)
    {
        var shown = Path.Combine(folder, name);
        var (real, _) = SafeFiles.RegularFileInside(folder, name, shown);
        var bytes = SafeFiles.ReadBounded(real, name, MaxConfigBytes);
        try
        {
            var doc = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 64, AllowDuplicateProperties = false });
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                doc.Dispose();
                throw new InvalidDataException($"{shown} is not a JSON object");
            }
            return doc;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{shown} is not valid JSON: {e.Message}");
        }
    }

    private static int TokenId(JsonElement e, string file, string field)
    {
        if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt64(out var v) || v < 0 || v > MaxTokenId)
            throw Bad(file, field, $"must be an integer token id in [0, {MaxTokenId}], got {Printable(e)}");
        return (int)v;
    }

    private static InvalidDataException Bad(string file, string field, string why) => new($"{file}: {field} {why}");

    private static string Printable(JsonElement e)
    {
        var raw = e.GetRawText();
        return raw.Length > 40 ? raw[..40] + "..." : raw;
    }
}
