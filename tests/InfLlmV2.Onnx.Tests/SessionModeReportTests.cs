using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.OpContract;
using InfLlmV2.Onnx.Session;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// A rewritten decoder (dense_len 256, budget 3 blocks, auto mode) whose SwitchableAttention nodes
/// also expose their <c>selected_blocks</c> output as graph outputs <c>selected_blocks.{layer}</c>,
/// so that a test can read what the op did.
/// </summary>
public sealed class ReportingDecoder : IDisposable
{
    private readonly TempDir _dir = new();

    public ReportingDecoder()
    {
        var proto = TinyDecoderGenerator.Generate(DecoderModels.Config);
        AttentionRewriter.Rewrite(proto, new RewriteOptions { Sparse = Settings });
        var g = proto.Graph;
        foreach (var (node, layer) in g.Node.Where(SwitchableAttentionOp.Is).Select((n, l) => (n, l)))
        {
            while (node.Output.Count < SwitchableAttentionOp.Outputs.SelectedBlocks) node.Output.Add("");
            node.Output.Add($"selected_blocks.{layer}");
            g.Output.Add(GraphBuilder.Tensor($"selected_blocks.{layer}", TensorProto.Types.DataType.Int32, null, null, null, null));
        }
        OnnxModelFile.Save(proto, _dir["reporting.onnx"]);
        Model = DecoderModel.Open(_dir["reporting.onnx"]);
    }

    public static SparseAttentionSettings Settings { get; } = new() { DenseLen = 256, TopKBlocks = 2, SparseWindowTokens = 64 };

    public DecoderModel Model { get; }

    /// <summary>
    /// What the op did in each layer for a first (ragged) prompt step of <paramref name="prompts"/>,
    /// run directly on the model's ORT session with the inputs a decoder session feeds.
    /// </summary>
    public AttentionMode[][] OpModesOfPrompt(int[][] prompts)
    {
        var m = Model;
        int batch = prompts.Length, seq = prompts.Max(p => p.Length);
        var ids = new long[batch * seq];
        var mask = new long[batch * seq];
        var positions = new long[batch * seq];
        for (int b = 0; b < batch; b++)
            for (int s = 0; s < prompts[b].Length; s++)
            {
                ids[b * seq + s] = prompts[b][s];
                mask[b * seq + s] = 1;
                positions[b * seq + s] = s;
            }
        OrtValue Ints(TensorElementType type, long[] data) => type == TensorElementType.Int32
            ? OrtValue.CreateTensorValueFromMemory(data.Select(x => (int)x).ToArray(), [batch, seq])
            : OrtValue.CreateTensorValueFromMemory(data, [batch, seq]);
        var inputs = new Dictionary<string, OrtValue>
        {
            [m.Names.InputIds] = Ints(m.InputIdsType, ids),
            [m.Names.AttentionMask] = Ints(m.Session.InputMetadata[m.Names.AttentionMask].ElementDataType, mask),
        };
        if (m.HasPositionIds) inputs[m.Names.PositionIds] = Ints(m.Session.InputMetadata[m.Names.PositionIds].ElementDataType, positions);
        for (int l = 0; l < m.Layers; l++)
            foreach (var past in new[] { m.Names.PastKey, m.Names.PastValue })
                inputs[string.Format(past, l)] = OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [batch, m.KvNumHeads, 0, m.HeadSize]);
        try
        {
            var outputs = Enumerable.Range(0, m.Layers).Select(l => $"selected_blocks.{l}").ToList();
            using var runOptions = new RunOptions();
            using var results = m.Session.Run(runOptions, inputs.Keys.ToList(), inputs.Values.ToList(), outputs);
            return results.Select(r => OpReport.ModeOf(r.GetTensorDataAsSpan<int>().ToArray().Select(x => (float)x).ToArray(),
                m.KvNumHeads, seq, Settings.BlockBudget, prompts.Select(p => p.Length).ToArray())).ToArray();
        }
        finally
        {
            foreach (var v in inputs.Values) v.Dispose();
        }
    }

    public void Dispose()
    {
        Model.Dispose();
        _dir.Dispose();
    }
}

/// <summary><see cref="DecoderSession.LastModes"/> is what the op reports it did (its selected_blocks), not only C#'s prediction.</summary>
public class SessionModeReportTests(ReportingDecoder decoder) : IClassFixture<ReportingDecoder>
{
    [Theory]
    [InlineData(255, AttentionMode.Dense)]   // total = dense_len − 1
    [InlineData(256, AttentionMode.Sparse)]  // total = dense_len
    public void LastMode_IsWhatTheOpDid_AtDenseLen(int total, AttentionMode expected)
    {
        var prompt = DecoderModels.Prompt(total, total);
        using var session = new DecoderSession(decoder.Model, new() { Capacity = 512 });
        session.AppendTokens(prompt);
        Assert.Equal(expected, session.LastModes[0]);
        var op = decoder.OpModesOfPrompt([prompt]);
        Assert.Equal(DecoderModels.Config.Layers, op.Length);
        Assert.All(op, layer => Assert.Equal(expected, layer[0]));
    }

    [Fact]
    public void LastModes_AreWhatTheOpDid_PerEntryOfARaggedBatch()
    {
        int[][] prompts = [DecoderModels.Prompt(255, 1), DecoderModels.Prompt(256, 2)];
        using var session = new DecoderSession(decoder.Model, new() { BatchSize = 2, Capacity = 512 });
        session.AppendTokens(prompts);
        Assert.Equal([AttentionMode.Dense, AttentionMode.Sparse], session.LastModes);
        Assert.All(decoder.OpModesOfPrompt(prompts), layer => Assert.Equal([AttentionMode.Dense, AttentionMode.Sparse], layer));
    }
}
