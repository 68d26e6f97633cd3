using InfLlmV2.Onnx.GraphTools;
using Xunit.Abstractions;

namespace InfLlmV2.Onnx.Tests.Reliability;

/// <summary>
/// Every hostile model folder through inspect, rewrite and run gives exit 2, one stderr
/// line, no output file, nothing left behind, and the input folder byte-identical.
/// </summary>
[Collection(ReliabilityCollection.Name)]
public class HostileFileTests(ITestOutputHelper log)
{
    [Fact]
    public void EveryHostileModel_EveryCommand_ExitsTwo_OneLine_NoOutput_InputUntouched()
    {
        var cases = HostileModels.All().ToList();
        int runs = 0;
        var failures = new List<string>();
        using var root = new TempDir();
        for (int c = 0; c < cases.Count; c++)
        {
            var (name, write) = cases[c];
            var caseDir = Path.Combine(root.Path, c.ToString(System.Globalization.CultureInfo.InvariantCulture));
            var input = Path.Combine(caseDir, "in");
            var work = Path.Combine(caseDir, "work");
            var testData = Path.Combine(caseDir, "td");
            Directory.CreateDirectory(input);
            Directory.CreateDirectory(work);
            Directory.CreateDirectory(testData);
            write(input);
            var model = Path.Combine(input, HostileModels.ModelName);
            var before = InProcessCli.Snapshot(caseDir);
            foreach (var args in new[]
                     {
                         new[] { "inspect", model },
                         ["inspect", model, "--json"],
                         ["rewrite", model, "-o", Path.Combine(work, "out.onnx"), "--report", Path.Combine(work, "report.json")],
                         ["rewrite", model, "-o", Path.Combine(work, "sub", "out.onnx"), "--force"],
                         ["run", model, "--inputs", testData, "--outputs", Path.Combine(work, "outputs"), "--json", Path.Combine(work, "run.json")],
                     })
            {
                runs++;
                var r = InProcessCli.Run(args);
                var after = InProcessCli.Snapshot(caseDir);
                // inspect reads the graph alone: external data that is not there (missing, or a
                // dangling link) is named in a note, and the sites are listed (exit 0).
                bool graphAlone = args[0] == "inspect" && HostileModels.DataNotThere(name);
                if (graphAlone)
                {
                    if (r.Code != 0 || r.Hung || !r.Out.Contains(HostileModels.ModelName + ".data", StringComparison.Ordinal))
                        failures.Add($"{name}: {args[0]} (graph alone, exit 0 naming the data file expected): {r}");
                }
                else if (r.Code != 2 || !r.OneErrorLine || r.Hung)
                    failures.Add($"{name}: {args[0]}: {r}");
                else if (!after.SequenceEqual(before))
                    failures.Add($"{name}: {args[0]}: files changed or left behind: {InProcessCli.Describe(before, after)}");
            }
        }
        log.WriteLine($"hostile models: {cases.Count} files, {runs} command runs, {failures.Count} failures");
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Fact]
    public void ValidModel_Control_RewritesWithExitZero()
    {
        // The suite's base model is valid: the refusals above come from the damage, not the base.
        using var dir = new TempDir();
        HostileModels_SaveValid(dir["m.onnx"], external: true);
        var r = InProcessCli.Run("rewrite", dir["m.onnx"], "-o", Path.Combine(dir["out"], "r.onnx"), "--report", dir["r.json"]);
        Assert.True(r.Code == 0, r.ToString());
        Assert.True(File.Exists(Path.Combine(dir["out"], "r.onnx.data")) || File.Exists(Path.Combine(dir["out"], "m.onnx.data")));
        Assert.Equal(0, InProcessCli.Run("inspect", dir["m.onnx"]).Code);
    }

    internal static void HostileModels_SaveValid(string path, bool external) =>
        InfLlmV2.Onnx.Models.TinyDecoderGenerator.Save(HostileModels.Valid(), path, external);

    [Fact]
    public void GqaWith2To40Heads_IsNotRewritable_AndSaysWhy()
    {
        using var dir = new TempDir();
        var m = HostileModels.Valid();
        var gqa = m.Graph.Node.First(n => n.OpType == "GroupQueryAttention");
        gqa.Attribute.First(a => a.Name == "num_heads").I = 1L << 40;
        OnnxModelFile.Save(m, dir["m.onnx"]);
        var r = InProcessCli.Run("inspect", dir["m.onnx"]);
        Assert.Equal(0, r.Code);
        Assert.DoesNotContain("H=0", r.Out);
        Assert.Contains("num_heads = 1099511627776 is outside [1, 4096]", r.Out);
        Assert.DoesNotContain("-> rewritable", r.Out.Split('\n').First(l => l.Contains(gqa.Name, StringComparison.Ordinal)));
    }

    [Fact]
    public void TestDataTensors_Hostile_RunExitsTwo()
    {
        using var dir = new TempDir();
        var model = IdentityModel.Save(dir.Path);
        int n = 0;
        var failures = new List<string>();
        foreach (var (name, write) in IdentityModel.HostileTensors())
        {
            var td = Path.Combine(dir.Path, $"td{n++}");
            Directory.CreateDirectory(td);
            write(td);
            var before = InProcessCli.Snapshot(dir.Path);
            var r = InProcessCli.Run("run", model, "--inputs", td, "--outputs", dir["outs"]);
            if (r.Code != 2 || !r.OneErrorLine) failures.Add($"{name}: {r}");
            else if (!InProcessCli.Snapshot(dir.Path).SequenceEqual(before)) failures.Add($"{name}: files changed");
        }
        log.WriteLine($"hostile test-data tensors: {n} folders, {failures.Count} failures");
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }
}
