using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.Models;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// Block selection (docs/op-spec.md, "Sparse mode", steps 1, 5, 6) through ORT, with the expected
/// <c>selected_blocks</c> rows worked out by hand and written as literals.
/// </summary>
/// <remarks>
/// Setup shared by every case: block_size Bk = 8, compress_kernel l₁ = 4, compress_stride s₁ = 2,
/// window_size 8 (L = 1 local block), init_blocks 1, topk 4, so K = 4 + 1 = 5; always sparse
/// (dense_len −1). One kv head, two query heads, head size 8.
/// Keys are zero except dimension 0, which holds a chosen value a[t] per token t; every query head
/// is e₀. So level-1 window j (tokens 2j .. 2j + 3) scores s_j = scale · mean(a[2j .. 2j + 3]) for
/// both heads, and P_j = Σ_g exp(s_j − lse_g) ranks windows exactly as mean(a) does (values are
/// small integers: means are exact in fp32, so equal means are exact ties).
/// Window j intersects block b (tokens 8b .. 8b + 7) iff 2j ≤ 8b + 7 and 2j + 3 ≥ 8b, i.e.
/// j ∈ [4b − 1, 4b + 3] (the defaults' rule, scaled down). score(b) = max over those windows.
/// At 64 tokens (decode, p = 63): qb = 7, 31 windows (j = 0..30, all visible); forced blocks are
/// 0 (init) and 6, 7 (local: qb − 1 .. qb); candidates 1..5 compete for K − 3 = 2 slots.
/// </remarks>
public class SparseSelectionTests
{
    private const int Heads = 2, KvHeads = 1, HeadSize = 8, Budget = 5;

    private static AttentionNodeConfig Config(bool withPast) => new()
    {
        NumHeads = Heads, KvNumHeads = KvHeads, WithPast = withPast, WithSelectedBlocks = true,
        Attributes = new Dictionary<string, double>
        {
            ["block_size"] = 8, ["compress_kernel"] = 4, ["compress_stride"] = 2, ["window_size"] = 8,
            ["topk"] = 4, ["init_blocks"] = 1, ["dense_len"] = -1,
        },
    };

    /// <summary>a[t] = 0 except the listed tokens.</summary>
    private static float[] KeyValues(int total, params (int Token, float Value)[] set)
    {
        var a = new float[total];
        foreach (var (t, v) in set) a[t] = v;
        return a;
    }

    private static float[] Values(int tokens)
    {
        var rng = new Random(5);
        return Enumerable.Range(0, tokens * KvHeads * HeadSize).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
    }

    /// <summary>Keys of tokens [from, to): a[t]·e₀ per token, layout [.., t, D] for the one kv head.</summary>
    private static float[] Keys(float[] a, int from, int to)
    {
        var k = new float[(to - from) * HeadSize];
        for (int t = from; t < to; t++) k[(t - from) * HeadSize] = a[t];
        return k;
    }

    private static float[] Queries(int rows)
    {
        var q = new float[rows * Heads * HeadSize];
        for (int r = 0; r < rows; r++)
            for (int g = 0; g < Heads; g++) q[(r * Heads + g) * HeadSize] = 1f;
        return q;
    }

    /// <summary>Decode of token total − 1 after total − 1 past tokens; the one selected_blocks row.</summary>
    private static int[] DecodeRow(float[] a)
    {
        int total = a.Length;
        var values = Values(total);
        var call = new AttentionCall
        {
            Batch = 1, SeqLen = 1, NumHeads = Heads, KvNumHeads = KvHeads, HeadSize = HeadSize,
            Query = Queries(1),
            Key = Keys(a, total - 1, total),
            Value = values[((total - 1) * HeadSize)..],
            PastKey = Keys(a, 0, total - 1),
            PastValue = values[..((total - 1) * HeadSize)],
            PastCapacity = total - 1,
            SeqlensK = [total - 1],
            TotalSequenceLength = total,
        };
        var r = AttentionHarness.Run(Config(withPast: true), call)["selected_blocks"];
        Assert.Equal(new long[] { 1, KvHeads, 1, Budget }, r.Shape);
        return r.Data.Select(x => (int)x).ToArray();
    }

    /// <summary>First prompt of all a.Length tokens; selected_blocks rows by query position.</summary>
    private static int[][] PrefillRows(float[] a)
    {
        int total = a.Length;
        var call = new AttentionCall
        {
            Batch = 1, SeqLen = total, NumHeads = Heads, KvNumHeads = KvHeads, HeadSize = HeadSize,
            Query = Queries(total), Key = Keys(a, 0, total), Value = Values(total),
            SeqlensK = [total - 1], TotalSequenceLength = total,
        };
        var r = AttentionHarness.Run(Config(withPast: false), call)["selected_blocks"];
        Assert.Equal(new long[] { 1, KvHeads, total, Budget }, r.Shape);
        return r.Data.Select(x => (int)x).Chunk(Budget).ToArray();
    }

    // Three candidates planted at the same score: a = 1 on tokens 18, 19 (windows 8 = {16..19} and
    // 9 = {18..21}, mean 0.5, both only in block 2), 26, 27 (windows 12, 13: block 3 only) and
    // 42, 43 (windows 20, 21: block 5 only). Blocks 1 and 4 score 0. Blocks 2, 3, 5 tie at 0.5 for
    // two slots: the lower indices 2 and 3 win.
    private static float[] ThreeTiedBlocks() => KeyValues(64, (18, 1), (19, 1), (26, 1), (27, 1), (42, 1), (43, 1));

    [Fact]
    public void ExactTies_LowerBlockIndexWins()
    {
        Assert.Equal([0, 2, 3, 6, 7], DecodeRow(ThreeTiedBlocks()));
    }

    [Fact]
    public void InitBlock_ScoringLowest_IsStillSelected()
    {
        // a = −1 on all of block 0 (tokens 0..7): windows 0, 1, 2 mean −1, window 3 = {6..9} −0.5, so
        // block 0 (windows 0..3) scores −0.5, below every candidate. a = 1 on 26, 27 (block 3: 0.5)
        // and 42, 43 (block 5: 0.5); blocks 1 (windows 3..7: max 0), 2, 4 score 0.
        // Init block 0 is forced; the two slots go to 3 and 5. (Unforced, block 0 would lose to a 0.)
        var a = KeyValues(64, (26, 1), (27, 1), (42, 1), (43, 1));
        for (int t = 0; t < 8; t++) a[t] = -1;
        Assert.Equal([0, 3, 5, 6, 7], DecodeRow(a));
    }

    [Fact]
    public void HotWindowOnTheLowerEdge_4bMinus1_SelectsBlockB()
    {
        // Only window 7 = {14, 15, 16, 17} (= 4b − 1 for b = 2) is hot: a = 1 on 14..17, and −1 on
        // 12, 13 and 18, 19 so that its neighbours cancel: window 6 = {12..15} and 8 = {16..19} mean 0,
        // 5 = {10..13} and 9 = {18..21} −0.5. Window 7 reaches into block 1 (as its 4b + 3) and block 2
        // (as its 4b − 1): both score 1. A warm block 4: a = 1 on 34, 35 (windows 16, 17: 0.5).
        // Blocks 3 and 5 score 0. Slots: 1 and 2 (score 1) beat 4 (0.5). A pooling that starts at 4b
        // would score block 2 by windows 8..11 (0) and pick 4 instead.
        var a = KeyValues(64, (12, -1), (13, -1), (14, 1), (15, 1), (16, 1), (17, 1), (18, -1), (19, -1), (34, 1), (35, 1));
        Assert.Equal([0, 1, 2, 6, 7], DecodeRow(a));
    }

    [Theory]
    // 24 tokens, p = 23: qb = 2, 3 blocks ≤ K = 5: every block, padded with −1.
    [InlineData(24, new[] { 0, 1, 2, -1, -1 })]
    // 40 tokens, p = 39: qb = 4, 5 blocks = K: every block, no padding (blocks 1 and 4 score 0,
    // below 2 and 3, yet are kept: nothing competes while the budget holds every block).
    [InlineData(40, new[] { 0, 1, 2, 3, 4 })]
    public void FewerBlocksThanTheBudget_SelectsEveryBlock_PaddedWithMinusOne(int total, int[] expected)
    {
        Assert.Equal(expected, DecodeRow(ThreeTiedBlocks()[..total]));
    }

    [Fact]
    public void Prefill_RowsFollowTheirOwnPosition()
    {
        var rows = PrefillRows(ThreeTiedBlocks());
        Assert.Equal(64, rows.Length);
        // p = 0..7 (qb 0), 8..15 (qb 1), ..., 32..39 (qb 4): at most 5 blocks, every one of 0..qb.
        for (int p = 0; p < 40; p++)
            Assert.Equal(Enumerable.Range(0, p / 8 + 1).Concat(Enumerable.Repeat(-1, Budget - 1 - p / 8)).ToArray(), rows[p]);
        // p = 40..47 (qb 5): forced 0 and 4, 5; candidates 1..3; block 2 (windows 8, 9) and block 3
        // (windows 12, 13) are visible (window j is visible iff 2j + 3 ≤ p) at 0.5, block 1 at 0.
        for (int p = 40; p < 48; p++) Assert.Equal([0, 2, 3, 4, 5], rows[p]);
        // p = 48..55 (qb 6): forced 0, 5, 6; candidates 1..4: 2 and 3 at 0.5.
        for (int p = 48; p < 56; p++) Assert.Equal([0, 2, 3, 5, 6], rows[p]);
        // p = 56..63 (qb 7): forced 0, 6, 7; candidates 1..5 with 2, 3, 5 tied at 0.5: 2 and 3 (the
        // decode row of the same keys).
        for (int p = 56; p < 64; p++) Assert.Equal([0, 2, 3, 6, 7], rows[p]);
    }
}
