using System.Net.Sockets;
using Google.Protobuf;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.Models;
using static InfLlmV2.Onnx.GraphTools.GraphBuilder;

namespace InfLlmV2.Onnx.Tests.Reliability;

/// <summary>
/// Hostile model folders: each case writes <c>model.onnx</c> (and whatever it needs beside it) into
/// an empty folder. Every one must be refused by inspect, rewrite and run with exit 2.
/// </summary>
public static class HostileModels
{
    public const string ModelName = "model.onnx";

    private static readonly Lazy<ModelProto> Tiny = new(() => TinyDecoderGenerator.Generate(new TinyDecoderConfig { Seed = 3 }));
    private static readonly Lazy<byte[]> TinyBytes = new(() => Tiny.Value.ToByteArray());

    /// <summary>A fresh copy of the tiny GQA decoder (valid: rewrite exits 0 on it).</summary>
    public static ModelProto Valid() => Tiny.Value.Clone();

    public static byte[] ValidBytes => TinyBytes.Value;

    public static IEnumerable<(string Name, Action<string> Write)> All()
    {
        var bytes = ValidBytes;
        yield return ("empty file", d => File.WriteAllBytes(Path.Combine(d, ModelName), []));
        foreach (var cut in new[] { 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597 }.Where(c => c < bytes.Length)
                     .Concat([bytes.Length / 4, bytes.Length / 3, bytes.Length / 2, 2 * bytes.Length / 3, 3 * bytes.Length / 4, bytes.Length - 7, bytes.Length - 1]))
            yield return ($"truncated at {cut}", d => Truncated(d, bytes, cut));
        for (int seed = 0; seed < 8; seed++)
        {
            int s = seed;
            yield return ($"random bytes seed {s}", d => File.WriteAllBytes(Path.Combine(d, ModelName), Random(s, 64 << s)));
        }
        yield return ("a TensorProto, not a model", d => File.WriteAllBytes(Path.Combine(d, ModelName), TensorProtos.Float("x", [2], [1f, 2f]).ToByteArray()));
        yield return ("a model without a graph", d => Save(d, new ModelProto { IrVersion = 10 }));
        yield return ("IR version 999", d => Save(d, Mutated(m => m.IrVersion = 999)));
        yield return ("IR version 0", d => Save(d, Mutated(m => m.IrVersion = 0)));
        yield return ("opset 999", d => Save(d, Mutated(m => m.OpsetImport.First(o => o.Domain.Length == 0).Version = 999)));
        yield return ("no default opset", d => Save(d, Mutated(m => m.OpsetImport.Remove(m.OpsetImport.First(o => o.Domain.Length == 0)))));
        yield return ("opset imported twice", d => Save(d, Mutated(m => m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 }))));
        yield return ("cycle", d => Save(d, Mutated(m =>
        {
            m.Graph.Node.Add(Node("Identity", "", ["cyc_b"], ["cyc_a"], name: "cyc1"));
            m.Graph.Node.Add(Node("Identity", "", ["cyc_a"], ["cyc_b"], name: "cyc2"));
        })));
        yield return ("dangling input", d => Save(d, Mutated(m => m.Graph.Node[0].Input[0] = "no_such_value")));
        yield return ("value produced twice", d => Save(d, Mutated(m => m.Graph.Node[1].Output[0] = m.Graph.Node[0].Output[0])));
        yield return ("initializer defined twice", d => Save(d, Mutated(m => m.Graph.Initializer.Add(m.Graph.Initializer[0].Clone()))));
        yield return ("input declared twice", d => Save(d, Mutated(m => m.Graph.Input.Add(m.Graph.Input[0].Clone()))));
        yield return ("output never produced", d => Save(d, Mutated(m => m.Graph.Output[0].Name = "no_such_output")));
        yield return ("initializer dims 2^40", d => Save(d, Mutated(m => { var t = BigInit(m); t.Dims.Clear(); t.Dims.Add(1L << 40); })));
        yield return ("initializer dims 2^40 x 2^40", d => Save(d, Mutated(m => { var t = BigInit(m); t.Dims.Clear(); t.Dims.Add(1L << 40); t.Dims.Add(1L << 40); })));
        yield return ("initializer negative dim", d => Save(d, Mutated(m => { var t = BigInit(m); t.Dims[0] = -t.Dims[0]; })));
        yield return ("raw_data one byte short", d => Save(d, Mutated(m => { var t = BigInit(m); t.RawData = ByteString.CopyFrom(t.RawData.Span[..^1]); })));
        yield return ("raw_data doubled", d => Save(d, Mutated(m => { var t = BigInit(m); t.RawData = ByteString.CopyFrom([.. t.RawData.Span, .. t.RawData.Span]); })));
        yield return ("no data at all", d => Save(d, Mutated(m => BigInit(m).RawData = ByteString.Empty)));
        yield return ("data type 999", d => Save(d, Mutated(m => BigInit(m).DataType = 999)));
        yield return ("data type undefined (0)", d => Save(d, Mutated(m => BigInit(m).DataType = 0)));
        yield return ("subgraphs nested 300 deep", d => Save(d, Nested(300, dangling: false)));
        yield return ("subgraphs nested 60 deep, dangling inside", d => Save(d, Nested(60, dangling: true)));

        // External data (item 1): each through the tiny decoder saved with model.onnx.data.
        yield return ("data: symlink to /etc/passwd", d => External(d, data => { File.Delete(data); File.CreateSymbolicLink(data, "/etc/passwd"); }));
        yield return ("data: symlink to /dev/zero", d => External(d, data => { File.Delete(data); File.CreateSymbolicLink(data, "/dev/zero"); }));
        yield return ("data: symlink to a copy outside", d => External(d, data =>
        {
            var outside = Path.Combine(Path.GetDirectoryName(d)!, "outside.data");
            File.Move(data, outside);
            File.CreateSymbolicLink(data, outside);
        }));
        yield return ("data: through a symlinked folder outside", d => External(d, data =>
        {
            var outside = Path.Combine(Path.GetDirectoryName(d)!, "outside");
            Directory.CreateDirectory(outside);
            File.Move(data, Path.Combine(outside, Path.GetFileName(data)));
            Directory.CreateSymbolicLink(Path.Combine(d, "sub"), outside);
        }, location: "sub/" + ModelName + ".data"));
        yield return ("data: a FIFO", d => External(d, data => { File.Delete(data); Mkfifo(data); }));
        yield return ("data: a socket", d => External(d, data =>
        {
            File.Delete(data);
            // Kept open for the test run: disposing the socket unlinks its file, which would make
            // this case the same as "data: missing".
            var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            s.Bind(new UnixDomainSocketEndPoint(data));
            lock (OpenSockets) OpenSockets.Add(s);
            Assert.Equal(FileKind.Socket, SafeFiles.Kind(data, followLinks: false));
        }));
        yield return ("data: a folder", d => External(d, data => { File.Delete(data); Directory.CreateDirectory(data); }));
        yield return ("data: missing", d => External(d, File.Delete));
        yield return ("data: dangling symlink", d => External(d, data => { File.Delete(data); File.CreateSymbolicLink(data, "/no/such/file"); }));
        yield return ("data: short file", d => External(d, data => { using var f = File.OpenWrite(data); f.SetLength(f.Length - 1); }));
        yield return ("data: empty file", d => External(d, data => File.WriteAllBytes(data, [])));
        yield return ("data: absolute location", d => External(d, _ => { }, location: "/etc/passwd"));
        yield return ("data: .. location", d => External(d, data => File.Copy(data, Path.Combine(Path.GetDirectoryName(d)!, "up.data")), location: "../up.data"));
        yield return ("data: offset past the end", d => External(d, _ => { }, entry: ("offset", "999999999")));
        yield return ("data: offset 2^62", d => External(d, _ => { }, entry: ("offset", (1L << 62).ToString(System.Globalization.CultureInfo.InvariantCulture))));
        yield return ("data: negative offset", d => External(d, _ => { }, entry: ("offset", "-4")));
        yield return ("data: offset not a number", d => External(d, _ => { }, entry: ("offset", "12abc")));
        yield return ("data: length not the shape's", d => External(d, _ => { }, entry: ("length", "4")));
        yield return ("data: no location", d => External(d, _ => { }, entry: ("location", null)));
        yield return ("model file is a FIFO", d => Mkfifo(Path.Combine(d, ModelName)));
        yield return ("model file is a folder", d => Directory.CreateDirectory(Path.Combine(d, ModelName)));
    }

    private static void Truncated(string d, byte[] bytes, int cut) => File.WriteAllBytes(Path.Combine(d, ModelName), bytes[..cut]);

    public static byte[] Random(int seed, int n)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    private static void Save(string d, ModelProto m) => File.WriteAllBytes(Path.Combine(d, ModelName), m.ToByteArray());

    private static ModelProto Mutated(Action<ModelProto> mutate)
    {
        var m = Valid();
        mutate(m);
        return m;
    }

    // The largest initializer (an fp32 weight matrix) of the tiny decoder.
    private static TensorProto BigInit(ModelProto m) => m.Graph.Initializer.OrderByDescending(t => t.RawData.Length).First();

    /// <summary>The cases whose external data file is not there at all (inspect lists their sites from the graph alone).</summary>
    internal static bool DataNotThere(string name) => name is "data: missing" or "data: dangling symlink";

    // If nodes nested depth deep (each then/else branch holds the next If); optionally a dangling read at the bottom.
    private static ModelProto Nested(int depth, bool dangling)
    {
        GraphProto Leaf(string name) => new()
        {
            Name = name,
            Node = { Node("Identity", "", [dangling ? "nowhere" : "x"], [name + "_y"]) },
            Output = { Tensor(name + "_y", TensorProto.Types.DataType.Float, 1) },
        };
        var g = Leaf("leaf");
        for (int i = 0; i < depth; i++)
        {
            var body = new GraphProto { Name = $"level{i}", Output = { Tensor($"level{i}_y", TensorProto.Types.DataType.Float, 1) } };
            var ifNode = Node("If", "", ["c"], [$"level{i}_y"], [new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = g },
                new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Leaf($"else{i}") }]);
            body.Node.Add(ifNode);
            g = body;
        }
        var main = new GraphProto
        {
            Name = "main",
            Input = { Tensor("c", TensorProto.Types.DataType.Bool), Tensor("x", TensorProto.Types.DataType.Float, 1) },
            Node = { Node("If", "", ["c"], ["y"], [new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = g },
                new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Leaf("else_main") }]) },
            Output = { Tensor("y", TensorProto.Types.DataType.Float, 1) },
        };
        return Model(main, ("", 17));
    }

    private static void External(string d, Action<string> breakData, string? location = null, (string Key, string? Value)? entry = null)
    {
        var path = Path.Combine(d, ModelName);
        TinyDecoderGenerator.Save(Valid(), path, externalData: true);
        var m = OnnxModelFile.Load(path);
        foreach (var t in ModelWriter.ExternalTensors(m))
        {
            if (location is not null) t.ExternalData.First(e => e.Key == "location").Value = location;
            if (entry is { } e)
            {
                var existing = t.ExternalData.FirstOrDefault(x => x.Key == e.Key);
                if (existing is not null) t.ExternalData.Remove(existing);
                if (e.Value is not null) t.ExternalData.Add(new StringStringEntryProto { Key = e.Key, Value = e.Value });
            }
        }
        File.WriteAllBytes(path, m.ToByteArray());
        breakData(path + ".data");
    }

    private static readonly List<Socket> OpenSockets = [];

    public static void Mkfifo(string path)
    {
        using var p = System.Diagnostics.Process.Start("mkfifo", [path]);
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
    }
}
