using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.Models;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// Auto mode at the switch (docs/op-spec.md, "Mode": sparse iff total ≥ dense_len), through ORT:
/// one token below dense_len is dense, at dense_len it is sparse. The expected mode of each case is
/// written down, not derived from the op, and compared with the op run in that forced mode.
/// </summary>
public class ModeSwitchBoundaryTests
{
    // Bk = 8 (l1 = 4, s1 = 2 so that Bk is a multiple of s1), one local block (window 8), topk 3:
    // K = 3 + 1 = 4 blocks of 8 keys = 32 keys. At 39 or 40 tokens the query is in block 4, so 5
    // blocks exist and sparse drops one: sparse differs from dense at both lengths.
    private const int DenseLen = 40;
    private const int Heads = 4, KvHeads = 2, HeadSize = 16, Budget = 4;

    private static Dictionary<string, double> Attributes() => new()
    {
        ["block_size"] = 8, ["compress_kernel"] = 4, ["compress_stride"] = 2, ["window_size"] = 8, ["topk"] = 3,
        ["init_blocks"] = 1, ["dense_len"] = DenseLen,
    };

    private static AttentionNodeConfig Config(bool modeInput) => new()
    {
        NumHeads = Heads, KvNumHeads = KvHeads, WithSelectedBlocks = true, WithAttentionMode = modeInput, Attributes = Attributes(),
    };

    /// <summary>A decode step (one new token after total − 1 past tokens), the same random data for every mode.</summary>
    private static AttentionCall Decode(int total, int? mode) =>
        AttentionCall.Random(seed: 100 + total, batch: 1, seqLen: 1, Heads, KvHeads, HeadSize, pastCapacity: total - 1, totals: [total], mode: mode);

    public static TheoryData<int, bool, bool> Cases() => new()
    {
        // total, attention_mode input present (fed 0) or absent, expected: sparse?
        { DenseLen - 1, false, false },
        { DenseLen - 1, true, false },
        { DenseLen, false, true },
        { DenseLen, true, true },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void AutoMode_AtTheSwitch_EqualsTheForcedModeWrittenDown(int total, bool modeInput, bool expectSparse)
    {
        var auto = AttentionHarness.Run(Config(modeInput), Decode(total, modeInput ? 0 : null));
        var dense = AttentionHarness.Run(Config(true), Decode(total, 1));
        var sparse = AttentionHarness.Run(Config(true), Decode(total, 2));

        // The two modes must really differ here, or the comparison below would prove nothing.
        Assert.True(ModelRunner.MaxAbsDiff(dense["output"].Data, sparse["output"].Data) > 1e-3f,
            "sparse equals dense at this length: the budget covers every block");

        var expected = expectSparse ? sparse : dense;
        Assert.Equal(expected["output"].Shape, auto["output"].Shape);
        Assert.Equal(expected["output"].Data, auto["output"].Data);
        Assert.Equal(expected["present_key"].Data, auto["present_key"].Data);

        var blocks = auto["selected_blocks"];
        Assert.Equal(new long[] { 1, KvHeads, 1, Budget }, blocks.Shape);
        if (!expectSparse)
        {
            Assert.All(blocks.Data, b => Assert.Equal(-1f, b));
            return;
        }
        // Query at p = 39 is in block 4 = qb: init block 0, local blocks 3 and 4, and one of 1..2
        // by score, so every row holds 4 distinct ascending blocks, 0 first and 3, 4 last.
        for (int h = 0; h < KvHeads; h++)
        {
            var row = blocks.Data.Skip(h * Budget).Take(Budget).Select(x => (int)x).ToArray();
            Assert.Equal(0, row[0]);
            Assert.Contains(row[1], new[] { 1, 2 });
            Assert.Equal(new[] { 3, 4 }, row[2..]);
        }
        Assert.Equal(expected["selected_blocks"].Data, blocks.Data);
    }

    [Fact]
    public void AutoMode_DecidesPerBatchEntry_OneEachSideOfTheSwitch()
    {
        // Entry 0 has dense_len − 1 tokens (dense), entry 1 has dense_len (sparse), in one call.
        AttentionCall Call(int? mode) => AttentionCall.Random(seed: 7, batch: 2, seqLen: 1, Heads, KvHeads, HeadSize,
            pastCapacity: DenseLen - 1, totals: [DenseLen - 1, DenseLen], mode: mode);
        var auto = AttentionHarness.Run(Config(false), Call(null));
        var dense = AttentionHarness.Run(Config(true), Call(1));
        var sparse = AttentionHarness.Run(Config(true), Call(2));
        int row = Heads * HeadSize;
        float[] Entry(float[] data, int b) => data.Skip(b * row).Take(row).ToArray();
        Assert.True(ModelRunner.MaxAbsDiff(Entry(dense["output"].Data, 1), Entry(sparse["output"].Data, 1)) > 1e-3f);
        Assert.Equal(Entry(dense["output"].Data, 0), Entry(auto["output"].Data, 0));
        Assert.Equal(Entry(sparse["output"].Data, 1), Entry(auto["output"].Data, 1));

        int perEntry = KvHeads * Budget;
        Assert.All(auto["selected_blocks"].Data.Take(perEntry), b => Assert.Equal(-1f, b));
        Assert.All(auto["selected_blocks"].Data.Skip(perEntry), b => Assert.True(b >= 0, "entry 1 is sparse: no -1 in its rows"));
    }
}
