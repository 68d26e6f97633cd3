using InfLlmV2.Onnx.GraphTools;

namespace InfLlmV2.Onnx.Tests.Reliability;

/// <summary>
/// Output targets that are not regular files are refused (never replaced,
/// never written through), and a write that fails part-way (a full disk, injected) leaves nothing.
/// </summary>
[Collection(ReliabilityCollection.Name)]
public class OutputTargetTests
{
    private static string Model(TempDir dir, bool external)
    {
        var path = dir["m.onnx"];
        HostileFileTests.HostileModels_SaveValid(path, external);
        return path;
    }

    public static TheoryData<string> Targets() => ["/dev/null", "/dev/stdout", "fifo", "socketlike-symlink", "symlink-to-json"];

    private static string Target(TempDir dir, string kind)
    {
        switch (kind)
        {
            case "fifo":
                HostileModels.Mkfifo(dir["target"]);
                return dir["target"];
            case "socketlike-symlink":
                File.CreateSymbolicLink(dir["target"], "/dev/null");
                return dir["target"];
            case "symlink-to-json":
                File.WriteAllText(dir["real.json"], "{}");
                File.CreateSymbolicLink(dir["target"], dir["real.json"]);
                return dir["target"];
            default:
                return kind;
        }
    }

    [Theory]
    [MemberData(nameof(Targets))]
    public void ReportAndOutputTargets_ThatAreNotRegularFiles_AreRefused(string kind)
    {
        using var dir = new TempDir();
        var model = Model(dir, external: false);
        var target = Target(dir, kind);
        var kindBefore = SafeFiles.Kind(target, followLinks: false);
        var before = InProcessCli.Snapshot(dir.Path);
        foreach (var args in new[]
                 {
                     new[] { "rewrite", model, "-o", dir["out.onnx"], "--report", target },
                     ["rewrite", model, "-o", target, "--force"],
                     ["compare", model, model, "--json", target, "--prompt-len", "2", "--decode-steps", "0"],
                 })
        {
            var r = InProcessCli.Run(args);
            Assert.True(r.Code == 2 && r.OneErrorLine, $"{string.Join(" ", args)}: {r}");
            Assert.Equal(kindBefore, SafeFiles.Kind(target, followLinks: false));
            Assert.Equal(before, InProcessCli.Snapshot(dir.Path));
        }
    }

    [Fact]
    public void RunOutputs_ExistingFifoAmongOutputs_IsRefusedBeforeRunning()
    {
        using var dir = new TempDir();
        var model = IdentityModel.Save(dir.Path);
        Directory.CreateDirectory(dir["td"]);
        File.WriteAllBytes(Path.Combine(dir["td"], "input_0.pb"), Google.Protobuf.MessageExtensions.ToByteArray(IdentityModel.ValidInput()));
        Directory.CreateDirectory(dir["outs"]);
        HostileModels.Mkfifo(Path.Combine(dir["outs"], "output_0.pb"));
        var r = InProcessCli.Run("run", model, "--inputs", dir["td"], "--outputs", dir["outs"]);
        Assert.True(r.Code == 2 && r.OneErrorLine, r.ToString());
        Assert.Equal(FileKind.Fifo, SafeFiles.Kind(Path.Combine(dir["outs"], "output_0.pb"), followLinks: false));
    }

    [Theory]
    [InlineData(false, "out.onnx")]          // the model write fails
    [InlineData(true, "m.onnx.data")]        // the external data copy fails
    [InlineData(true, "report.json")]        // the report is staged before the model is saved: no model is left
    [InlineData(false, "report.json")]
    public void Rewrite_WriteFailsPartWay_LeavesNothing(bool external, string failing)
    {
        using var dir = new TempDir();
        var model = Model(dir, external);
        var before = InProcessCli.Snapshot(dir.Path);
        var outDir = Path.Combine(dir.Path, "new", "folder");
        var r = InProcessCli.RunWith(failing, "rewrite", model, "-o", Path.Combine(outDir, "out.onnx"), "--report", dir["report.json"]);
        Assert.True(r.Code == 2 && r.OneErrorLine, r.ToString());
        Assert.Contains("No space left on device", r.Err);
        Assert.Equal(before, InProcessCli.Snapshot(dir.Path));  // no model, data, report, temporary or folder
        // And the same command without the failure succeeds (the failure was the only obstacle).
        Assert.Equal(0, InProcessCli.Run("rewrite", model, "-o", Path.Combine(outDir, "out.onnx"), "--report", dir["report.json"]).Code);
    }

    [Theory]
    [InlineData("output_0.pb")]
    [InlineData("output_1.pb")]
    [InlineData("run.json")]
    public void RunOutputs_WriteFailsPartWay_LeavesNothing(string failing)
    {
        using var dir = new TempDir();
        var model = Path.Combine(dir.Path, "m.onnx");
        HostileFileTests.HostileModels_SaveValid(model, external: false);
        var td = Path.Combine(dir.Path, "td");
        Directory.CreateDirectory(td);
        foreach (var (name, t) in TinyInputs()) File.WriteAllBytes(Path.Combine(td, name), Google.Protobuf.MessageExtensions.ToByteArray(t));
        var before = InProcessCli.Snapshot(dir.Path);
        var r = InProcessCli.RunWith(failing, "run", model, "--inputs", td, "--outputs", dir["outs"], "--json", dir["run.json"]);
        Assert.True(r.Code == 2 && r.OneErrorLine, r.ToString());
        Assert.Equal(before, InProcessCli.Snapshot(dir.Path));
        var ok = InProcessCli.Run("run", model, "--inputs", td, "--outputs", dir["outs"], "--json", dir["run.json"]);
        Assert.True(ok.Code == 0, ok.ToString());
        Assert.True(File.Exists(Path.Combine(dir["outs"], "output_1.pb")));
    }

    // Inputs of the tiny decoder for one 3-token prefill.
    internal static IEnumerable<(string, GraphTools.Proto.TensorProto)> TinyInputs()
    {
        var m = HostileModels.Valid();
        int i = 0;
        foreach (var input in m.Graph.Input)
        {
            var dims = input.Type.TensorType.Shape.Dim.Select((d, axis) => d.HasDimValue ? d.DimValue
                : input.Name.Contains("past", StringComparison.Ordinal) && axis == 2 ? 0 : axis == 0 ? 1 : 3).ToArray();
            long count = dims.Aggregate(1L, (a, b) => a * b);
            var type = (GraphTools.Proto.TensorProto.Types.DataType)input.Type.TensorType.ElemType;
            var t = type switch
            {
                GraphTools.Proto.TensorProto.Types.DataType.Int64 => TensorProtos.Int64(input.Name, dims, Enumerable.Repeat(1L, (int)count).ToArray()),
                GraphTools.Proto.TensorProto.Types.DataType.Int32 => TensorProtos.Int32(input.Name, dims, Enumerable.Repeat(1, (int)count).ToArray()),
                _ => TensorProtos.Float(input.Name, dims, new float[count]),
            };
            yield return ($"input_{i++}.pb", t);
        }
    }
}
