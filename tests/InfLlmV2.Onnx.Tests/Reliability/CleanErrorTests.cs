using System.Text.Json;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.OpContract;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Tests.Reliability;

/// <summary>
/// Clean errors: one line for parse errors and for a model ONNX Runtime refuses (its own
/// log silenced, its message inside ours), and `inspect` showing the SwitchableAttention attributes
/// the op will really run with, or saying that the op will refuse them.
/// </summary>
[Collection(ReliabilityCollection.Name)]
public class CleanErrorTests
{
    public static TheoryData<string[]> ParseErrors() =>
    [
        ["inspect", "m.onnx", "--bogus-flag"],
        ["inspect"],
        ["rewrite", "m.onnx"],
        ["generate", "m.onnx", "--max-new-tokens", "many", "--what"],
        ["no-such-command"],
        ["run", "m.onnx", "--inputs"],
    ];

    [Theory]
    [MemberData(nameof(ParseErrors))]
    public void ParseErrors_AreOneLine(string[] args)
    {
        var r = InProcessCli.Run(args);
        Assert.True(r.Code == 2 && r.OneErrorLine, r.ToString());
        Assert.Contains("infllmv2 --help", r.Err);
    }

    /// <summary>The tiny decoder rewritten, then every SwitchableAttention node given compress_stride = 0 (which the op refuses).</summary>
    private static string RefusedModel(TempDir dir)
    {
        var model = TinyDecoderGenerator.Generate(TextModels.Config);
        AttentionRewriter.Rewrite(model, new RewriteOptions { AttentionModeInput = true });
        foreach (var n in model.Graph.Node.Where(SwitchableAttentionOp.Is))
        {
            n.Attribute.Remove(n.Attribute.FirstOrDefault(a => a.Name == "compress_stride") ?? new AttributeProto());
            n.Attribute.Add(GraphBuilder.Attr("compress_stride", 0L));
        }
        var path = dir["refused.onnx"];
        OnnxModelFile.Save(model, path);
        return path;
    }

    [Fact]
    public void ModelTheSessionRefuses_GivesOneLine_WithOrtMessage_AndNoOrtLog()
    {
        // A child process: ONNX Runtime logs to the process's own stderr, which in-process capture would miss.
        using var dir = new TempDir();
        var model = RefusedModel(dir);
        foreach (var args in new[]
                 {
                     new[] { "generate", model, "--prompt-ids", "1,2,3", "--max-new-tokens", "1" },
                     ["compare", model, model, "--prompt-len", "4", "--decode-steps", "0"],
                 })
        {
            var (code, _, err) = CliProcess.Run(args);
            var lines = err.Trim().Split('\n');
            Assert.True(code == 2 && lines.Length == 1, $"{args[0]}: exit {code}, stderr:\n{err}");
            Assert.StartsWith("error: ", lines[0], StringComparison.Ordinal);
            Assert.Contains("compress_stride", lines[0]);
            Assert.False(err.Contains('\u001b', StringComparison.Ordinal), $"{args[0]}: a coloured ORT log in stderr:\n{err.Replace("\u001b", "ESC", StringComparison.Ordinal)}");
        }
    }

    /// <summary>Attribute mutations of a one-node SwitchableAttention model: wrong types, values the op refuses, values it accepts.</summary>
    public static TheoryData<string> AttributeCases() =>
    [
        "topk FLOAT 2^62", "block_size STRING", "topk INTS", "compress_stride FLOAT 0",
        "topk 2^62", "dense_len -2^63", "compress_stride 0", "block_size 48", "init_blocks -1",
        "topk 128", "window_size 0", "score_precision 7",
    ];

    private static AttributeProto Mutated(string spec)
    {
        var parts = spec.Split(' ');
        string name = parts[0];
        long Value(string v) => v switch { "2^62" => 1L << 62, "-2^63" => long.MinValue, _ => long.Parse(v, System.Globalization.CultureInfo.InvariantCulture) };
        return parts[1] switch
        {
            "FLOAT" => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = Value(parts[2]) },
            "STRING" => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.String, S = Google.Protobuf.ByteString.CopyFromUtf8("64") },
            "INTS" => GraphBuilder.Ints(name, 1, 2),
            _ => GraphBuilder.Attr(name, Value(parts[1])),
        };
    }

    [Theory]
    [MemberData(nameof(AttributeCases))]
    public void Inspect_ShowsWhatTheOpWillDo_OrThatItRefuses(string spec)
    {
        using var dir = new TempDir();
        var model = AttentionNodeModels.Build(new AttentionNodeConfig());
        var node = model.Graph.Node.Single(SwitchableAttentionOp.Is);
        var attribute = Mutated(spec);
        var old = node.Attribute.FirstOrDefault(a => a.Name == attribute.Name);
        if (old is not null) node.Attribute.Remove(old);
        node.Attribute.Add(attribute);
        var path = dir["one.onnx"];
        OnnxModelFile.Save(model, path);

        // What the op does: loads (with these attributes, its defaults where a type is wrong) or refuses.
        string? opError = null;
        using (var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL })
        {
            options.RegisterInfLlmV2Ops();
            try
            {
                using var session = new InferenceSession(path, options);
            }
            catch (OnnxRuntimeException e)
            {
                opError = e.Message;
            }
        }

        var r = InProcessCli.Run("inspect", path, "--json");
        Assert.True(r.Code == 0, r.ToString());
        var group = JsonDocument.Parse(r.Out).RootElement.GetProperty("switchable_attention")[0];
        var refuses = group.GetProperty("op_refuses");
        Assert.True((opError is null) == (refuses.ValueKind == JsonValueKind.Null),
            $"{spec}: the op says '{opError ?? "loads"}', inspect says '{(refuses.ValueKind == JsonValueKind.Null ? "loads" : refuses.GetString())}'");
        var shown = group.GetProperty("attributes").GetProperty(attribute.Name).GetInt64();
        if (attribute.Type != AttributeProto.Types.AttributeType.Int)
        {
            // A wrong-typed attribute is ignored by the op: inspect shows the op's default, and says so.
            var expected = SparseAttentionSettings.Defaults.Attributes().Single(a => a.Name == attribute.Name).Value;
            Assert.Equal(expected, shown);
            Assert.Contains(group.GetProperty("ignored_attributes").EnumerateArray(), e => e.GetString()!.StartsWith(attribute.Name, StringComparison.Ordinal));
            Assert.NotEqual("0", shown.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        else
        {
            Assert.Equal(attribute.I, shown);
        }
        var text = InProcessCli.Run("inspect", path);
        Assert.Equal(opError is not null, text.Out.Contains("will REFUSE", StringComparison.Ordinal));
        if (opError is not null) Assert.DoesNotContain("custom", text.Out);
    }
}
