using System.Text.Json;
using System.Text.Json.Nodes;

namespace InfLlmV2.Onnx.Models;

/// <summary>
/// Writes a generated tiny decoder as an onnxruntime-genai model folder: the model and a
/// <c>genai_config.json</c> describing its inputs, outputs and cache names. No tokenizer: genai
/// creates a <c>Model</c> and runs a <c>Generator</c> on token ids without one (checked with
/// onnxruntime-genai 0.18); only its <c>Tokenizer</c> needs tokenizer files.
/// </summary>
public static class GenAiFolderWriter
{
    /// <summary>Token id genai treats as end of sequence in the written config.</summary>
    public const int EosTokenId = 2;

    /// <summary>
    /// Generates the decoder of <paramref name="c"/> into <paramref name="folder"/> (created when
    /// missing) as <c>model.onnx</c> (with <c>model.onnx.data</c> when <paramref name="externalData"/>)
    /// and writes its <c>genai_config.json</c>; returns the folder's full path.
    /// </summary>
    public static string Write(TinyDecoderConfig c, string folder, bool externalData = false)
    {
        var full = Path.GetFullPath(folder);
        Directory.CreateDirectory(full);
        TinyDecoderGenerator.Save(TinyDecoderGenerator.Generate(c), Path.Combine(full, "model.onnx"), externalData);
        File.WriteAllText(Path.Combine(full, "genai_config.json"), Config(c, "model.onnx").ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        return full;
    }

    /// <summary>The <c>genai_config.json</c> of <paramref name="c"/>'s decoder stored as <paramref name="fileName"/>.</summary>
    public static JsonObject Config(TinyDecoderConfig c, string fileName)
    {
        var inputs = new JsonObject { ["input_ids"] = "input_ids", ["attention_mask"] = "attention_mask" };
        if (c.Form != DecoderAttentionForm.GroupQueryAttention) inputs["position_ids"] = "position_ids";  // rotary from plain ops
        inputs["past_key_names"] = c.PastName(0, "key").Replace(".0.", ".%d.", StringComparison.Ordinal);
        inputs["past_value_names"] = c.PastName(0, "value").Replace(".0.", ".%d.", StringComparison.Ordinal);
        return new JsonObject
        {
            ["model"] = new JsonObject
            {
                ["type"] = "llama",
                ["bos_token_id"] = 1,
                ["eos_token_id"] = EosTokenId,
                ["pad_token_id"] = 0,
                ["vocab_size"] = c.Vocab,
                ["context_length"] = c.MaxPositions,
                ["decoder"] = new JsonObject
                {
                    ["session_options"] = new JsonObject { ["log_id"] = "onnxruntime-genai", ["provider_options"] = new JsonArray() },
                    ["filename"] = fileName,
                    ["head_size"] = c.HeadSize,
                    ["hidden_size"] = c.Hidden,
                    ["num_attention_heads"] = c.NumHeads,
                    ["num_key_value_heads"] = c.KvNumHeads,
                    ["num_hidden_layers"] = c.Layers,
                    ["inputs"] = inputs,
                    ["outputs"] = new JsonObject
                    {
                        ["logits"] = "logits",
                        ["present_key_names"] = c.PresentName(0, "key").Replace(".0.", ".%d.", StringComparison.Ordinal),
                        ["present_value_names"] = c.PresentName(0, "value").Replace(".0.", ".%d.", StringComparison.Ordinal),
                    },
                },
            },
            ["search"] = new JsonObject { ["do_sample"] = false, ["max_length"] = Math.Min(c.MaxPositions, 256) },
        };
    }
}
