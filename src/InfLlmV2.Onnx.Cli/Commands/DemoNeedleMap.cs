using InfLlmV2.Onnx.Cli.Pictures;
using InfLlmV2.Onnx.OpContract;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Cli.Commands;

/// <summary>
/// The demo's needle case as a selection map: the one-node SwitchableAttention model runs the last
/// <see cref="Rows"/> queries of its context as one sparse chunk (each query aligned with the needle),
/// and the map shows which key blocks each query attended and why, the needle's block outlined.
/// </summary>
internal static class DemoNeedleMap
{
    /// <summary>Query rows drawn (the last ones of the context).</summary>
    public const int Rows = 1024;

    /// <summary>The map's file name in the demo folder.</summary>
    public const string FileName = "needle-selection.png";

    /// <summary>Runs the chunk on <paramref name="session"/> (inputs as in the demo's decode step) and writes the map to <paramref name="path"/>.</summary>
    public static void Write(InferenceSession session, string path, float[] pastKey, float[] pastValue, float[] direction,
        int heads, int headSize, int context, int needleBlock, SparseAttentionSettings settings)
    {
        // One kv head: the keys of token t are pastKey[t * D .. (t + 1) * D); the context's last token has none there (zero).
        int past = context - Rows;
        var rng = new Random(4321);
        var query = new float[Rows * heads * headSize];
        for (int s = 0; s < Rows; s++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < headSize; i++) query[(s * heads + h) * headSize + i] = direction[i] + 0.1f * (float)(rng.NextDouble() * 2 - 1);
        var key = new float[Rows * headSize];
        var value = new float[Rows * headSize];
        int stored = pastKey.Length / headSize;
        for (int s = 0; s < Rows && past + s < stored; s++)
        {
            Array.Copy(pastKey, (past + s) * headSize, key, s * headSize, headSize);
            Array.Copy(pastValue, (past + s) * headSize, value, s * headSize, headSize);
        }
        using var q = OrtValue.CreateTensorValueFromMemory(query, [1, Rows, heads * headSize]);
        using var k = OrtValue.CreateTensorValueFromMemory(key, [1, Rows, headSize]);
        using var v = OrtValue.CreateTensorValueFromMemory(value, [1, Rows, headSize]);
        using var pk = OrtValue.CreateTensorValueFromMemory(pastKey[..(past * headSize)], [1, 1, past, headSize]);
        using var pv = OrtValue.CreateTensorValueFromMemory(pastValue[..(past * headSize)], [1, 1, past, headSize]);
        using var seqlens = OrtValue.CreateTensorValueFromMemory(new[] { context - 1 }, [1]);
        using var total = OrtValue.CreateTensorValueFromMemory(new[] { context }, []);
        using var mode = OrtValue.CreateTensorValueFromMemory(new[] { (int)AttentionMode.Sparse }, []);
        using var runOptions = new RunOptions();
        using var results = session.Run(runOptions, ["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length", "attention_mode"],
            [q, k, v, pk, pv, seqlens, total, mode], session.OutputNames);
        var selected = results[3].GetTensorDataAsSpan<int>().ToArray();
        int budget = selected.Length / Rows;
        var rows = Enumerable.Range(0, Rows).Select(s => new SelectionRow(past + s, false, selected.AsSpan(s * budget, budget).ToArray())).ToList();
        var geometry = new SelectionGeometry((int)settings.BlockSize, (int)settings.InitBlocks, (int)(settings.SparseWindowTokens / settings.BlockSize));
        SelectionMap.Write(path, [new SelectionPanel(0, rows)], geometry,
            $"demo needle case: the last {Rows} queries of a {context / 1024}k context, kv head 0 ({heads} query heads share it)",
            needleBlock, $"needle (block {needleBlock})");
    }
}
