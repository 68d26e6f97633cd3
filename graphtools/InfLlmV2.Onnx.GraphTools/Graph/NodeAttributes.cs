using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools;

/// <summary>Reading node attributes.</summary>
public static class NodeAttributes
{
    /// <summary>The integer attribute <paramref name="name"/>, or null when the node does not set it.</summary>
    public static long? IntAttr(this NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name)?.I;

    /// <summary>The float attribute <paramref name="name"/>, or null when the node does not set it.</summary>
    public static float? FloatAttr(this NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name)?.F;
}
