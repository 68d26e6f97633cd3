using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.GenAi;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace InfLlmV2.Onnx.GenAi.Tests;

/// <summary>Rewrites genai folders (the code path of `infllmv2 rewrite`) and runs them through onnxruntime-genai.</summary>
public static class GenAiRunner
{
    /// <summary>
    /// Rewrites the decoder of genai folder <paramref name="input"/> with the default settings
    /// (dense below dense_len) into the genai folder <paramref name="output"/>; returns the number
    /// of attention sites rewritten (0: nothing written).
    /// </summary>
    public static int Rewrite(string input, string output)
    {
        var genai = GenAiFolder.Open(input);
        var model = OnnxModelFile.Load(genai.DecoderPath);
        var write = genai.Prepare(model, Path.Combine(output, genai.DecoderFileName), GenAiTestPaths.OpLibrary, force: false);
        int rewritten = AttentionRewriter.Rewrite(model, new RewriteOptions()).Count(s => s.Rewritten);
        if (rewritten > 0) write.Write(model);
        return rewritten;
    }

    /// <summary>Greedy generation through genai's Model and Generator: <paramref name="prompt"/> in, the whole sequence out.</summary>
    /// <param name="folder">The genai folder.</param>
    /// <param name="prompt">Prompt token ids.</param>
    /// <param name="maxLength">Prompt plus generated tokens.</param>
    /// <param name="cpuOnly">Clear the config's execution providers (a CUDA or WebGPU config run by a CPU app), as an app does with genai's Config.</param>
    public static int[] Greedy(string folder, int[] prompt, int maxLength, bool cpuOnly = false)
    {
        using var config = new Config(folder);
        if (cpuOnly) config.ClearProviders();
        using var model = new Model(config);
        using var parameters = new GeneratorParams(model);
        parameters.SetSearchOption("max_length", maxLength);
        parameters.SetSearchOption("do_sample", false);
        using var generator = new Generator(model, parameters);
        generator.AppendTokens(prompt);
        while (!generator.IsDone()) generator.GenerateNextToken();
        return generator.GetSequence(0).ToArray();
    }

    /// <summary>The message of the exception genai throws for <paramref name="folder"/>, or null when it generates.</summary>
    public static string? GreedyError(string folder, int[] prompt, int maxLength, bool cpuOnly = false)
    {
        try
        {
            Greedy(folder, prompt, maxLength, cpuOnly);
            return null;
        }
        catch (OnnxRuntimeGenAIException e)
        {
            return e.Message;
        }
    }
}
