using System.Globalization;
using System.Reflection;
using System.Text.RegularExpressions;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.Models;
using InfLlmV2.Onnx.OpContract;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// The C# contract type (<see cref="SwitchableAttentionOp"/>, <see cref="SparseAttentionSettings"/>,
/// <see cref="AttentionMode"/>) against the op's own statements of it: docs/op-spec.md, the native
/// parameter header and the native op itself, so that a change on one side only fails here.
/// </summary>
public class OpContractTests
{
    private static string Spec => File.ReadAllText(Path.Combine(ModelRunner.RepoRoot, "docs", "op-spec.md"));

    private static string ParamsHeader =>
        File.ReadAllText(Path.Combine(ModelRunner.RepoRoot, "customop", "include", "infllmv2", "attention_params.h"));

    // The lines of the op-spec section that starts with "## {title}".
    private static IEnumerable<string> SpecSection(string title) =>
        Spec.Split('\n').SkipWhile(l => l.TrimEnd() != $"## {title}").Skip(1).TakeWhile(l => !l.StartsWith("## ", StringComparison.Ordinal));

    private static string Snake(string pascal) => Regex.Replace(pascal, "(?<=[a-z])([A-Z])", "_$1").ToLowerInvariant();

    private static Dictionary<string, object?> Constants(Type t) =>
        t.GetFields(BindingFlags.Public | BindingFlags.Static).Where(f => f.IsLiteral).ToDictionary(f => f.Name, f => f.GetRawConstantValue());

    [Fact]
    public void Identity_IsTheOpSpecsTitle()
    {
        var title = Spec.Split('\n')[0];
        Assert.Contains($"`{SwitchableAttentionOp.Domain}::{SwitchableAttentionOp.OpType}` (version {SwitchableAttentionOp.DomainVersion})", title);
    }

    [Theory]
    [InlineData("Inputs", typeof(SwitchableAttentionOp.Inputs))]
    [InlineData("Outputs", typeof(SwitchableAttentionOp.Outputs))]
    public void InputAndOutputPositions_AreTheOpSpecs(string section, Type positions)
    {
        var spec = SpecSection(section).Select(l => Regex.Match(l, @"^\| (\d+) \| `(\w+)` \|")).Where(m => m.Success)
            .ToDictionary(m => m.Groups[2].Value, m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture));
        var ours = Constants(positions).ToDictionary(c => Snake(c.Key), c => (int)c.Value!);
        Assert.NotEmpty(spec);
        Assert.Equal(spec.OrderBy(x => x.Key), ours.OrderBy(x => x.Key));
    }

    [Fact]
    public void AttributeNames_AreTheOpSpecsAndTheNativeStructs()
    {
        var spec = SpecSection("Attributes").Select(l => Regex.Match(l, @"^\| `(\w+)` \|")).Where(m => m.Success).Select(m => m.Groups[1].Value);
        var native = NativeAttributeDefaults().Keys;
        var ours = Constants(typeof(SwitchableAttentionOp.Attributes)).Values.Cast<string>();
        Assert.Equal(spec.Order(), ours.Order());
        Assert.Equal(native.Order(), ours.Order());
    }

    // `int64_t name = value;` and `float name = value;` members of the native AttentionAttributes struct.
    private static Dictionary<string, double> NativeAttributeDefaults()
    {
        var header = ParamsHeader;
        int start = header.IndexOf("struct AttentionAttributes {", StringComparison.Ordinal);
        Assert.True(start >= 0, "attention_params.h has no AttentionAttributes struct");
        var body = header[start..header.IndexOf("};", start, StringComparison.Ordinal)];
        return Regex.Matches(body, @"^\s*(?:int64_t|float)\s+(\w+)\s*=\s*(-?[\d.]+)f?;", RegexOptions.Multiline)
            .ToDictionary(m => m.Groups[1].Value, m => double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture));
    }

    [Fact]
    public void SparseDefaults_AreTheNativeHeaders()
    {
        var native = NativeAttributeDefaults();
        foreach (var (name, value) in SparseAttentionSettings.Defaults.Attributes())
            Assert.True(native.TryGetValue(name, out var n) && n == value, $"{name}: C# default {value}, attention_params.h {(native.TryGetValue(name, out var x) ? x : "none")}");
    }

    [Fact]
    public void SparseDefaults_AreTheOpSpecs()
    {
        var spec = SpecSection("Attributes").Select(l => Regex.Match(l, @"^\| `(\w+)` \| ([−-]?\d+)")).Where(m => m.Success)
            .ToDictionary(m => m.Groups[1].Value, m => long.Parse(m.Groups[2].Value.Replace('−', '-'), CultureInfo.InvariantCulture));
        foreach (var (name, value) in SparseAttentionSettings.Defaults.Attributes())
            Assert.True(spec.TryGetValue(name, out var s) && s == value, $"{name}: C# default {value}, op-spec {(spec.TryGetValue(name, out var x) ? x : "none")}");
        Assert.Equal(96, SparseAttentionSettings.Defaults.BlockBudget);  // "K = topk + L = 96"
    }

    /// <summary>The attribute upper bounds are the native check's constants (check_inputs.h).</summary>
    [Fact]
    public void UpperBounds_AreTheNativeChecks()
    {
        var header = File.ReadAllText(Path.Combine(ModelRunner.RepoRoot, "customop", "src", "common", "check_inputs.h"));
        long Native(string name)
        {
            var m = Regex.Match(header, $@"constexpr int64_t {name} = (1 << (\d+)|\d+);");
            Assert.True(m.Success, $"check_inputs.h has no {name}");
            return m.Groups[2].Success ? 1L << int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture) : long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        }
        Assert.Equal(SparseAttentionSettings.MaxBlockTokens, Native("kMaxBlockTokens"));
        Assert.Equal(SparseAttentionSettings.MaxBlockBudget, Native("kMaxBudget"));
        Assert.Equal(SparseAttentionSettings.MaxTokens, Native("kMaxTokens"));
    }

    [Fact]
    public void AttentionModeValues_AreTheNativeEnums()
    {
        var native = Regex.Matches(ParamsHeader, @"\b(k\w+) = (\d+),").ToDictionary(m => m.Groups[1].Value, m => int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture));
        Assert.Equal((int)AttentionMode.Auto, native["kAuto"]);
        Assert.Equal((int)AttentionMode.Dense, native["kForceDense"]);
        Assert.Equal((int)AttentionMode.Sparse, native["kForceSparse"]);
        Assert.Equal(3, Enum.GetValues<AttentionMode>().Length);
    }

    public static TheoryData<string, long, long, long, long, long, long, long> Settings => new()
    {
        // name, dense_len, topk, window_size, block_size, init_blocks, compress_kernel, compress_stride
        { "defaults", 8192, 64, 2048, 64, 1, 32, 16 },
        { "always sparse", -1, 64, 2048, 64, 1, 32, 16 },
        { "dense_len 0", 0, 64, 2048, 64, 1, 32, 16 },
        { "dense_len -2", -2, 64, 2048, 64, 1, 32, 16 },
        { "stride 0", 8192, 64, 2048, 64, 1, 32, 0 },
        { "kernel not a multiple", 8192, 64, 2048, 64, 1, 40, 16 },
        { "kernel below stride", 8192, 64, 2048, 64, 1, 8, 16 },
        { "kernel = stride", 8192, 64, 2048, 64, 1, 16, 16 },
        { "block not a multiple", 8192, 64, 2048, 40, 1, 32, 16 },
        { "block 0", 8192, 64, 2048, 0, 1, 32, 16 },
        { "init -1", 8192, 64, 2048, 64, -1, 32, 16 },
        { "no init blocks", 8192, 1, 2048, 64, 0, 32, 16 },
        { "window not a multiple", 8192, 64, 100, 64, 1, 32, 16 },
        { "window negative", 8192, 64, -64, 64, 1, 32, 16 },
        { "no window", 8192, 64, 0, 64, 1, 32, 16 },
        { "topk = init", 8192, 1, 2048, 64, 1, 32, 16 },
        { "topk = init + 1", 8192, 2, 2048, 64, 1, 32, 16 },
        // Upper bounds (no size derived from an attribute may overflow).
        { "topk 2^31", 8192, 1L << 31, 2048, 64, 1, 32, 16 },
        { "budget 2^20 + 1", 8192, (1L << 20) - 31, 2048, 64, 1, 32, 16 },
        { "budget 2^20", 8192, (1L << 20) - 32, 2048, 64, 1, 32, 16 },
        { "block 2^17", 8192, 64, 1L << 17, 1L << 17, 1, 32, 16 },
        { "kernel 2^17", 8192, 64, 2048, 64, 1, 1L << 17, 16 },
        { "dense_len 2^31", 1L << 31, 64, 2048, 64, 1, 32, 16 },
        { "dense_len int32 max", int.MaxValue, 64, 2048, 64, 1, 32, 16 },
        { "window 2^40", 8192, 64, 1L << 40, 1L << 16, 1, 32, 16 },
    };

    /// <summary>Validate refuses exactly what the op's attribute check refuses, naming the same attribute.</summary>
    [Theory]
    [MemberData(nameof(Settings))]
    public void Validate_RefusesWhatTheOpRefuses(string name, long denseLen, long topk, long window, long block, long init, long kernel, long stride)
    {
        var s = new SparseAttentionSettings
        {
            DenseLen = denseLen, TopKBlocks = topk, SparseWindowTokens = window, BlockSize = block, InitBlocks = init,
            CompressKernel = kernel, CompressStride = stride,
        };
        string? opError = OpErrorFor(s);
        string? ours = s.Validate();
        Assert.True((ours is null) == (opError is null), $"{name}: C# says '{ours ?? "valid"}', the op says '{opError ?? "valid"}'");
        if (ours is not null)
        {
            var attribute = Regex.Match(ours, "^'(\\w+)'").Groups[1].Value;
            Assert.Contains($"Attribute '{attribute}'", opError);
        }
    }

    /// <summary>The op's error when a session loads a one-node model with <paramref name="s"/>'s attributes; null when it loads.</summary>
    private static string? OpErrorFor(SparseAttentionSettings s)
    {
        var model = AttentionNodeModels.Build(new AttentionNodeConfig { Attributes = s.Attributes().ToDictionary(a => a.Name, a => (double)a.Value) });
        using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
        options.RegisterInfLlmV2Ops();
        try
        {
            using var session = new InferenceSession(OnnxModelFile.ToBytes(model), options);
            return null;
        }
        catch (OnnxRuntimeException e)
        {
            return e.Message;
        }
    }

    /// <summary>score_precision: Validate refuses exactly what the op's attribute check refuses.</summary>
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(-1)]
    public void Validate_ScorePrecision_RefusesWhatTheOpRefuses(long value)
    {
        var s = new SparseAttentionSettings { ScorePrecision = (ScorePrecision)value };
        string? opError = OpErrorFor(s);
        string? ours = s.Validate();
        Assert.Equal(value is 0 or 1, ours is null);
        Assert.Equal(value is 0 or 1, opError is null);
        if (ours is not null)
        {
            Assert.StartsWith($"'{SwitchableAttentionOp.Attributes.ScorePrecision}'", ours);
            Assert.Contains("Attribute 'score_precision' must be 0 (fp32 stage-1 scores) or 1 (bf16", opError);
        }
    }

    /// <summary>
    /// The mode rule at its boundary against what the op did: a decode step of total length
    /// dense_len − 1 runs dense (every selected_blocks entry −1), one of dense_len runs sparse.
    /// </summary>
    [Theory]
    [InlineData(127, AttentionMode.Dense)]
    [InlineData(128, AttentionMode.Sparse)]
    public void ModeFor_IsWhatTheOpDid(int total, AttentionMode expected)
    {
        var s = new SparseAttentionSettings { DenseLen = 128, TopKBlocks = 2, SparseWindowTokens = 64 };
        Assert.Equal(expected, s.ModeFor(AttentionMode.Auto, total));
        var config = new AttentionNodeConfig
        {
            NumHeads = 4, KvNumHeads = 2, WithSelectedBlocks = true,
            Attributes = s.Attributes().ToDictionary(a => a.Name, a => (double)a.Value),
        };
        var call = AttentionCall.Random(3, 1, 1, 4, 2, 16, total, [total]);
        Assert.Equal(expected, OpReport.ModeOf(AttentionHarness.Run(config, call)["selected_blocks"].Data, call.KvNumHeads, 1, s.BlockBudget)[0]);
    }
}

/// <summary>What the op reports it did, read from its <c>selected_blocks</c> output.</summary>
public static class OpReport
{
    /// <summary>
    /// The mode of each batch entry from a selected_blocks tensor [B, Hkv, S, K] (entries in
    /// <paramref name="validRows"/>: rows past a padded entry's length are −1 in both modes): dense
    /// when every row is all −1, sparse when every valid row holds a block; anything else fails.
    /// </summary>
    public static AttentionMode[] ModeOf(IReadOnlyList<float> selected, int kvHeads, int seqLen, long budget, int[]? validRows = null)
    {
        int k = (int)budget, batch = selected.Count / (kvHeads * seqLen * k);
        Assert.Equal(batch * kvHeads * seqLen * k, selected.Count);
        var modes = new AttentionMode[batch];
        for (int b = 0; b < batch; b++)
        {
            int rows = validRows?[b] ?? seqLen;
            var holdsBlock = new List<bool>();
            for (int h = 0; h < kvHeads; h++)
                for (int s = 0; s < rows; s++)
                {
                    int at = ((b * kvHeads + h) * seqLen + s) * k;
                    holdsBlock.Add(Enumerable.Range(at, k).Any(i => selected[i] != SwitchableAttentionOp.NoBlock));
                }
            Assert.True(holdsBlock.All(x => x) || holdsBlock.All(x => !x), $"batch entry {b}: some rows ran sparse, some dense");
            modes[b] = holdsBlock[0] ? AttentionMode.Sparse : AttentionMode.Dense;
        }
        return modes;
    }
}
