using System.Text.Json.Nodes;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.Session;
using InfLlmV2.Onnx.Tests.Reliability;
using InfLlmV2.Onnx.Text;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// A Hugging Face style export folder and a genai folder of the same tiny decoder (vocab 512, with
/// the generated tokenizer.json), whose configurations name as end of sequence a token that greedy
/// decoding of <see cref="Prompt"/> reaches after a few steps.
/// </summary>
public sealed class ConfigFolders : IDisposable
{
    public static readonly TinyDecoderConfig Config = TextModels.Config;
    public static readonly int[] Prompt = [1, 2, 3, 4, 5];
    private readonly TempDir _dir = new();

    public ConfigFolders()
    {
        HfFolder = _dir["hf"];
        Directory.CreateDirectory(HfFolder);
        var model = TinyDecoderGenerator.Generate(Config);
        TinyDecoderGenerator.Save(model, Path.Combine(HfFolder, "model.onnx"), externalData: false);
        TinyTokenizer.Write(HfFolder, Config.Vocab);
        using (var m = DecoderModel.Open(Path.Combine(HfFolder, "model.onnx")))
        using (var s = new DecoderSession(m, new DecoderSessionOptions { Capacity = 64 }))
            Greedy = s.Generate(Prompt, new GenerationOptions { MaxNewTokens = 16 }).ToArray();
        // The 4th greedy token is the end of sequence (it may come earlier: the first time it appears).
        Eos = Greedy[3];
        StopsAfter = Array.IndexOf(Greedy, Eos) + 1;
        File.WriteAllText(Path.Combine(HfFolder, ModelFolder.ConfigFile), new JsonObject
        {
            ["model_type"] = "llama", ["eos_token_id"] = Config.Vocab - 1, ["max_position_embeddings"] = Config.MaxPositions, ["vocab_size"] = Config.Vocab,
        }.ToJsonString());
        File.WriteAllText(Path.Combine(HfFolder, ModelFolder.GenerationConfigFile), new JsonObject
        {
            ["eos_token_id"] = new JsonArray(Config.Vocab - 1, Eos), ["do_sample"] = false,
        }.ToJsonString());
        File.WriteAllText(Path.Combine(HfFolder, ModelFolder.TokenizerConfigFile), "{}");

        GenAiFolder = GenAiFolderWriter.Write(Config, _dir["genai"]);
        TinyTokenizer.Write(GenAiFolder, Config.Vocab);
        var configPath = Path.Combine(GenAiFolder, ModelFolder.GenAiConfigFile);
        var genai = JsonNode.Parse(File.ReadAllText(configPath))!;
        genai["model"]!["eos_token_id"] = new JsonArray(Eos);
        File.WriteAllText(configPath, genai.ToJsonString());
    }

    public string HfFolder { get; }
    public string GenAiFolder { get; }
    public int[] Greedy { get; }
    public int Eos { get; }
    public int StopsAfter { get; }
    public string Scratch(string name) => _dir[name];

    /// <summary>A new folder <paramref name="name"/> holding the HF folder's decoder and one configuration file.</summary>
    public string DecoderWithConfig(string name, string configFile, string json)
    {
        var folder = Scratch(name);
        Directory.CreateDirectory(folder);
        File.Copy(Path.Combine(HfFolder, "model.onnx"), Path.Combine(folder, "model.onnx"), overwrite: true);
        File.WriteAllText(Path.Combine(folder, configFile), json);
        return folder;
    }

    public void Dispose() => _dir.Dispose();
}

/// <summary>generate/compare/inspect/run on model folders: end of sequence, context length and search defaults from the configuration files.</summary>
[Collection(ReliabilityCollection.Name)]
public class ModelFolderCliTests(ConfigFolders folders) : IClassFixture<ConfigFolders>
{
    private static string Ids(IEnumerable<int> ids) => string.Join(",", ids);

    [Fact]
    public void HfFolder_StopsAtEndOfSequence_ByDefault()
    {
        var r = InProcessCli.Run("generate", folders.HfFolder, "--prompt-ids", Ids(ConfigFolders.Prompt), "--max-new-tokens", "16");
        Assert.True(r.Code == 0, r.ToString());
        Assert.Equal(Ids(folders.Greedy.Take(folders.StopsAfter)), r.Out.Trim());
        Assert.Contains("stopped: end of sequence", r.Err);
    }

    [Fact]
    public void GenAiFolder_StopsAtEndOfSequence_ByDefault()
    {
        var r = InProcessCli.Run("generate", folders.GenAiFolder, "--prompt-ids", Ids(ConfigFolders.Prompt), "--max-new-tokens", "16");
        Assert.True(r.Code == 0, r.ToString());
        Assert.Equal(Ids(folders.Greedy.Take(folders.StopsAfter)), r.Out.Trim());
    }

    [Fact]
    public void TextPrompt_InAFolder_StopsAtEndOfSequence()
    {
        var r = InProcessCli.Run("generate", folders.HfFolder, "--prompt", "Hello, world!", "--max-new-tokens", "40");
        Assert.True(r.Code == 0, r.ToString());
        Assert.Contains("tokens in", r.Err);
    }

    [Fact]
    public void IgnoreEos_GoesOn_AndStopIdsAdd()
    {
        var r = InProcessCli.Run("generate", folders.HfFolder, "--prompt-ids", Ids(ConfigFolders.Prompt), "--max-new-tokens", "8", "--ignore-eos");
        Assert.True(r.Code == 0, r.ToString());
        Assert.Equal(Ids(folders.Greedy.Take(8)), r.Out.Trim());
        Assert.Contains("stopped: length", r.Err);
        var s = InProcessCli.Run("generate", folders.HfFolder, "--prompt-ids", Ids(ConfigFolders.Prompt), "--max-new-tokens", "8", "--stop-ids", $"{folders.Greedy[0]}");
        Assert.Equal(Ids(folders.Greedy.Take(1)), s.Out.Trim());
    }

    [Fact]
    public void SearchMaxLength_FromGenAiConfig_WhenNoFlag()
    {
        var folder = folders.Scratch("maxlen");
        if (!Directory.Exists(folder))
        {
            GenAiFolderWriter.Write(ConfigFolders.Config, folder);
            var path = Path.Combine(folder, ModelFolder.GenAiConfigFile);
            var genai = JsonNode.Parse(File.ReadAllText(path))!;
            genai["search"]!["max_length"] = ConfigFolders.Prompt.Length + 3;
            genai["model"]!["eos_token_id"] = new JsonArray();
            File.WriteAllText(path, genai.ToJsonString());
        }
        var r = InProcessCli.Run("generate", folder, "--prompt-ids", Ids(ConfigFolders.Prompt));
        Assert.True(r.Code == 0, r.ToString());
        Assert.Equal(3, r.Out.Trim().Split(',').Length);
        var flag = InProcessCli.Run("generate", folder, "--prompt-ids", Ids(ConfigFolders.Prompt), "--max-new-tokens", "5");
        Assert.Equal(5, flag.Out.Trim().Split(',').Length);
    }

    [Fact]
    public void PromptLongerThanContext_IsRefusedBeforeAnyWork_NamingTheContextLength()
    {
        var folder = folders.Scratch("short");
        Directory.CreateDirectory(folder);
        // The model file is not even valid: the refusal comes before it is opened.
        File.WriteAllText(Path.Combine(folder, "model.onnx"), "not a model");
        File.WriteAllText(Path.Combine(folder, ModelFolder.ConfigFile), "{\"max_position_embeddings\": 4}");
        var r = InProcessCli.Run("generate", folder, "--prompt-ids", Ids(ConfigFolders.Prompt));
        Assert.Equal(2, r.Code);
        Assert.True(r.OneErrorLine, r.ToString());
        Assert.Contains("context length 4", r.Err);
    }

    [Fact]
    public void FolderWithSeveralDecoders_IsRefused_ListingThem()
    {
        var folder = folders.Scratch("several");
        Directory.CreateDirectory(folder);
        File.Copy(Path.Combine(folders.HfFolder, "model.onnx"), Path.Combine(folder, "decoder_model.onnx"), overwrite: true);
        File.Copy(Path.Combine(folders.HfFolder, "model.onnx"), Path.Combine(folder, "decoder_with_past_model.onnx"), overwrite: true);
        foreach (var command in new[] { "generate", "inspect" })
        {
            string[] args = command == "generate" ? [command, folder, "--prompt-ids", "1"] : [command, folder];
            var r = InProcessCli.Run(args);
            Assert.Equal(2, r.Code);
            Assert.True(r.OneErrorLine, r.ToString());
            Assert.Contains("decoder_model.onnx, decoder_with_past_model.onnx", r.Err);
        }
    }

    [Fact]
    public void InspectAndCompare_TakeFolders()
    {
        var i = InProcessCli.Run("inspect", folders.GenAiFolder);
        Assert.True(i.Code == 0, i.ToString());
        Assert.Contains("model.onnx", i.Out);
        var c = InProcessCli.Run("compare", folders.HfFolder, folders.GenAiFolder, "--prompt-len", "8", "--decode-steps", "2");
        Assert.True(c.Code == 0, c.ToString());
    }

    [Fact]
    public void BadConfigField_NamesFileAndField()
    {
        var folder = folders.DecoderWithConfig("badeos", ModelFolder.GenerationConfigFile, "{\"eos_token_id\": [2, \"x\"]}");
        var r = InProcessCli.Run("generate", folder, "--prompt-ids", "1");
        Assert.Equal(2, r.Code);
        Assert.True(r.OneErrorLine, r.ToString());
        Assert.Contains("generation_config.json: eos_token_id[1] must be an integer token id", r.Err);
        // Commands that only run the graph do not read the configuration files.
        var i = InProcessCli.Run("inspect", folder);
        Assert.True(i.Code == 0, i.ToString());
    }

    [Fact]
    public void ConfigJsonMaxLength_IsNotASearchDefault()
    {
        var folder = folders.DecoderWithConfig("oldconfig", ModelFolder.ConfigFile, "{\"max_length\": 3, \"do_sample\": false, \"top_k\": 50}");
        var r = InProcessCli.Run("generate", folder, "--prompt-ids", Ids(ConfigFolders.Prompt));
        Assert.True(r.Code == 0, r.ToString());
        Assert.Equal(32, r.Out.Trim().Split(',').Length);
    }
}
