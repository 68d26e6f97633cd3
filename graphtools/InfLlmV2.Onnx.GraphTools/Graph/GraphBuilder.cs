using InfLlmV2.Onnx.GraphTools.Proto;

namespace InfLlmV2.Onnx.GraphTools;

/// <summary>Small helpers to build nodes, attributes and typed values of ONNX graphs.</summary>
public static class GraphBuilder
{
    /// <summary>An integer attribute.</summary>
    public static AttributeProto Attr(string name, long value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    /// <summary>A float attribute.</summary>
    public static AttributeProto Attr(string name, float value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    /// <summary>An integer-list attribute.</summary>
    public static AttributeProto Ints(string name, params long[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        return a;
    }

    /// <summary>A node; empty strings in <paramref name="inputs"/> mark omitted optional inputs.</summary>
    public static NodeProto Node(string opType, string domain, IEnumerable<string> inputs, IEnumerable<string> outputs,
        IEnumerable<AttributeProto>? attributes = null, string? name = null)
    {
        var n = new NodeProto { OpType = opType, Domain = domain, Name = name ?? opType };
        n.Input.AddRange(inputs);
        n.Output.AddRange(outputs);
        if (attributes is not null) n.Attribute.AddRange(attributes);
        return n;
    }

    /// <summary>A tensor value info; a null dim entry is symbolic (named after the value and axis).</summary>
    public static ValueInfoProto Tensor(string name, TensorProto.Types.DataType type, params long?[] dims)
    {
        var shape = new TensorShapeProto();
        for (int i = 0; i < dims.Length; i++)
        {
            shape.Dim.Add(dims[i] is long v
                ? new TensorShapeProto.Types.Dimension { DimValue = v }
                : new TensorShapeProto.Types.Dimension { DimParam = $"{name}_d{i}" });
        }
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } },
        };
    }

    /// <summary>A model around one graph with the given opset imports (domain, version).</summary>
    public static ModelProto Model(GraphProto graph, params (string Domain, long Version)[] opsets)
    {
        var m = new ModelProto { IrVersion = 10, ProducerName = "infllmv2", ProducerVersion = "0.1.0", Graph = graph };
        foreach (var (domain, version) in opsets)
            m.OpsetImport.Add(new OperatorSetIdProto { Domain = domain, Version = version });
        return m;
    }
}
