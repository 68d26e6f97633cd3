using System.Text.Json.Nodes;
using InfLlmV2.Onnx.GraphTools.GenAi;
using InfLlmV2.Onnx.Models;

namespace InfLlmV2.Onnx.GenAi.Tests;

/// <summary>
/// Original and rewritten genai folders through onnxruntime-genai 0.18 (Model, Generator, token
/// ids in, greedy): the rewritten folder, which loads our op through genai_config.json's
/// custom_ops_library, generates the same tokens in dense mode (prompts far below dense_len).
/// </summary>
public class GenAiFolderGenerationTests
{
    private static readonly int[] Prompt = [1, 5, 6, 7];

    private static void AssertSameTokens(string original, string rewritten, int maxLength, bool cpuOnly)
    {
        var expected = GenAiRunner.Greedy(original, Prompt, maxLength, cpuOnly);
        var actual = GenAiRunner.Greedy(rewritten, Prompt, maxLength, cpuOnly);
        Assert.True(expected.Length > Prompt.Length, $"genai generated nothing on {original}");
        Assert.Equal(Prompt, expected[..Prompt.Length]);
        Assert.Equal(expected, actual);
    }

    /// <summary>
    /// The genai fixtures genai 0.18 (CPU package) can run. cpuOnly: the config asks for CUDA
    /// (qwen35: "Cuda interface not available: Failed to load library: .../libonnxruntime-genai-cuda.so")
    /// or WebGPU ("WebGPU execution provider is not supported in this build."), so the run clears the
    /// providers with genai's Config as a CPU app would; the folder's config is used otherwise as is.
    /// </summary>
    [Theory]
    [InlineData("genai_tiny_random_llama_fp32_gqa_modelbuilder", false, 2)]
    [InlineData("genai_tiny_qwen35_gqa_contrib_fp16", true, 2)]
    [InlineData("genai_webgpu_tiny_gqa_contrib_fp16", true, 1)]
    public void Fixture_rewritten_folder_generates_the_same_tokens(string fixture, bool cpuOnly, int sites)
    {
        var input = Path.Combine(GenAiTestPaths.Fixtures, fixture);
        using var dir = new TempDir();
        var output = dir["rewritten"];
        Assert.Equal(sites, GenAiRunner.Rewrite(input, output));
        AssertSameTokens(input, output, 16, cpuOnly);
    }

    /// <summary>As shipped, the CUDA and WebGPU fixtures do not load in genai's CPU package (why the theory above clears providers).</summary>
    [Theory]
    [InlineData("genai_tiny_qwen35_gqa_contrib_fp16", "Cuda interface not available")]
    [InlineData("genai_webgpu_tiny_gqa_contrib_fp16", "WebGPU execution provider is not supported in this build")]
    public void Fixture_with_a_gpu_provider_does_not_load_in_the_cpu_package(string fixture, string error)
    {
        var message = GenAiRunner.GreedyError(Path.Combine(GenAiTestPaths.Fixtures, fixture), Prompt, 8);
        Assert.NotNull(message);
        Assert.Contains(error, message);
    }

    /// <summary>
    /// The static-cache fixture comes from genai's static-scatter-kv-cache branch: genai 0.18 refuses
    /// its config, original and rewritten alike ("model:decoder:inputs: Unknown value
    /// "write_indices""), so no tokens can be compared. The folder is still rewritten (2 sites).
    /// </summary>
    [Fact]
    public void Static_scatter_fixture_cannot_load_in_genai_0_18()
    {
        var input = Path.Combine(GenAiTestPaths.Fixtures, "genai_static_scatter_mistral_attn_op24");
        using var dir = new TempDir();
        Assert.Equal(2, GenAiRunner.Rewrite(input, dir["rewritten"]));
        foreach (var folder in new[] { input, dir["rewritten"] })
            Assert.Contains("Unknown value \"write_indices\"", GenAiRunner.GreedyError(folder, Prompt, 8));
    }

    /// <summary>
    /// The MultiHeadAttention fixture (mask = causal AND attention_mask padding, genai builder): both
    /// layers rewritten (seqlens_k from ReduceSum(attention_mask)), identical greedy tokens in genai.
    /// </summary>
    [Fact]
    public void Mha_fixture_is_rewritten_and_generates_the_same_tokens()
    {
        var input = Path.Combine(GenAiTestPaths.Fixtures, "genai_tiny_random_llama_fp16_mha_modelbuilder");
        using var dir = new TempDir();
        Assert.Equal(2, GenAiRunner.Rewrite(input, dir["rewritten"]));
        AssertSameTokens(input, dir["rewritten"], 16, cpuOnly: false);
    }

    /// <summary>Our generated decoders in every attention form, written as genai folders by models/.</summary>
    [Theory]
    [InlineData(DecoderAttentionForm.GroupQueryAttention, false, true)]
    [InlineData(DecoderAttentionForm.GroupQueryAttention, true, false)]
    [InlineData(DecoderAttentionForm.OnnxAttention, false, false)]
    [InlineData(DecoderAttentionForm.Decomposed, false, true)]
    public void Generated_rewritten_folder_generates_the_same_tokens(DecoderAttentionForm form, bool packed, bool externalData)
    {
        using var dir = new TempDir();
        var config = new TinyDecoderConfig { Form = form, PackedQkv = packed, Seed = 11 + (int)form, MaxPositions = 512 };
        var input = GenAiFolderWriter.Write(config, dir["original"], externalData);
        Assert.Equal(config.Layers, GenAiRunner.Rewrite(input, dir["rewritten"]));
        AssertSameTokens(input, dir["rewritten"], 40, cpuOnly: false);
    }

    /// <summary>
    /// The config change is what makes the rewritten folder load: without custom_ops_library genai
    /// cannot resolve our op; with a library path outside the allowed folders genai (0.18: "custom_ops_library path ...", 0.20: "custom ops library path ...") refuses it.
    /// </summary>
    [Fact]
    public void Rewritten_folder_needs_the_config_to_name_the_copied_library()
    {
        using var dir = new TempDir();
        var input = GenAiFolderWriter.Write(new TinyDecoderConfig { Seed = 3, MaxPositions = 512 }, dir["original"]);
        var output = dir["rewritten"];
        Assert.Equal(2, GenAiRunner.Rewrite(input, output));
        var configPath = Path.Combine(output, GenAiFolder.ConfigFileName);
        var config = JsonNode.Parse(File.ReadAllText(configPath))!;
        var options = config["model"]!["decoder"]!["session_options"]!.AsObject();
        Assert.Equal(NativeOpLibrary.FileName, (string?)options[GenAiFolder.CustomOpsLibraryKey]);
        Assert.True(File.Exists(Path.Combine(output, NativeOpLibrary.FileName)));

        options.Remove(GenAiFolder.CustomOpsLibraryKey);
        File.WriteAllText(configPath, config.ToJsonString());
        Assert.Contains("com.infllmv2:SwitchableAttention(-1) is not a registered function/op", GenAiRunner.GreedyError(output, Prompt, 8));

        options[GenAiFolder.CustomOpsLibraryKey] = GenAiTestPaths.OpLibrary;  // absolute, outside the model folder
        File.WriteAllText(configPath, config.ToJsonString());
        Assert.Contains("path is not within an allowed directory", GenAiRunner.GreedyError(output, Prompt, 8));
    }
}
