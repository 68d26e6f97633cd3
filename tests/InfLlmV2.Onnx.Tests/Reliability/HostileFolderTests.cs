using System.Net.Sockets;
using System.Text;
using InfLlmV2.Onnx.GraphTools;
using Xunit.Abstractions;

namespace InfLlmV2.Onnx.Tests.Reliability;

/// <summary>
/// Folders: hostile members of an onnxruntime-genai folder (links leading outside, to
/// devices, dangling, to folders; FIFOs, sockets, names that are not UTF-8; a hostile
/// genai_config.json), outputs that alias their inputs through links, links inside output folders,
/// the demo's --output-dir, and temporaries left by an interrupt. Each case: exit 2 with one line
/// naming the file, nothing outside read into the output, no input changed, nothing left behind.
/// </summary>
[Collection(ReliabilityCollection.Name)]
public class HostileFolderTests(ITestOutputHelper log)
{
    private const string Secret = "SECRET-OUTSIDE-THE-FOLDER";

    /// <summary>A genai folder: the tiny GQA decoder (external data), genai_config.json, a tokenizer-like file.</summary>
    internal static string GenAiFolder(TempDir dir, string name = "in", string decoder = "model.onnx")
    {
        var folder = dir[name];
        var decoderPath = Path.Combine(folder, decoder);
        Directory.CreateDirectory(Path.GetDirectoryName(decoderPath)!);
        HostileFileTests.HostileModels_SaveValid(decoderPath, external: true);
        File.WriteAllText(Path.Combine(folder, "genai_config.json"),
            "{\"model\": {\"type\": \"llama\", \"decoder\": {\"filename\": \"" + decoder + "\", \"session_options\": {}}, \"context_length\": 64}}");
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), "{}");
        return folder;
    }

    // .NET unlinks a bound Unix socket's file when the socket is disposed: the sockets stay open.
    private static readonly List<Socket> OpenSockets = [];

    /// <summary>Creates a Unix domain socket file at <paramref name="path"/> (kept bound for the test run).</summary>
    internal static void Socket(string path)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        s.Bind(new UnixDomainSocketEndPoint(path));
        lock (OpenSockets) OpenSockets.Add(s);
        Assert.Equal(FileKind.Socket, SafeFiles.Kind(path, followLinks: false));
    }

    private static void Run(string program, params string[] args)
    {
        using var p = System.Diagnostics.Process.Start(program, args);
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
    }

    /// <summary>Hostile members: (name, what the error line must name, how to plant it into the folder given the outside file).</summary>
    public static IEnumerable<(string Name, string Named, Action<string, string> Plant)> HostileMembers()
    {
        yield return ("link to a file outside", "notes.txt", (f, outside) => File.CreateSymbolicLink(Path.Combine(f, "notes.txt"), outside));
        yield return ("link padded with slashes to the target's size", "pad.txt", (f, outside) =>
            File.CreateSymbolicLink(Path.Combine(f, "pad.txt"), new string('/', 64) + outside.TrimStart('/')));
        yield return ("link to /dev/urandom", "random.bin", (f, _) => File.CreateSymbolicLink(Path.Combine(f, "random.bin"), "/dev/urandom"));
        yield return ("link to /dev/zero", "zero.bin", (f, _) => File.CreateSymbolicLink(Path.Combine(f, "zero.bin"), "/dev/zero"));
        yield return ("dangling link", "gone.txt", (f, _) => File.CreateSymbolicLink(Path.Combine(f, "gone.txt"), Path.Combine(f, "does-not-exist")));
        yield return ("link through ../ to outside", "up.txt", (f, outside) => File.CreateSymbolicLink(Path.Combine(f, "up.txt"), Path.Combine("..", Path.GetFileName(outside))));
        yield return ("link to a folder outside", "linked", (f, outside) => Directory.CreateSymbolicLink(Path.Combine(f, "linked"), Path.GetDirectoryName(outside)!));
        yield return ("link to a folder inside", "alias", (f, _) =>
        {
            Directory.CreateDirectory(Path.Combine(f, "real"));
            Directory.CreateSymbolicLink(Path.Combine(f, "alias"), Path.Combine(f, "real"));
        }
        );
        yield return ("link in a subfolder to outside", "sub/deep.txt", (f, outside) =>
        {
            Directory.CreateDirectory(Path.Combine(f, "sub"));
            File.CreateSymbolicLink(Path.Combine(f, "sub", "deep.txt"), outside);
        }
        );
        yield return ("FIFO", "pipe", (f, _) => HostileModels.Mkfifo(Path.Combine(f, "pipe")));
        yield return ("FIFO in a subfolder", "sub/pipe", (f, _) =>
        {
            Directory.CreateDirectory(Path.Combine(f, "sub"));
            HostileModels.Mkfifo(Path.Combine(f, "sub", "pipe"));
        }
        );
        yield return ("socket", "sock", (f, _) => Socket(Path.Combine(f, "sock")));
        yield return ("name that is not UTF-8", "bad", (f, _) => Run("bash", "-c", $"touch \"{f}/bad$(printf '\\377')name\""));
        yield return ("genai_config.json a link outside", "genai_config.json", (f, outside) =>
        {
            File.Copy(Path.Combine(f, "genai_config.json"), outside + ".json");
            File.Delete(Path.Combine(f, "genai_config.json"));
            File.CreateSymbolicLink(Path.Combine(f, "genai_config.json"), outside + ".json");
        }
        );
        yield return ("genai_config.json a FIFO", "genai_config.json", (f, _) =>
        {
            File.Delete(Path.Combine(f, "genai_config.json"));
            HostileModels.Mkfifo(Path.Combine(f, "genai_config.json"));
        }
        );
        yield return ("genai_config.json a link to /dev/zero", "genai_config.json", (f, _) =>
        {
            File.Delete(Path.Combine(f, "genai_config.json"));
            File.CreateSymbolicLink(Path.Combine(f, "genai_config.json"), "/dev/zero");
        }
        );
        yield return ("genai_config.json a folder", "genai_config.json", (f, _) =>
        {
            File.Delete(Path.Combine(f, "genai_config.json"));
            Directory.CreateDirectory(Path.Combine(f, "genai_config.json"));
        }
        );
        yield return ("genai_config.json 1 GB sparse", "genai_config.json", (f, _) =>
        {
            using var s = new FileStream(Path.Combine(f, "genai_config.json"), FileMode.Create);
            s.SetLength(1L << 30);
        }
        );
        yield return ("genai_config.json with duplicate keys", "genai_config.json", (f, _) =>
            File.WriteAllText(Path.Combine(f, "genai_config.json"), """{"model": {"decoder": {"filename": "model.onnx"}, "decoder": {"filename": "x.onnx"}}}"""));
        yield return ("genai_config.json model is an array", "genai_config.json", (f, _) =>
            File.WriteAllText(Path.Combine(f, "genai_config.json"), """{"model": [1, 2]}"""));
        yield return ("genai_config.json filename a number", "filename", (f, _) =>
            File.WriteAllText(Path.Combine(f, "genai_config.json"), """{"model": {"decoder": {"filename": 7}}}"""));
        yield return ("genai_config.json filename with NUL", "filename", (f, _) =>
            File.WriteAllText(Path.Combine(f, "genai_config.json"), """{"model": {"decoder": {"filename": "model.onnx\u0000x"}}}"""));
        yield return ("genai_config.json filename absolute", "filename", (f, _) =>
            File.WriteAllText(Path.Combine(f, "genai_config.json"), """{"model": {"decoder": {"filename": "/etc/passwd"}}}"""));
        yield return ("genai_config.json filename ../", "filename", (f, _) =>
            File.WriteAllText(Path.Combine(f, "genai_config.json"), """{"model": {"decoder": {"filename": "../model.onnx"}}}"""));
        yield return ("decoder a link to a model outside", "filename", (f, outside) =>
        {
            File.Copy(Path.Combine(f, "model.onnx"), outside + ".onnx");
            File.WriteAllText(Path.Combine(f, "genai_config.json"), """{"model": {"decoder": {"filename": "outside.onnx"}}}""");
            File.CreateSymbolicLink(Path.Combine(f, "outside.onnx"), outside + ".onnx");
        }
        );
        yield return ("genai_config.json not UTF-8 JSON", "genai_config.json", (f, _) =>
            File.WriteAllBytes(Path.Combine(f, "genai_config.json"), [0x7B, 0xFF, 0xFE, 0x7D]));
    }

    [Fact]
    public void GenAiFolder_HostileMembers_AreRefusedNamingTheMember_AndNothingOutsideIsCopied()
    {
        var failures = new List<string>();
        int cases = 0;
        foreach (var (name, named, plant) in HostileMembers())
        {
            using var dir = new TempDir();
            var outside = dir["outside"];
            File.WriteAllText(outside, Secret);
            var input = GenAiFolder(dir);
            plant(input, outside);
            cases++;
            var before = InProcessCli.Snapshot(dir.Path);
            foreach (var args in new[]
                     {
                         new[] { "rewrite", "--genai-folder", input, "-o", dir["out"] },
                         ["rewrite", Path.Combine(input, "model.onnx"), "-o", Path.Combine(dir["out2"], "model.onnx"), "--report", dir["r.json"]],
                     })
            {
                var r = InProcessCli.Run(args);
                var line = r.Err.Trim();
                if (r.Hung || r.Code != 2 || !r.OneErrorLine) failures.Add($"{name} ({args[1]}): {r}");
                else if (!line.Contains(named, StringComparison.Ordinal)) failures.Add($"{name} ({args[1]}): the error does not name '{named}': {line}");
                var after = InProcessCli.Snapshot(dir.Path);
                if (!after.SequenceEqual(before)) failures.Add($"{name} ({args[1]}): files changed: {InProcessCli.Describe(before, after)}");
            }
        }
        log.WriteLine($"hostile genai folder members: {cases} folders x 2 runs, {failures.Count} failures");
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Fact]
    public void GenAiFolder_Control_LinksInsideAreCopiedAsFiles()
    {
        using var dir = new TempDir();
        var input = GenAiFolder(dir);
        File.WriteAllText(Path.Combine(input, "vocab.txt"), "inside");
        File.CreateSymbolicLink(Path.Combine(input, "vocab-link.txt"), "vocab.txt");
        var r = InProcessCli.Run("rewrite", "--genai-folder", input, "-o", dir["out"]);
        Assert.True(r.Code == 0, r.ToString());
        Assert.Equal(FileKind.Regular, SafeFiles.Kind(Path.Combine(dir["out"], "vocab-link.txt"), followLinks: false));
        Assert.Equal("inside", File.ReadAllText(Path.Combine(dir["out"], "vocab-link.txt")));
    }

    [Fact]
    public void GenAiFolder_DecoderInASubfolder_WritesTheFolderAtTheTopOfTheOutput()
    {
        using var dir = new TempDir();
        var input = GenAiFolder(dir, decoder: "sub/model.onnx");
        var r = InProcessCli.Run("rewrite", "--genai-folder", input, "-o", dir["out"]);
        Assert.True(r.Code == 0, r.ToString());
        Assert.True(File.Exists(Path.Combine(dir["out"], "genai_config.json")), "genai_config.json not at the top of OUT");
        Assert.True(File.Exists(Path.Combine(dir["out"], "sub", "model.onnx")));
        Assert.True(File.Exists(Path.Combine(dir["out"], "tokenizer_config.json")));
        Assert.False(File.Exists(Path.Combine(dir["out"], "sub", "genai_config.json")), "the folder was written into OUT/sub/");
        Assert.Contains("\"sub/model.onnx\"", File.ReadAllText(Path.Combine(dir["out"], "genai_config.json")));
    }

    public static TheoryData<string> AliasCases() => ["genai -o link to IN", "genai -o link to IN --force", "genai -o IN/sub", "genai -o parent of IN",
        "genai -o bind-like hard path", "plain rewrite into a link to IN's folder", "run --outputs link to --inputs"];

    [Theory]
    [MemberData(nameof(AliasCases))]
    public void OutputsAliasingInputs_ThroughLinks_AreRefusedOrWriteNoInput(string kind)
    {
        using var dir = new TempDir();
        var input = GenAiFolder(dir, "a/in");
        Directory.CreateSymbolicLink(dir["link"], input);
        string[] args = kind switch
        {
            "genai -o link to IN" => ["rewrite", "--genai-folder", input, "-o", dir["link"]],
            "genai -o link to IN --force" => ["rewrite", "--genai-folder", input, "-o", dir["link"], "--force"],
            "genai -o IN/sub" => ["rewrite", "--genai-folder", input, "-o", Path.Combine(dir["link"], "sub"), "--force"],
            "genai -o parent of IN" => ["rewrite", "--genai-folder", input, "-o", dir["a"], "--force"],
            "genai -o bind-like hard path" => ["rewrite", "--genai-folder", dir["link"] + "/", "-o", input + "/./", "--force"],
            "plain rewrite into a link to IN's folder" => ["rewrite", Path.Combine(input, "model.onnx"), "-o", Path.Combine(dir["link"], "rw.onnx")],
            _ => RunAlias(dir),
        };
        var inputBefore = InProcessCli.Snapshot(kind.StartsWith("run", StringComparison.Ordinal) ? dir["td"] : input);
        var r = InProcessCli.Run(args);
        var inputAfter = InProcessCli.Snapshot(kind.StartsWith("run", StringComparison.Ordinal) ? dir["td"] : input);
        if (kind == "plain rewrite into a link to IN's folder")
        {
            // Allowed: only the model is written beside the input (as into IN itself); the input's files are untouched.
            Assert.True(r.Code == 0, r.ToString());
            Assert.Contains("only the model is written", r.Out);
            inputAfter.Remove("rw.onnx");
        }
        else
        {
            Assert.True(r.Code == 2 && r.OneErrorLine, r.ToString());
        }
        Assert.True(inputBefore.SequenceEqual(inputAfter), $"{kind}: the input changed: {InProcessCli.Describe(inputBefore, inputAfter)}");
    }

    private static string[] RunAlias(TempDir dir)
    {
        var model = IdentityModel.Save(dir.Path);
        Directory.CreateDirectory(dir["td"]);
        OnnxTestData.WriteTensor(IdentityModel.ValidInput(), Path.Combine(dir["td"], "input_0.pb"));
        var expected = IdentityModel.ValidInput();
        expected.Name = "y";
        OnnxTestData.WriteTensor(expected, Path.Combine(dir["td"], "output_0.pb"));
        Directory.CreateSymbolicLink(dir["tdlink"], dir["td"]);
        return ["run", model, "--inputs", dir["td"], "--outputs", dir["tdlink"]];
    }

    [Theory]
    [InlineData("subfolder link", false)]
    [InlineData("subfolder link", true)]
    [InlineData("file link", false)]
    [InlineData("file link", true)]
    public void OutputFolder_WithLinksInside_IsNeverWrittenThrough(string link, bool force)
    {
        using var dir = new TempDir();
        var input = GenAiFolder(dir);
        Directory.CreateDirectory(Path.Combine(input, "sub"));
        File.WriteAllText(Path.Combine(input, "sub", "extra.txt"), "x");
        Directory.CreateDirectory(dir["elsewhere"]);
        File.WriteAllText(dir["victim.txt"], Secret);
        Directory.CreateDirectory(dir["out"]);
        if (link == "subfolder link") Directory.CreateSymbolicLink(Path.Combine(dir["out"], "sub"), dir["elsewhere"]);
        else File.CreateSymbolicLink(Path.Combine(dir["out"], "tokenizer_config.json"), dir["victim.txt"]);
        var before = InProcessCli.Snapshot(dir.Path);
        string[] args = force ? ["rewrite", "--genai-folder", input, "-o", dir["out"], "--force"] : ["rewrite", "--genai-folder", input, "-o", dir["out"]];
        var r = InProcessCli.Run(args);
        Assert.True(r.Code == 2 && r.OneErrorLine, r.ToString());
        Assert.Contains(link == "subfolder link" ? "sub" : "tokenizer_config.json", r.Err);
        Assert.Equal(Secret, File.ReadAllText(dir["victim.txt"]));
        Assert.Empty(Directory.GetFileSystemEntries(dir["elsewhere"]));
        Assert.Equal(before, InProcessCli.Snapshot(dir.Path));
    }

    [Fact]
    public void Demo_OutputDir_NeverWritesThroughLinks_NorReplacesUserFilesWithoutForce()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["victim.txt"], Secret);
        // A tokenizer.json link to an outside file: refused, with or without --force.
        Directory.CreateDirectory(dir["d1"]);
        File.CreateSymbolicLink(Path.Combine(dir["d1"], "tokenizer.json"), dir["victim.txt"]);
        foreach (var extra in new[] { Array.Empty<string>(), ["--force"] })
        {
            var r = InProcessCli.Run(["demo", "--output-dir", dir["d1"], "--long-prompt", "64", .. extra]);
            Assert.True(r.Code == 2 && r.OneErrorLine, r.ToString());
            Assert.Contains("tokenizer.json", r.Err);
        }
        Assert.Equal(Secret, File.ReadAllText(dir["victim.txt"]));
        Assert.Equal(FileKind.SymbolicLink, SafeFiles.Kind(Path.Combine(dir["d1"], "tokenizer.json"), followLinks: false));

        // A user's file of the same name: kept without --force, replaced with it; the demo's own files are replaced on a rerun.
        Directory.CreateDirectory(dir["d2"]);
        File.WriteAllText(Path.Combine(dir["d2"], "tiny-decoder.onnx"), "my own model");
        var refused = InProcessCli.Run("demo", "--output-dir", dir["d2"], "--long-prompt", "64");
        Assert.True(refused.Code == 2 && refused.OneErrorLine && refused.Err.Contains("--force"), refused.ToString());
        Assert.Equal("my own model", File.ReadAllText(Path.Combine(dir["d2"], "tiny-decoder.onnx")));
        Assert.Equal(0, InProcessCli.Run("demo", "--output-dir", dir["d2"], "--long-prompt", "64", "--force").Code);
        Assert.Equal(0, InProcessCli.Run("demo", "--output-dir", dir["d2"], "--long-prompt", "64").Code);
        File.WriteAllText(Path.Combine(dir["d2"], "tokenizer.json"), "edited by the user");
        Assert.Equal(2, InProcessCli.Run("demo", "--output-dir", dir["d2"], "--long-prompt", "64").Code);
        Assert.Equal("edited by the user", File.ReadAllText(Path.Combine(dir["d2"], "tokenizer.json")));
    }

    [Theory]
    [InlineData("tiny-decoder.onnx.data")]
    [InlineData("tiny-decoder.onnx")]
    [InlineData("tiny-decoder.infllmv2.onnx")]
    [InlineData("tokenizer.json")]
    public void Demo_FullDisk_LeavesNoPartialFile(string failing)
    {
        using var dir = new TempDir();
        var r = InProcessCli.RunWith(failing, "demo", "--output-dir", dir["d"], "--long-prompt", "64");
        Assert.True(r.Code == 2 && r.OneErrorLine, r.ToString());
        Assert.Contains("No space left on device", r.Err);
        Assert.Empty(InProcessCli.Snapshot(dir["d"]));
    }

    [Fact]
    public void TestDataFolder_MemberLinkingOutside_IsRefused()
    {
        using var dir = new TempDir();
        var model = IdentityModel.Save(dir.Path);
        Directory.CreateDirectory(dir["td"]);
        OnnxTestData.WriteTensor(IdentityModel.ValidInput(), dir["outside.pb"]);
        File.CreateSymbolicLink(Path.Combine(dir["td"], "input_0.pb"), dir["outside.pb"]);
        var r = InProcessCli.Run("run", model, "--inputs", dir["td"]);
        Assert.True(r.Code == 2 && r.OneErrorLine, r.ToString());
        Assert.Contains("input_0.pb", r.Err);
        Assert.Contains("outside", r.Err);
    }

    public static TheoryData<string> OrtOpenedFiles() => ["data FIFO", "data link to /dev/zero", "data link outside", "model FIFO", "model link to /dev/zero"];

    [Theory]
    [MemberData(nameof(OrtOpenedFiles))]
    public void FilesOrtOpensItself_AreCheckedBeforeTheSession(string kind)
    {
        // generate and compare hand the model to ONNX Runtime, which opens it and its external data itself.
        using var dir = new TempDir();
        var model = dir["m.onnx"];
        HostileFileTests.HostileModels_SaveValid(model, external: true);
        File.WriteAllText(dir["outside.data"], Secret);
        var data = model + ".data";
        switch (kind)
        {
            case "data FIFO": File.Delete(data); HostileModels.Mkfifo(data); break;
            case "data link to /dev/zero": File.Delete(data); File.CreateSymbolicLink(data, "/dev/zero"); break;
            case "data link outside":
                Directory.CreateDirectory(dir["sub"]);
                File.Move(model, dir["sub/m.onnx"]);
                File.Move(data, dir["outside.data"], overwrite: true);
                File.CreateSymbolicLink(dir["sub/m.onnx.data"], dir["outside.data"]);
                model = dir["sub/m.onnx"];
                break;
            case "model FIFO": File.Delete(model); HostileModels.Mkfifo(model); break;
            default: File.Delete(model); File.CreateSymbolicLink(model, "/dev/zero"); break;
        }
        foreach (var args in new[]
                 {
                     new[] { "generate", model, "--prompt-ids", "1,2", "--max-new-tokens", "1" },
                     ["compare", model, model, "--prompt-len", "4", "--decode-steps", "0"],
                 })
        {
            var r = InProcessCli.Run(args);
            Assert.True(r.Code == 2 && r.OneErrorLine, $"{kind} ({args[0]}): {r}");
            Assert.Contains(kind.StartsWith("data", StringComparison.Ordinal) ? "m.onnx.data" : "m.onnx", r.Err);
            Assert.DoesNotContain("[ErrorCode:", r.Err);  // refused by our check, before ONNX Runtime opened anything
        }
    }

    [Fact]
    public void Interrupt_DeletesTemporariesNotYetRenamed()
    {
        using var dir = new TempDir();
        var temp = SafeFiles.WriteTemporary(dir["out.bin"], s => s.Write(Encoding.UTF8.GetBytes("partial")));
        Assert.True(File.Exists(temp));
        Assert.Contains(temp, SafeFiles.PendingTemporaries);
        Assert.True(SafeFiles.DeleteLiveTemporaries() >= 1);  // what SIGINT/SIGTERM/SIGHUP run before the process ends
        Assert.False(File.Exists(temp));
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
    }

    [Fact]
    public void Interrupt_OfARealProcess_LeavesNoTemporary()
    {
        // A child `rewrite` stopped by SIGTERM while its temporary is open (the write seam holds it there).
        using var dir = new TempDir();
        HostileFileTests.HostileModels_SaveValid(dir["m.onnx"], external: false);
        var psi = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "infllmv2.dll"));
        foreach (var a in new[] { "rewrite", dir["m.onnx"], "-o", dir["out.onnx"] }) psi.ArgumentList.Add(a);
        psi.Environment[SafeFiles.PauseWriteVariable] = "out.onnx";
        using var p = System.Diagnostics.Process.Start(psi)!;
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!Directory.GetFiles(dir.Path, ".out.onnx.*.tmp").Any() && DateTime.UtcNow < deadline && !p.HasExited) Thread.Sleep(50);
        Assert.True(Directory.GetFiles(dir.Path, ".out.onnx.*.tmp").Any(), "the temporary never appeared");
        Run("kill", "-TERM", p.Id.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.True(p.WaitForExit(30_000));
        Assert.Empty(Directory.GetFiles(dir.Path, ".*.tmp"));
        Assert.False(File.Exists(dir["out.onnx"]));
    }
}

/// <summary>The one alias check itself: links, hard links, `./` spellings and nesting.</summary>
public class AliasCheckTests
{
    [Fact]
    public void SameFile_And_SameOrInside_SeeThroughLinksAndHardLinks()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir["a/b"]);
        File.WriteAllText(dir["a/f"], "x");
        Directory.CreateSymbolicLink(dir["link"], dir["a"]);
        using (var p = System.Diagnostics.Process.Start("ln", [dir["a/f"], dir["hard"]])) p.WaitForExit();
        Assert.True(SafeFiles.SameFile(dir["a"], dir["link"]));
        Assert.True(SafeFiles.SameFile(dir["a"], dir["a"] + "/./b/.."));
        Assert.True(SafeFiles.SameFile(dir["a/f"], dir["hard"]));  // device and inode
        Assert.True(SafeFiles.SameFile(dir["a/f"], Path.Combine(dir["link"], "f")));
        Assert.False(SafeFiles.SameFile(dir["a"], dir["a/b"]));
        Assert.True(SafeFiles.SameOrInside(Path.Combine(dir["link"], "b", "not-yet"), dir["a"]));  // a path that does not exist yet
        Assert.False(SafeFiles.SameOrInside(dir["a"], Path.Combine(dir["link"], "b")));
        Assert.Throws<IOException>(() => SafeFiles.CheckApart(dir["a"], Path.Combine(dir["link"], "b", "out"), "output", nested: true));
        Assert.Throws<IOException>(() => SafeFiles.CheckApart(dir["a/b"], dir["link"], "output", nested: true));
        SafeFiles.CheckApart(dir["a/b"], dir["elsewhere"], "output", nested: true);
    }

    [Fact]
    public void OpenRegular_RefusesWithoutBlocking_AndCapsTheSize()
    {
        using var dir = new TempDir();
        HostileModels.Mkfifo(dir["fifo"]);
        File.WriteAllText(dir["small"], "12345");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        Assert.Throws<InvalidDataException>(() => SafeFiles.OpenRegular(dir["fifo"], "test file", 100).Dispose());
        Assert.Throws<InvalidDataException>(() => SafeFiles.OpenRegular("/dev/zero", "test file", 100).Dispose());
        Assert.Throws<InvalidDataException>(() => SafeFiles.OpenRegular(dir["small"], "test file", 4).Dispose());
        Assert.Throws<FileNotFoundException>(() => SafeFiles.OpenRegular(dir["missing"], "test file", 4).Dispose());
        Assert.Throws<InvalidDataException>(() => SafeFiles.OpenRegular(dir.Path, "test file", 4).Dispose());
        Assert.Equal("12345", System.Text.Encoding.UTF8.GetString(SafeFiles.ReadBounded(dir["small"], "test file", 5)));
        Assert.True(sw.Elapsed.TotalSeconds < 5);
    }
}
