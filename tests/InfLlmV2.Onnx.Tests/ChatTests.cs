using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.Session;
using InfLlmV2.Onnx.Tests.Reliability;
using InfLlmV2.Onnx.Text;
using Microsoft.Extensions.AI;

namespace InfLlmV2.Onnx.Tests;

/// <summary>Folders of the tiny decoder (vocab 512): a rewritten one with the tokenizer and its chat template, and an original one without a template.</summary>
public sealed class ChatFolders : IDisposable
{
    private readonly TempDir _dir = new();

    public ChatFolders()
    {
        var model = TinyDecoderGenerator.Generate(TextModels.Config);
        Rewritten = _dir["rewritten"];
        Directory.CreateDirectory(Rewritten);
        var rw = model.Clone();
        AttentionRewriter.Rewrite(rw, new RewriteOptions { AttentionModeInput = true });
        OnnxModelFile.Save(rw, Path.Combine(Rewritten, "model.infllmv2.onnx"));
        TinyTokenizer.Write(Rewritten, TextModels.Config.Vocab);
        TinyTokenizer.WriteConfig(Rewritten);
        NoTemplate = _dir["plain"];
        Directory.CreateDirectory(NoTemplate);
        TinyDecoderGenerator.Save(model, Path.Combine(NoTemplate, "model.onnx"), externalData: false);
        TinyTokenizer.Write(NoTemplate, TextModels.Config.Vocab);
        File.WriteAllText(Path.Combine(NoTemplate, ModelFolder.TokenizerConfigFile), "{\"eos_token\": \"<|endoftext|>\"}");
    }

    public string Rewritten { get; }
    public string NoTemplate { get; }

    public void Dispose() => _dir.Dispose();
}

/// <summary>The chat template renderer, streamed text, cancellation, the IChatClient and generate --chat.</summary>
[Collection(ReliabilityCollection.Name)]
public class ChatTests(ChatFolders folders) : IClassFixture<ChatFolders>
{
    private const string Llama3 =
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
        + "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
        + "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

    [Fact]
    public void Template_TinyChatMl_RendersExactly()
    {
        var t = ChatTemplate.Parse(TinyTokenizer.ChatTemplate);
        Assert.Equal("<|im_start|>system\nYou are a tiny model.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
            t.Render([new("user", " hi ")]));
        Assert.Equal("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n",
            t.Render([new("system", "Be brief."), new("user", "hi")], addGenerationPrompt: false));
    }

    [Fact]
    public void Template_Llama3Style_SetAndLoopIndexAndBos()
    {
        var t = ChatTemplate.Parse(Llama3, bosToken: "<|begin_of_text|>");
        Assert.Equal("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
            + "<|start_header_id|>assistant<|end_header_id|>\n\n", t.Render([new("system", "S"), new("user", " U\n")]));
    }

    [Fact]
    public void Template_ElifAndRaise()
    {
        var t = ChatTemplate.Parse("{% for m in messages %}{% if m.role == 'user' %}U:{{ m.content }}{% elif m.role == 'assistant' %}A:{{ m.content }}"
            + "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% if not loop.last %}|{% endif %}{% endfor %}");
        Assert.Equal("U:a|A:b", t.Render([new("user", "a"), new("assistant", "b")]));
        var e = Assert.Throws<InvalidDataException>(() => t.Render([new("system", "s")]));
        Assert.Contains("Only user and assistant roles are supported!", e.Message);
    }

    [Theory]
    [InlineData("{% macro m() %}x{% endmacro %}", "macro")]
    [InlineData("{% for m in messages[1:] %}{% endfor %}", "slicing")]
    [InlineData("{{ messages | map(attribute='content') }}", "filter 'map'")]
    [InlineData("{% set ns = namespace(x=1) %}", "keyword arguments")]
    public void Template_WhatItCannotRender_IsRefusedByName(string template, string named)
    {
        var e = Assert.Throws<NotSupportedException>(() => ChatTemplate.Parse(template).Render([new("user", "x")]));
        Assert.Contains(named, e.Message);
    }

    public static TheoryData<string> HostileTemplates => new()
    {
        "{{ " + new string('(', 100_000) + "1" + new string(')', 100_000) + " }}",
        "{{ " + string.Concat(Enumerable.Repeat("not ", 100_000)) + "1 }}",
        "{{ " + new string('-', 100_000) + "1 }}",
        string.Concat(Enumerable.Repeat("{% if true %}", 10_000)) + string.Concat(Enumerable.Repeat("{% endif %}", 10_000)),
        // Doubling within one scope (a loop's set stays in its iteration, as in Jinja).
        "{% set s = 'ab' %}" + string.Concat(Enumerable.Repeat("{% set s = s + s %}", 60)) + "{{ s | length }}",
        "{% set s = 'ab' %}" + string.Concat(Enumerable.Repeat("{% set s = s ~ s %}", 60)) + "{{ s | length }}",
        "{% set l = [1] %}" + string.Concat(Enumerable.Repeat("{% set l = l + l %}", 60)) + "{{ l | length }}",
        // Many steps: 8^8 iterations.
        string.Concat(Enumerable.Repeat("{% for a in messages %}", 8)) + "x" + string.Concat(Enumerable.Repeat("{% endfor %}", 8)),
    };

    [Theory]
    [MemberData(nameof(HostileTemplates))]
    public void Template_Hostile_IsRefusedNotCrashed(string template)
    {
        var messages = Enumerable.Range(0, 8).Select(i => new ChatTurn("user", $"m{i}")).ToList();
        var e = Assert.ThrowsAny<Exception>(() => ChatTemplate.Parse(template).Render(messages));
        Assert.True(e is InvalidDataException, e.ToString());
    }

    [Fact]
    public void Streaming_NeverSplitsAMultiByteCharacter()
    {
        var tokenizer = ModelTokenizer.ForModel(folders.Rewritten);
        const string text = "héllo wörld — ✓ 日本語 🙂 end";
        var decoder = new StreamingDecoder(tokenizer);
        var pieces = tokenizer.Encode(text).Select(decoder.Add).ToList();
        pieces.Add(decoder.Flush());
        Assert.Equal(text, string.Concat(pieces));
        Assert.DoesNotContain(pieces, p => p.Contains('\uFFFD'));
        Assert.Contains(pieces, p => p.Length == 0);  // some tokens were held back: a character spans several
    }

    [Fact]
    public async Task GenerateAsync_StreamsText_AndCancellationStopsWithinOneStep()
    {
        using var generator = TextGenerator.Open(folders.Rewritten);
        var prompt = generator.Encode("Hello, world!");
        var options = generator.DefaultOptions(prompt.Length) with { MaxNewTokens = 12, StopTokens = [] };
        var stats = new GenerationStatistics();
        var text = string.Concat(await generator.GenerateAsync(prompt, options, stats).ToListAsync());
        Assert.Equal(12, stats.OutputTokens);
        Assert.Equal(FinishReason.Length, stats.FinishReason);
        Assert.False(string.IsNullOrEmpty(text));

        using var cts = new CancellationTokenSource();
        var cancelled = new GenerationStatistics();
        int seen = -1;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var _ in generator.GenerateAsync(prompt, options with { MaxNewTokens = 200 }, cancelled, cts.Token))
            {
                seen = cancelled.OutputTokens;
                cts.Cancel();
            }
        });
        Assert.True(seen > 0);
        Assert.Equal(seen, cancelled.OutputTokens);  // no token after the cancellation
    }

    [Fact]
    public async Task ChatClient_ReportsUsageAndLength_StreamsTheSameText()
    {
        using IChatClient client = InfLlmV2ChatClient.Open(folders.Rewritten);
        var messages = new[] { new ChatMessage(ChatRole.System, "Be brief."), new ChatMessage(ChatRole.User, "Hello, world!") };
        var response = await client.GetResponseAsync(messages, new ChatOptions { MaxOutputTokens = 10 });
        Assert.Equal(ChatFinishReason.Length, response.FinishReason);
        Assert.Equal(10, response.Usage!.OutputTokenCount);
        var prompt = ((InfLlmV2ChatClient)client).PromptIds(messages);
        Assert.Equal(prompt.Length, response.Usage.InputTokenCount);
        var streamed = new List<string>();
        await foreach (var update in client.GetStreamingResponseAsync(messages, new ChatOptions { MaxOutputTokens = 10 }))
            streamed.Add(update.Text);
        Assert.True(streamed.Count > 2);
        Assert.Equal(response.Text, string.Concat(streamed));
    }

    [Fact]
    public async Task ChatClient_StopSequence_EndsWithStop_AndSeedRepeats()
    {
        using var client = InfLlmV2ChatClient.Open(folders.Rewritten);
        var messages = new[] { new ChatMessage(ChatRole.User, "The model reads a long document.") };
        var full = (await client.GetResponseAsync(messages, new ChatOptions { MaxOutputTokens = 16 })).Text;
        Assert.True(full.Length >= 8, full);
        var stop = full.Substring(4, 3);
        var cut = await client.GetResponseAsync(messages, new ChatOptions { MaxOutputTokens = 16, StopSequences = [stop] });
        Assert.Equal(full[..full.IndexOf(stop, StringComparison.Ordinal)], cut.Text);
        Assert.Equal(ChatFinishReason.Stop, cut.FinishReason);

        var sampled = new ChatOptions { MaxOutputTokens = 8, Temperature = 1.5f, TopK = 50, TopP = 0.95f, Seed = 7 };
        var a = await client.GetResponseAsync(messages, sampled);
        var b = await client.GetResponseAsync(messages, sampled);
        Assert.Equal(a.Text, b.Text);
    }

    [Fact]
    public async Task ChatClient_WithoutTemplate_IsRefusedClearly()
    {
        using var client = InfLlmV2ChatClient.Open(folders.NoTemplate);
        Assert.Null(client.Template);
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => client.GetResponseAsync([new ChatMessage(ChatRole.User, "hi")]));
        Assert.Contains("no chat template", e.Message);
    }

    [Fact]
    public void GenerateChat_AppliesTheTemplate_AndRefusesWithoutOne()
    {
        var r = InProcessCli.Run("generate", folders.Rewritten, "--chat", "Hello!", "--system", "Be brief.", "--max-new-tokens", "6");
        Assert.True(r.Code == 0, r.ToString());
        Assert.Contains("stopped: length", r.Err);
        var none = InProcessCli.Run("generate", folders.NoTemplate, "--chat", "Hello!");
        Assert.Equal(2, none.Code);
        Assert.True(none.OneErrorLine, none.ToString());
        Assert.Contains("no chat template", none.Err);
        var system = InProcessCli.Run("generate", folders.NoTemplate, "--prompt", "x", "--system", "s");
        Assert.Equal(2, system.Code);
        Assert.Contains("--system needs --chat", system.Err);
    }
}
