using Google.Protobuf;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.Tests.Reliability;

/// <summary>y = Identity(x), x float [N]: a model `run` executes in a millisecond, to feed hostile test-data tensors to.</summary>
public static class IdentityModel
{
    public static string Save(string dir)
    {
        var g = new GraphProto
        {
            Name = "identity",
            Input = { Tensor("x", TensorProto.Types.DataType.Float, [null]) },
            Node = { Node("Identity", "", ["x"], ["y"]) },
            Output = { Tensor("y", TensorProto.Types.DataType.Float, [null]) },
        };
        var path = Path.Combine(dir, "identity.onnx");
        OnnxModelFile.Save(Model(g, ("", 17)), path);
        return path;
    }

    public static TensorProto ValidInput() => TensorProtos.Float("x", [4], [1f, 2f, 3f, 4f]);

    private static Action<string> Input(Action<TensorProto> mutate) => td =>
    {
        var t = ValidInput();
        mutate(t);
        File.WriteAllBytes(Path.Combine(td, "input_0.pb"), t.ToByteArray());
    };

    public static IEnumerable<(string Name, Action<string> Write)> HostileTensors()
    {
        yield return ("negative dim", Input(t => t.Dims[0] = -4));
        yield return ("dim 2^40", Input(t => t.Dims[0] = 1L << 40));
        yield return ("dims 2^40 x 2^40", Input(t => { t.Dims[0] = 1L << 40; t.Dims.Add(1L << 40); }));
        yield return ("raw_data short", Input(t => t.RawData = ByteString.CopyFrom(t.RawData.Span[..^1])));
        yield return ("no data", Input(t => t.RawData = ByteString.Empty));
        yield return ("typed data too short", Input(t => { t.RawData = ByteString.Empty; t.FloatData.Add(1f); }));
        yield return ("data type 999", Input(t => t.DataType = 999));
        yield return ("string type", Input(t => t.DataType = (int)TensorProto.Types.DataType.String));
        yield return ("names no input", Input(t => t.Name = "not_an_input"));
        yield return ("external escaping", Input(t =>
        {
            t.RawData = ByteString.Empty;
            t.DataLocation = TensorProto.Types.DataLocation.External;
            t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "../../../../etc/passwd" });
        }));
        yield return ("external absolute", Input(t =>
        {
            t.RawData = ByteString.Empty;
            t.DataLocation = TensorProto.Types.DataLocation.External;
            t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "/etc/passwd" });
        }));
        yield return ("empty file (a tensor of no shape and no data)", td => File.WriteAllBytes(Path.Combine(td, "input_0.pb"), []));
        for (int seed = 0; seed < 4; seed++)
        {
            int s = seed;
            yield return ($"random bytes {s}", td => File.WriteAllBytes(Path.Combine(td, "input_0.pb"), HostileModels.Random(100 + s, 32 << s)));
        }
        yield return ("input_0.pb is a FIFO", td => HostileModels.Mkfifo(Path.Combine(td, "input_0.pb")));
        yield return ("input_1.pb without input_0.pb", td => File.WriteAllBytes(Path.Combine(td, "input_1.pb"), ValidInput().ToByteArray()));
        yield return (
            "expected output with raw_data short",
            td =>
            {
                File.WriteAllBytes(Path.Combine(td, "input_0.pb"), ValidInput().ToByteArray());
                var o = TensorProtos.Float("y", [4], [1f, 2f, 3f, 4f]);
                o.RawData = ByteString.CopyFrom(o.RawData.Span[..^4]);
                File.WriteAllBytes(Path.Combine(td, "output_0.pb"), o.ToByteArray());
            }
        );
    }
}
