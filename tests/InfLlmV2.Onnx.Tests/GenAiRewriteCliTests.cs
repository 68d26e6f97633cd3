using System.Text.Json.Nodes;

namespace InfLlmV2.Onnx.Tests;

/// <summary>
/// `infllmv2 rewrite` of an onnxruntime-genai folder: a complete folder out (model, data, every other
/// file, the op library), genai_config.json changed only in custom_ops_library (and the decoder's file
/// name when renamed), the input never touched, nothing left behind on failure, rewrite's exit codes.
/// Running the folders through genai is tests/InfLlmV2.Onnx.GenAi.Tests.
/// </summary>
public class GenAiRewriteCliTests
{
    private static string Fixture(string name) => Path.Combine(ModelRunner.FixturesRoot, name);

    private static readonly string Gqa = Fixture("genai_tiny_random_llama_fp32_gqa_modelbuilder");

    /// <summary>Asserts <paramref name="output"/> is <paramref name="input"/> rewritten, decoder stored as <paramref name="modelName"/>.</summary>
    private static void AssertGenAiFolder(string input, string output, string modelName) => AssertGenAiFolder(input, output, modelName, NativeOpLibrary.FileName);

    /// <summary>As above, with the op library <paramref name="library"/> (the target platform's file name) named and copied.</summary>
    private static void AssertGenAiFolder(string input, string output, string modelName, string library)
    {
        var original = JsonNode.Parse(File.ReadAllText(Path.Combine(input, "genai_config.json")))!;
        var written = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "genai_config.json")))!;
        var options = written["model"]!["decoder"]!["session_options"]!.AsObject();
        Assert.Equal(library, (string?)options["custom_ops_library"]);
        Assert.Equal(modelName, (string?)written["model"]!["decoder"]!["filename"]);
        options.Remove("custom_ops_library");
        written["model"]!["decoder"]!["filename"] = (string?)original["model"]!["decoder"]!["filename"];
        Assert.True(JsonNode.DeepEquals(original, written), $"genai_config.json differs beyond custom_ops_library:\n{written}");

        Assert.True(File.Exists(Path.Combine(output, library)));
        Assert.True(File.Exists(Path.Combine(output, modelName)));
        var decoder = (string)original["model"]!["decoder"]!["filename"]!;
        foreach (var file in Directory.EnumerateFiles(input, "*", SearchOption.AllDirectories))
        {
            var relative = Path.GetRelativePath(input, file);
            if (relative is "genai_config.json" || relative == decoder) continue;
            var copy = Path.Combine(output, relative);
            Assert.True(File.Exists(copy), $"{relative} not copied");
            Assert.True(File.ReadAllBytes(file).AsSpan().SequenceEqual(File.ReadAllBytes(copy)), $"{relative} differs");
        }
        if (modelName != decoder) Assert.False(File.Exists(Path.Combine(output, decoder)));
    }

    [Fact]
    public void GenAiFolder_option_writes_a_complete_folder_and_reports_the_change()
    {
        using var dir = new TempDir();
        var (code, stdout, err) = CliProcess.Run("rewrite", "--genai-folder", Gqa, "-o", dir["out"], "--report", dir["r.json"]);
        Assert.True(code == 0, stdout + err);
        AssertGenAiFolder(Gqa, dir["out"], "model.onnx");
        Assert.Contains("custom_ops_library", stdout);
        var report = JsonNode.Parse(File.ReadAllText(dir["r.json"]))!["genai"]!;
        Assert.Single(report["config_changes"]!.AsArray());
        Assert.Contains("PROVENANCE.txt", report["copied_files"]!.AsArray().Select(n => (string?)n));
        Assert.Equal("model.onnx.data", (string?)report["data_files"]![0]);
    }

    /// <summary>
    /// --target-os windows: the folder gets infllmv2_ops.dll (win-x64) and its config names it. The
    /// library comes from artifacts/natives/win-x64/ (eng/build-natives.sh) in this checkout; where it
    /// was not built, exit 2 with one line naming the path tried, and nothing written.
    /// </summary>
    [Fact]
    public void Target_os_windows_copies_and_names_the_windows_library_or_names_the_missing_file()
    {
        using var dir = new TempDir();
        var (code, stdout, err) = CliProcess.Run("rewrite", "--genai-folder", Gqa, "-o", dir["out"], "--target-os", "windows", "--target-arch", "x64");
        var built = Path.Combine(ModelRunner.RepoRoot, "artifacts", "natives", "win-x64", NativeOpLibrary.WindowsFileName);
        if (File.Exists(built))
        {
            Assert.True(code == 0, stdout + err);
            AssertGenAiFolder(Gqa, dir["out"], "model.onnx", NativeOpLibrary.WindowsFileName);
            Assert.False(File.Exists(dir["out/" + NativeOpLibrary.LinuxFileName]));
            Assert.True(File.ReadAllBytes(built).AsSpan().SequenceEqual(File.ReadAllBytes(dir["out/" + NativeOpLibrary.WindowsFileName])));
            Assert.Contains($"op library       {NativeOpLibrary.WindowsFileName} (copied from {built})", stdout);
        }
        else
        {
            Assert.True(code == 2, stdout + err);
            Assert.Contains($"op library for win-x64 ({NativeOpLibrary.WindowsFileName}) not found", err);
            Assert.Contains(built, err);
            Assert.Contains("eng/build-natives.sh --rid win-x64", err);
            Assert.Single(err.Trim().Split('\n'));
            Assert.False(Directory.Exists(dir["out"]));
        }
    }

    [Fact]
    public void Target_os_linux_is_this_platforms_library()
    {
        using var dir = new TempDir();
        var (code, stdout, err) = CliProcess.Run("rewrite", "--genai-folder", Gqa, "-o", dir["out"], "--target-os", "Linux");
        Assert.True(code == 0, stdout + err);
        AssertGenAiFolder(Gqa, dir["out"], "model.onnx", NativeOpLibrary.LinuxFileName);
    }

    [Theory]
    [InlineData("--target-os", "macos", "--target-os must be linux or windows, got 'macos'")]
    [InlineData("--target-os", "", "--target-os must be linux or windows, got ''")]
    [InlineData("--target-arch", "riscv64", "--target-arch must be x64 or arm64, got 'riscv64'")]
    public void Invalid_target_exits_two_naming_the_option_and_writes_nothing(string option, string value, string message)
    {
        using var dir = new TempDir();
        var (code, stdout, err) = CliProcess.Run("rewrite", "--genai-folder", Gqa, "-o", dir["out"], option, value);
        Assert.True(code == 2, stdout + err);
        Assert.Equal($"error: {message}", err.Trim());
        Assert.False(Directory.Exists(dir["out"]));
    }

    [Fact]
    public void Target_without_an_op_library_build_exits_two_naming_the_platforms()
    {
        using var dir = new TempDir();
        var (code, stdout, err) = CliProcess.Run("rewrite", "--genai-folder", Gqa, "-o", dir["out"], "--target-os", "windows", "--target-arch", "arm64");
        Assert.True(code == 2, stdout + err);
        Assert.Contains("no op library is built for win-arm64", err);
        Assert.Contains("linux-x64, linux-arm64, win-x64", err);
        Assert.False(Directory.Exists(dir["out"]));
    }

    [Fact]
    public void Target_os_without_a_genai_folder_is_noted_and_the_model_written()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir["in"]);
        foreach (var f in Directory.EnumerateFiles(Gqa).Where(f => Path.GetFileName(f) != "genai_config.json"))
            File.Copy(f, Path.Combine(dir["in"], Path.GetFileName(f)));
        var (code, stdout, err) = CliProcess.Run("rewrite", dir["in/model.onnx"], "-o", dir["m.onnx"], "--target-os", "windows");
        Assert.True(code == 0, stdout + err);
        Assert.Contains("note: --target-os/--target-arch choose the op library copied into a genai folder", stdout);
        Assert.True(File.Exists(dir["m.onnx"]));
        Assert.False(File.Exists(dir[NativeOpLibrary.WindowsFileName]));
    }

    [Theory]
    [InlineData("linux", "x64", "linux-x64")]
    [InlineData("windows", "x64", "win-x64")]
    [InlineData("WIN", "amd64", "win-x64")]
    [InlineData("linux", "aarch64", "linux-arm64")]
    [InlineData("windows", "arm64", "win-arm64")]  // refused later, by OpLibraryFor
    public void Target_runtime_identifier_of_os_and_arch(string os, string arch, string rid) =>
        Assert.Equal(rid, Cli.Commands.GenAiRewrite.TargetRuntimeIdentifier(os, arch));

    [Fact]
    public void Target_runtime_identifier_defaults_to_this_process()
    {
        Assert.Equal(NativeOpLibrary.CurrentRuntimeIdentifier, Cli.Commands.GenAiRewrite.TargetRuntimeIdentifier(null, null));
        Assert.EndsWith("-arm64", Cli.Commands.GenAiRewrite.TargetRuntimeIdentifier(null, "arm64"));
    }

    [Fact]
    public void Model_in_a_genai_folder_written_elsewhere_becomes_a_genai_folder_renamed_decoder_noted()
    {
        using var dir = new TempDir();
        var fixture = Fixture("genai_webgpu_tiny_gqa_contrib_fp16");
        var (code, stdout, err) = CliProcess.Run("rewrite", Path.Combine(fixture, "model.onnx"), "-o", dir["out/decoder.rw.onnx"]);
        Assert.True(code == 0, stdout + err);
        AssertGenAiFolder(fixture, dir["out"], "decoder.rw.onnx");
        Assert.Contains("model.decoder.filename: \"model.onnx\" -> \"decoder.rw.onnx\"", stdout);
    }

    [Fact]
    public void Output_in_the_input_folder_writes_only_the_model_and_leaves_the_config()
    {
        using var dir = new TempDir();
        foreach (var f in Directory.EnumerateFiles(Gqa)) File.Copy(f, dir[Path.GetFileName(f)]);
        var config = File.ReadAllText(dir["genai_config.json"]);
        var (code, stdout, err) = CliProcess.Run("rewrite", dir["model.onnx"], "-o", dir["model.rw.onnx"]);
        Assert.True(code == 0, stdout + err);
        Assert.Contains("only the model is written", stdout);
        Assert.Equal(config, File.ReadAllText(dir["genai_config.json"]));
        Assert.False(File.Exists(dir[NativeOpLibrary.FileName]));
    }

    [Fact]
    public void Nothing_rewritable_exits_three_and_writes_no_folder()
    {
        using var dir = new TempDir();
        var (code, _, _) = CliProcess.Run("rewrite", "--genai-folder", AttentionMaskFormsTests.PaddingOnlyMhaFolder(dir["padding-only"]), "-o", dir["out"]);
        Assert.Equal(3, code);
        Assert.False(Directory.Exists(dir["out"]));
    }

    [Theory]
    [InlineData("same-folder")]
    [InlineData("no-config")]
    [InlineData("both-inputs")]
    [InlineData("no-input")]
    [InlineData("other-library")]
    public void Bad_genai_input_or_usage_exits_two_and_writes_nothing(string kind)
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir["in"]);
        foreach (var f in Directory.EnumerateFiles(Gqa)) File.Copy(f, Path.Combine(dir["in"], Path.GetFileName(f)));
        if (kind == "other-library")
        {
            var config = JsonNode.Parse(File.ReadAllText(Gqa + "/genai_config.json"))!;
            config["model"]!["decoder"]!["session_options"]!["custom_ops_library"] = "libother.so";
            File.WriteAllText(dir["in/genai_config.json"], config.ToJsonString());
        }
        if (kind == "no-config") File.Delete(dir["in/genai_config.json"]);
        var before = Directory.EnumerateFiles(dir.Path, "*", SearchOption.AllDirectories).Order().ToList();
        string[] args = kind switch
        {
            "same-folder" => ["rewrite", "--genai-folder", dir["in"], "-o", dir["in"]],
            "both-inputs" => ["rewrite", dir["in/model.onnx"], "--genai-folder", dir["in"], "-o", dir["out"]],
            "no-input" => ["rewrite", "-o", dir["out"]],
            _ => ["rewrite", "--genai-folder", dir["in"], "-o", dir["out"]],
        };
        var (code, stdout, err) = CliProcess.Run(args);
        Assert.True(code == 2, stdout + err);
        Assert.Single(err.Trim().Split('\n'));
        Assert.Equal(before, Directory.EnumerateFiles(dir.Path, "*", SearchOption.AllDirectories).Order().ToList());
    }

    [Fact]
    public void Existing_file_with_other_content_is_kept_without_force_and_nothing_is_left_behind()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir["out"]);
        File.WriteAllText(dir["out/PROVENANCE.txt"], "mine");
        var (code, _, err) = CliProcess.Run("rewrite", "--genai-folder", Gqa, "-o", dir["out"]);
        Assert.Equal(2, code);
        Assert.Contains("--force", err);
        Assert.Equal(["PROVENANCE.txt"], Directory.EnumerateFileSystemEntries(dir["out"]).Select(Path.GetFileName));
        Assert.Equal("mine", File.ReadAllText(dir["out/PROVENANCE.txt"]));
        Assert.Equal(0, CliProcess.Run("rewrite", "--genai-folder", Gqa, "-o", dir["out"], "--force").ExitCode);
        AssertGenAiFolder(Gqa, dir["out"], "model.onnx");
    }
}
