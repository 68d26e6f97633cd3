using System.Text.Json;
using InfLlmV2.Onnx.Cli;

namespace InfLlmV2.Onnx.Tests.Reliability;

/// <summary>Every JSON document: <c>--json FILE</c> and <c>--json -</c> give the same document with a schema_version; --verbose adds stack traces to internal errors only.</summary>
[Collection(ReliabilityCollection.Name)]
public class JsonOutputTests(ChatFolders folders) : IClassFixture<ChatFolders>
{
    private static JsonElement Parse(string text, string what)
    {
        using var doc = JsonDocument.Parse(text);
        var root = doc.RootElement.Clone();
        Assert.True(root.ValueKind == JsonValueKind.Object, what);
        Assert.Equal(ReportFile.SchemaVersion, root.GetProperty("schema_version").GetInt32());
        return root;
    }

    private static string[] Keys(JsonElement e) => e.EnumerateObject().Select(p => p.Name).ToArray();

    public static TheoryData<string> Commands => ["run", "compare", "inspect", "rewrite"];

    [Theory]
    [MemberData(nameof(Commands))]
    public void JsonToFileAndToStdout_SameDocument_WithSchemaVersion(string command)
    {
        using var dir = new TempDir();
        var model = Path.Combine(folders.NoTemplate, "model.onnx");
        string[] Args(string target) => command switch
        {
            "run" => ["run", RunModel(dir), "--inputs", dir["td"], "--json", target],
            "compare" => ["compare", model, Path.Combine(folders.Rewritten, "model.infllmv2.onnx"), "--prompt-len", "4", "--decode-steps", "1", "--json", target],
            "inspect" => ["inspect", model, "--json", target],
            _ => ["rewrite", model, "-o", dir[$"rw{target.Length}.onnx"], "--json", target],
        };
        var toFile = InProcessCli.Run(Args(dir["doc.json"]));
        Assert.True(toFile.Code == 0, toFile.ToString());
        var fromFile = Parse(File.ReadAllText(dir["doc.json"]), command);
        var toStdout = InProcessCli.Run(Args("-"));
        Assert.True(toStdout.Code == 0, toStdout.ToString());
        var fromStdout = Parse(toStdout.Out, command);  // stdout holds the document alone: the console text went to stderr
        Assert.Equal(Keys(fromFile), Keys(fromStdout));
        Assert.False(File.Exists("-"));
    }

    [Fact]
    public void InspectJsonSwitch_StillPrintsToStdout()
    {
        var r = InProcessCli.Run("inspect", Path.Combine(folders.NoTemplate, "model.onnx"), "--json");
        Assert.True(r.Code == 0, r.ToString());
        Assert.True(Parse(r.Out, "inspect").GetProperty("sites").GetArrayLength() > 0);
    }

    [Fact]
    public void Verbose_AddsTheStackTrace_ToInternalErrorsOnly()
    {
        var (stdout, stderr) = (Console.Out, Console.Error);
        try
        {
            foreach (bool verbose in new[] { false, true })
            {
                var err = new StringWriter();
                Console.SetError(err);
                CommandRunner.Verbose = verbose;
                Assert.Equal(ExitCodes.BadInput, CommandRunner.Guard(() => throw new KeyNotFoundException("planted")));
                var lines = err.ToString().Trim().Split('\n');
                Assert.StartsWith("error: " + CommandRunner.InternalErrorPrefix, lines[0]);
                Assert.Equal(verbose, lines.Length > 2 && lines.Any(l => l.TrimStart().StartsWith("at ", StringComparison.Ordinal)));
                err = new StringWriter();
                Console.SetError(err);
                CommandRunner.Guard(() => throw new InvalidDataException("a user error"));
                Assert.Single(err.ToString().Trim().Split('\n'));
                // A span or index out of range is ours (as the bench's 2 GiB cache once was), not the input's.
                err = new StringWriter();
                Console.SetError(err);
                Assert.Equal(ExitCodes.BadInput, CommandRunner.Guard(() => throw new ArgumentOutOfRangeException()));
                Assert.StartsWith("error: " + CommandRunner.InternalErrorPrefix + " ArgumentOutOfRangeException", err.ToString());
                err = new StringWriter();
                Console.SetError(err);
                CommandRunner.Guard(() => throw new ArgumentException("a bad option value"));
                Assert.Equal("error: a bad option value", err.ToString().Trim());
            }
        }
        finally
        {
            CommandRunner.Verbose = false;
            Console.SetOut(stdout);
            Console.SetError(stderr);
        }
        var r = InProcessCli.Run("--verbose", "generate", "/nonexistent-model-folder", "--prompt-ids", "1");
        Assert.True(r.Code == 2 && r.OneErrorLine, r.ToString());
    }

    private static string RunModel(TempDir dir)
    {
        var model = dir["m.onnx"];
        if (!File.Exists(model))
        {
            HostileFileTests.HostileModels_SaveValid(model, external: false);
            Directory.CreateDirectory(dir["td"]);
            foreach (var (name, t) in OutputTargetTests.TinyInputs())
                File.WriteAllBytes(Path.Combine(dir["td"], name), Google.Protobuf.MessageExtensions.ToByteArray(t));
        }
        return model;
    }
}
