namespace InfLlmV2.Onnx.GraphTools.Rewriting;

/// <summary>
/// The repeat_kv of exported GQA models, <c>Reshape(Expand(Unsqueeze(X, axis 2), ·), ·)</c>: X
/// [B, Hkv, T, D] becomes [B, Hkv·n, T, D] with query head h reading kv head h / n (GQA's grouping),
/// as long as the result is 4-D with X's batch, length and head size (the callers check shapes).
/// Rules strip it to give SwitchableAttention the real kv heads.
/// </summary>
public static class RepeatKv
{
    /// <summary>X when <paramref name="value"/> is repeat_kv(X) (through Cast/Identity), else <paramref name="value"/>.</summary>
    public static string Source(GraphIndex g, StaticEvaluator eval, string value) =>
        g.Producer(value) is { OpType: "Reshape" } r && g.Producer(g.SkipPassThroughUp(r.Input[0])) is { OpType: "Expand" } e &&
        g.Producer(g.SkipPassThroughUp(e.Input[0])) is { OpType: "Unsqueeze" } u && eval.Axes(u) is [2]
            ? g.SkipPassThroughUp(u.Input[0])
            : value;
}
