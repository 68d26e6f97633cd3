using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools;

/// <summary>Reading node attributes.</summary>
public static class NodeAttributes
{
    /// <summary>Most query or key/value heads SwitchableAttention accepts (the op's CheckAttributes bound).</summary>
    public const long MaxHeads = 4096;

    /// <summary>The integer attribute <paramref name="name"/>, or null when the node does not set it.</summary>
    public static long? IntAttr(this NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name)?.I;

    /// <summary>The float attribute <paramref name="name"/>, or null when the node does not set it.</summary>
    public static float? FloatAttr(this NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name)?.F;

    /// <summary>
    /// Why the integer attribute <paramref name="name"/> is out of [<paramref name="min"/>, <paramref name="max"/>]
    /// (read as int64, before any narrowing), or null when it is in range or not set.
    /// </summary>
    public static string? IntAttrOutOfRange(this NodeProto node, string name, long min, long max) =>
        node.IntAttr(name) is long v && (v < min || v > max) ? $"{name} = {v} is outside [{min}, {max}]" : null;

    /// <summary>A head count attribute narrowed to int when it is in [1, <see cref="MaxHeads"/>], else null.</summary>
    public static int? HeadsAttr(this NodeProto node, string name) =>
        node.IntAttr(name) is long v && v >= 1 && v <= MaxHeads ? (int)v : null;
}
