using System.Diagnostics;
using System.Text.Json.Nodes;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.Text;
using Xunit.Abstractions;

namespace InfLlmV2.Onnx.Tests.Reliability;

/// <summary>
/// Tokenizers and prompt files: hostile tokenizer.json (hangs, memory, malformed fields),
/// tokenizer files and prompt files that are FIFOs, devices, huge or links outside. Each case:
/// `generate --prompt ...` exits 2 with one line naming the file (and the field), in bounded time.
/// </summary>
[Collection(ReliabilityCollection.Name)]
public class HostileTokenizerTests(ITestOutputHelper log)
{
    private static readonly Lazy<byte[]> ModelBytes = new(() =>
    {
        using var dir = new TempDir();
        TinyDecoderGenerator.Save(TinyDecoderGenerator.Generate(TextModels.Config), dir["m.onnx"], externalData: false);
        return File.ReadAllBytes(dir["m.onnx"]);
    });

    private static JsonObject Tokenizer() => JsonNode.Parse(TinyTokenizer.Json(TextModels.Config.Vocab))!.AsObject();

    private static Action<string> Json(Action<JsonObject> mutate) => folder =>
    {
        var t = Tokenizer();
        mutate(t);
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), t.ToJsonString());
    };

    private static Action<string> Text(string text) => folder => File.WriteAllText(Path.Combine(folder, "tokenizer.json"), text);

    private static JsonObject Split(string regex) => new()
    {
        ["type"] = "Sequence",
        ["pretokenizers"] = new JsonArray(
            new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = regex }, ["behavior"] = "Isolated" },
            new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = false }),
    };

    /// <summary>(name, what the error must name, how to plant the tokenizer in the folder, the prompt).</summary>
    public static IEnumerable<(string Name, string Named, Action<string> Plant, string Prompt)> Cases()
    {
        const string hello = "hello world";
        var catastrophic = new string('a', 40_000) + "!";
        // Hangs and memory
        yield return ("added token with empty content", "added_tokens[1].content", Json(t => t["added_tokens"]!.AsArray().Add(new JsonObject { ["id"] = 5, ["content"] = "", ["special"] = true })), hello);
        yield return ("non-special added token with empty content", "added_tokens[1].content", Json(t => t["added_tokens"]!.AsArray().Add(new JsonObject { ["id"] = 5, ["content"] = "", ["special"] = false })), hello);
        yield return ("Split with an empty regex", "pattern.Regex", Json(t => t["pre_tokenizer"] = Split("")), hello);
        yield return ("Split with an empty literal", "pattern.String", Json(t => t["pre_tokenizer"] = new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["String"] = "" } }), hello);
        yield return ("catastrophic backtracking regex", "pattern.Regex", Json(t => t["pre_tokenizer"] = Split("(a+)+$")), catastrophic);
        yield return ("catastrophic nested alternation", "pattern.Regex", Json(t => t["pre_tokenizer"] = Split("(a|aa)+$")), catastrophic);
        yield return ("a 100 KB regex", "pattern.Regex", Json(t => t["pre_tokenizer"] = Split(new string('a', 100_000))), hello);
        // Malformed fields
        yield return ("bad regex", "pattern.Regex", Json(t => t["pre_tokenizer"] = Split("(a")), hello);
        yield return ("no model.vocab", "model.vocab", Json(t => t["model"]!.AsObject().Remove("vocab")), hello);
        yield return ("vocab an array", "model.vocab", Json(t => t["model"]!["vocab"] = new JsonArray(1, 2)), hello);
        yield return ("vocab id 2^40", "model.vocab", Json(t => t["model"]!["vocab"]!["zz"] = 1L << 40), hello);
        yield return ("vocab id negative", "model.vocab", Json(t => t["model"]!["vocab"]!["zz"] = -3), hello);
        yield return ("vocab id a string", "model.vocab", Json(t => t["model"]!["vocab"]!["zz"] = "5"), hello);
        yield return ("vocab id a fraction", "model.vocab", Json(t => t["model"]!["vocab"]!["zz"] = 1.5), hello);
        yield return ("vocab empty token", "model.vocab", Json(t => t["model"]!["vocab"]![""] = 7), hello);
        yield return ("merges an object", "model.merges", Json(t => t["model"]!["merges"] = new JsonObject()), hello);
        yield return ("merge of three", "model.merges", Json(t => t["model"]!["merges"]!.AsArray().Add(new JsonArray("a", "b", "c"))), hello);
        yield return ("merge a number", "model.merges", Json(t => t["model"]!["merges"]!.AsArray().Add(5)), hello);
        yield return ("merge string without space", "model.merges", Json(t => t["model"]!["merges"] = new JsonArray("ab")), hello);
        yield return ("added token without content", "added_tokens[1].content", Json(t => t["added_tokens"]!.AsArray().Add(new JsonObject { ["id"] = 5, ["special"] = true })), hello);
        yield return ("added token without id", "added_tokens[1].id", Json(t => t["added_tokens"]!.AsArray().Add(new JsonObject { ["content"] = "x", ["special"] = true })), hello);
        yield return ("added token id 2^40", "added_tokens[1].id", Json(t => t["added_tokens"]!.AsArray().Add(new JsonObject { ["id"] = 1L << 40, ["content"] = "x", ["special"] = true })), hello);
        yield return ("added token special a string", "added_tokens[1].special", Json(t => t["added_tokens"]!.AsArray().Add(new JsonObject { ["id"] = 3, ["content"] = "x", ["special"] = "yes" })), hello);
        yield return ("added_tokens an object", "added_tokens", Json(t => t["added_tokens"] = new JsonObject()), hello);
        yield return ("template special token without id", "SpecialToken.id", Json(t => t["post_processor"] = new JsonObject
        {
            ["type"] = "TemplateProcessing",
            ["single"] = new JsonArray(new JsonObject { ["SpecialToken"] = new JsonObject { ["type_id"] = 0 } }, new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A" } }),
        }), hello);
        yield return ("template single not an array", "single", Json(t => t["post_processor"] = new JsonObject { ["type"] = "TemplateProcessing", ["single"] = 3 }), hello);
        yield return ("unk_token a number", "model.unk_token", Json(t => t["model"]!["unk_token"] = 5), hello);
        yield return ("model.type a number", "model.type", Json(t => t["model"]!["type"] = 5), hello);
        yield return ("duplicate keys", "tokenizer.json", Text(Tokenizer().ToJsonString().Replace("\"model\":{", "\"model\":{\"type\":\"BPE\",", StringComparison.Ordinal)), hello);
        yield return ("root an array", "tokenizer.json", Text("[1, 2]"), hello);
        yield return ("nested 10000 deep", "tokenizer.json", Text(new string('[', 10_000) + new string(']', 10_000)), hello);
        yield return ("not UTF-8", "tokenizer.json", folder => File.WriteAllBytes(Path.Combine(folder, "tokenizer.json"), [0x7B, 0xFF, 0x7D]), hello);
        yield return ("truncated", "tokenizer.json", Text(Tokenizer().ToJsonString()[..500]), hello);
        // Not regular files, huge files, links outside
        yield return ("tokenizer.json a FIFO", "tokenizer.json", folder => HostileModels.Mkfifo(Path.Combine(folder, "tokenizer.json")), hello);
        yield return ("tokenizer.json a link to /dev/zero", "tokenizer.json", folder => File.CreateSymbolicLink(Path.Combine(folder, "tokenizer.json"), "/dev/zero"), hello);
        yield return ("tokenizer.json a link to /dev/urandom", "tokenizer.json", folder => File.CreateSymbolicLink(Path.Combine(folder, "tokenizer.json"), "/dev/urandom"), hello);
        yield return ("tokenizer.json a folder", "tokenizer.json", folder => Directory.CreateDirectory(Path.Combine(folder, "tokenizer.json")), hello);
        yield return ("tokenizer.json a dangling link", "tokenizer.json", folder => File.CreateSymbolicLink(Path.Combine(folder, "tokenizer.json"), "/nonexistent/t.json"), hello);
        yield return ("tokenizer.json 1 GB sparse", "tokenizer.json", folder =>
        {
            using var s = new FileStream(Path.Combine(folder, "tokenizer.json"), FileMode.Create);
            s.SetLength(1L << 30);
        }, hello);
        yield return ("tokenizer.json a link outside the folder", "tokenizer.json", folder =>
        {
            var outside = folder + ".outside.json";
            File.WriteAllText(outside, Tokenizer().ToJsonString());
            File.CreateSymbolicLink(Path.Combine(folder, "tokenizer.json"), outside);
        }, hello);
        yield return ("tokenizer.model a FIFO", "tokenizer.model", folder => HostileModels.Mkfifo(Path.Combine(folder, "tokenizer.model")), hello);
        yield return ("tokenizer.model random bytes", "tokenizer.model", folder => File.WriteAllBytes(Path.Combine(folder, "tokenizer.model"), HostileModels.Random(3, 4096)), hello);
        yield return ("tokenizer.model a link to /dev/zero", "tokenizer.model", folder => File.CreateSymbolicLink(Path.Combine(folder, "tokenizer.model"), "/dev/zero"), hello);
    }

    [Fact]
    public void HostileTokenizers_ExitTwoWithOneLineNamingFileAndField_InBoundedTime()
    {
        var failures = new List<string>();
        int n = 0;
        double slowest = 0;
        foreach (var (name, named, plant, prompt) in Cases())
        {
            using var dir = new TempDir();
            var model = dir["m.onnx"];
            File.WriteAllBytes(model, ModelBytes.Value);
            plant(dir.Path);
            File.WriteAllText(dir["prompt.txt"], prompt);
            n++;
            var sw = Stopwatch.StartNew();
            var r = InProcessCli.Run("generate", model, "--prompt-file", dir["prompt.txt"], "--max-new-tokens", "1");
            slowest = Math.Max(slowest, sw.Elapsed.TotalSeconds);
            var line = r.Err.Trim();
            if (r.Hung || r.Code != 2 || !r.OneErrorLine) failures.Add($"{name}: {r}");
            else if (!line.Contains(named, StringComparison.Ordinal)) failures.Add($"{name}: the error does not name '{named}': {line}");
            else if (!line.Contains(dir.Path, StringComparison.Ordinal)) failures.Add($"{name}: the error names no file: {line}");
            else if (sw.Elapsed.TotalSeconds > 30) failures.Add($"{name}: took {sw.Elapsed.TotalSeconds:F1} s");
        }
        log.WriteLine($"hostile tokenizers: {n} folders, {failures.Count} failures, slowest {slowest:F1} s");
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Fact]
    public void Tokenizer_Control_ValidTokenizerGeneratesText()
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir["m.onnx"], ModelBytes.Value);
        Json(_ => { })(dir.Path);
        var r = InProcessCli.Run("generate", dir["m.onnx"], "--prompt", "hello world <|endoftext|>", "--max-new-tokens", "2");
        Assert.True(r.Code == 0, r.ToString());
        // Our pre-tokenizer splits special tokens out first: the end-of-text token keeps its id.
        var ids = InfLlmV2.Onnx.Text.ModelTokenizer.ForModel(dir["m.onnx"]).Encode("hi<|endoftext|>there");
        Assert.Contains(TextModels.Config.Vocab - 1, ids);
        Assert.Equal("hi<|endoftext|>there", InfLlmV2.Onnx.Text.ModelTokenizer.ForModel(dir["m.onnx"]).Decode(ids));
        // A Split regex that can match nothing (x*) still works: its empty matches are skipped, not spun on.
        Json(t => t["pre_tokenizer"] = Split("\\w+|x*"))(dir.Path);
        Assert.Equal(0, InProcessCli.Run("generate", dir["m.onnx"], "--prompt", "hello world", "--max-new-tokens", "1").Code);
    }

    public static TheoryData<string> PromptFiles() => ["/dev/zero", "/dev/urandom", "/dev/null", "fifo", "1 GB sparse", "17 MiB", "not UTF-8", "folder", "dangling link", "link to /dev/zero", "socket"];

    [Theory]
    [MemberData(nameof(PromptFiles))]
    public void HostilePromptFiles_AreRefusedBeforeReading(string kind)
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir["m.onnx"], ModelBytes.Value);
        Json(_ => { })(dir.Path);
        var prompt = dir["prompt"];
        switch (kind)
        {
            case "fifo": HostileModels.Mkfifo(prompt); break;
            case "1 GB sparse":
                using (var s = new FileStream(prompt, FileMode.Create)) s.SetLength(1L << 30);
                break;
            case "17 MiB": File.WriteAllText(prompt, new string('a', 17 << 20)); break;
            case "not UTF-8": File.WriteAllBytes(prompt, [0x68, 0x69, 0xFF, 0x20]); break;
            case "folder": Directory.CreateDirectory(prompt); break;
            case "dangling link": File.CreateSymbolicLink(prompt, "/nonexistent/prompt"); break;
            case "link to /dev/zero": File.CreateSymbolicLink(prompt, "/dev/zero"); break;
            case "socket": HostileFolderTests.Socket(prompt); break;
            default: prompt = kind; break;
        }
        var sw = Stopwatch.StartNew();
        foreach (var args in new[]
                 {
                     new[] { "generate", dir["m.onnx"], "--prompt-file", prompt, "--max-new-tokens", "1" },
                     ["compare", dir["m.onnx"], dir["m.onnx"], "--prompt-file", prompt, "--decode-steps", "0"],
                 })
        {
            var r = InProcessCli.Run(args);
            Assert.True(r.Code == 2 && r.OneErrorLine, $"{kind} ({args[0]}): {r}");
            Assert.Contains(prompt, r.Err);
        }
        Assert.True(sw.Elapsed.TotalSeconds < 20, $"{kind}: {sw.Elapsed.TotalSeconds:F1} s");
    }

    [Fact]
    public void Limits_AreTheDocumentedOnes()
    {
        Assert.Equal(128L << 20, InfLlmV2.Onnx.Text.ModelTokenizer.MaxJsonBytes);
        Assert.Equal(64L << 20, InfLlmV2.Onnx.Text.ModelTokenizer.MaxSentencePieceBytes);
        Assert.Equal(16L << 20, InfLlmV2.Onnx.GraphTools.GenAi.GenAiFolder.MaxConfigBytes);
        var doc = File.ReadAllText(Path.Combine(ModelRunner.RepoRoot, "docs", "reliability.md"));
        foreach (var limit in new[] { "16 MiB", "128 MiB", "64 MiB", "2^24" }) Assert.Contains(limit, doc);
    }
}
