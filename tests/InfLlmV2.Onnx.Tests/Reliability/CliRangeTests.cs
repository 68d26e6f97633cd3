namespace InfLlmV2.Onnx.Tests.Reliability;

/// <summary>Every numeric option is range-checked up front, the message naming the option.</summary>
[Collection(ReliabilityCollection.Name)]
public class CliRangeTests
{
    public static TheoryData<string, string[]> BadOptions() => new()
    {
        { "--max-new-tokens", ["generate", "M", "--prompt-ids", "1,2", "--max-new-tokens", "2147483647"] },
        { "--max-new-tokens", ["generate", "M", "--prompt-ids", "1,2", "--max-new-tokens", "0"] },
        { "--prompt-ids", ["generate", "M", "--prompt-ids", ""] },
        { "--prompt-ids", ["generate", "M", "--prompt-ids", " , "] },
        { "--temperature", ["generate", "M", "--prompt-ids", "1", "--temperature", "NaN"] },
        { "--temperature", ["generate", "M", "--prompt-ids", "1", "--temperature", "Infinity"] },
        { "--temperature", ["generate", "M", "--prompt-ids", "1", "--temperature", "-1"] },
        { "--top-p", ["generate", "M", "--prompt-ids", "1", "--top-p", "NaN"] },
        { "--top-p", ["generate", "M", "--prompt-ids", "1", "--top-p", "0"] },
        { "--top-k", ["generate", "M", "--prompt-ids", "1", "--top-k", "-3"] },
        { "--capacity", ["generate", "M", "--prompt-ids", "1", "--capacity", "-5"] },
        { "--capacity", ["generate", "M", "--prompt-ids", "1", "--capacity", "0"] },
        { "--capacity", ["generate", "M", "--prompt-ids", "1", "--capacity", "2147483647"] },
        { "--prompt-len", ["compare", "M", "M", "--prompt-len", "2147483647"] },
        { "--prompt-len", ["compare", "M", "M", "--prompt-len", "0"] },
        { "--decode-steps", ["compare", "M", "M", "--decode-steps", "2147483647"] },
        { "--decode-steps", ["compare", "M", "M", "--decode-steps", "-1"] },
        { "--prompt-ids", ["compare", "M", "M", "--prompt-ids", ""] },
        { "--atol", ["compare", "M", "M", "--inputs", "D", "--atol", "NaN"] },
        { "--atol", ["run", "M", "--inputs", "D", "--atol", "Infinity"] },
        { "--repeat", ["run", "M", "--inputs", "D", "--repeat", "0"] },
        { "--repeat", ["run", "M", "--inputs", "D", "--repeat", "2147483647"] },
    };

    [Theory]
    [MemberData(nameof(BadOptions))]
    public void BadNumber_ExitsTwo_OneLine_NamingTheOption(string option, string[] args)
    {
        using var dir = new TempDir();
        var model = dir["m.onnx"];
        HostileFileTests.HostileModels_SaveValid(model, external: false);
        Directory.CreateDirectory(dir["td"]);
        var resolved = args.Select(a => a == "M" ? model : a == "D" ? dir["td"] : a).ToArray();
        var r = InProcessCli.Run(resolved);
        Assert.True(r.Code == 2 && r.OneErrorLine, r.ToString());
        Assert.Contains(option, r.Err);
        Assert.DoesNotContain("--capacity -", r.Err);  // no overflowed arithmetic in a message
    }
}
