using System.Text.Json;
using InfLlmV2.Onnx.Models;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace InfLlmV2.Onnx.GenAi.Tests;

/// <summary>
/// The tiny tokenizer's chat template rendered by onnxruntime-genai's own ApplyChatTemplate gives
/// the string our Jinja subset renders (the same literal is asserted in ChatTests of the other test
/// project): `generate --chat` on a genai folder prompts the model as genai would.
/// </summary>
public class GenAiChatTemplateTests
{
    [Fact]
    public void GenAiRendersTheTinyChatTemplate_AsOurRendererDoes()
    {
        using var dir = new TempDir();
        var folder = GenAiFolderWriter.Write(new TinyDecoderConfig { Seed = 3, Vocab = 512, MaxPositions = 512 }, dir["genai"]);
        TinyTokenizer.Write(folder, 512);
        TinyTokenizer.WriteConfig(folder);
        using var model = new Model(folder);
        using var tokenizer = new Tokenizer(model);
        var messages = JsonSerializer.Serialize(new[] { new { role = "user", content = " hi " } });
        var text = tokenizer.ApplyChatTemplate(TinyTokenizer.ChatTemplate, messages, null, true);
        Assert.Equal("<|im_start|>system\nYou are a tiny model.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", text);

        // A Llama-3-style template ({% set %}, loop.index0, filters binding tighter than +), as in ChatTests.
        const string llama3 =
            "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
            + "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
            + "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
        var two = JsonSerializer.Serialize(new[] { new { role = "system", content = "S" }, new { role = "user", content = " U\n" } });
        // One difference: with bos_token null in tokenizer_config.json genai renders "<s>", we render "".
        Assert.Equal("<s><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
            + "<|start_header_id|>assistant<|end_header_id|>\n\n", tokenizer.ApplyChatTemplate(llama3, two, null, true));
    }
}
