using System.Diagnostics;
using System.Security.Cryptography;
using InfLlmV2.Onnx.Cli;
using Microsoft.ML.OnnxRuntime;
using Xunit.Abstractions;

namespace InfLlmV2.Onnx.Tests.Reliability;

/// <summary>
/// A seeded mutation fuzzer over real exported models (read in place from
/// ../shared/fixtures/real-models) and over test-data tensors. Every mutant through inspect and
/// rewrite (models) or run (tensors) must end in time with an allowed exit code, one "error:" line
/// when it fails, no internal error, nothing left behind and the input unchanged. The seed is fixed;
/// <c>INFLLMV2_FUZZ_SECONDS</c> (default 8) sets how long each fuzzer runs, <c>INFLLMV2_FUZZ_SEED</c> the seed.
/// </summary>
[Collection(ReliabilityCollection.Name)]
public class MutationFuzzTests(ITestOutputHelper log)
{
    private static readonly string[] Fixtures =
    [
        "genai_tiny_qwen35_gqa_contrib_fp16/decoder.onnx",
        "genai_webgpu_tiny_gqa_contrib_fp16/model.onnx",
        "migraphx_gqa_contrib_node_tests/group_query_attention_decode_test.onnx",
    ];

    private static double Seconds => double.TryParse(Environment.GetEnvironmentVariable("INFLLMV2_FUZZ_SECONDS"), out var s) && s > 0 ? s : 8;

    private static int Seed => int.TryParse(Environment.GetEnvironmentVariable("INFLLMV2_FUZZ_SEED"), out var s) ? s : 16;

    /// <summary>One to four byte-level mutations; half the offsets fall in the first 15 % (nodes and attributes come first).</summary>
    public static byte[] Mutate(byte[] original, Random rng)
    {
        var b = new List<byte>(original);
        int Offset() => b.Count == 0 ? 0 : rng.Next(2) == 0 ? rng.Next(Math.Max(1, b.Count * 15 / 100)) : rng.Next(b.Count);
        for (int k = rng.Next(1, 5); k > 0 && b.Count > 0; k--)
        {
            int at = Offset();
            switch (rng.Next(7))
            {
                case 0: b[at] ^= (byte)(1 << rng.Next(8)); break;
                case 1: b[at] = (byte)rng.Next(256); break;
                case 2: b[at] = new byte[] { 0x00, 0x7F, 0x80, 0xFF }[rng.Next(4)]; break;
                case 3: b.RemoveRange(at, b.Count - at); break;
                case 4: b.InsertRange(at, HostileModels.Random(rng.Next(), rng.Next(1, 16))); break;
                case 5: b.RemoveRange(at, Math.Min(b.Count - at, rng.Next(1, 64))); break;
                default: b.InsertRange(at, Enumerable.Repeat((byte)0xFF, 9).Append((byte)0x01)); break;  // a 2^63-sized varint
            }
        }
        return [.. b];
    }

    [Fact]
    public void RealModels_Mutated_InspectAndRewrite_NeverCrashHangOrLeaveOutput()
    {
        using var dir = new TempDir();
        var rng = new Random(Seed);
        var originals = Fixtures.Select(f => File.ReadAllBytes(Path.Combine(ModelRunner.FixturesRoot, f))).ToArray();
        int files = 0, crashes = 0, hangs = 0, left = 0, changed = 0, rewritten = 0, ortRejected = 0;
        var problems = new List<string>();
        var exits = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var sw = Stopwatch.StartNew();
        var work = dir["work"];
        Directory.CreateDirectory(work);
        while (sw.Elapsed.TotalSeconds < Seconds * 0.75)
        {
            int which = rng.Next(originals.Length);
            var mutant = Mutate(originals[which], rng);
            var model = dir["mutant.onnx"];
            File.WriteAllBytes(model, mutant);
            var hash = SHA256.HashData(mutant);
            files++;
            foreach (var args in new[] { new[] { "inspect", model }, ["rewrite", model, "-o", Path.Combine(work, "out.onnx"), "--force"] })
            {
                var r = InProcessCli.Run(args);
                var key = $"{args[0]} {r.Code}";
                exits[key] = exits.GetValueOrDefault(key) + 1;
                bool allowed = args[0] == "inspect" ? r.Code is 0 or 2 : r.Code is 0 or 2 or 3;
                if (r.Hung) hangs++;
                else if (!allowed || (r.Code != 0 && !LastLineIsError(r.Err)) || r.Err.Contains(CommandRunner.InternalErrorPrefix, StringComparison.Ordinal))
                {
                    crashes++;
                    problems.Add($"{Fixtures[which]} mutant {files} {args[0]}: {r}");
                }
                var outputs = Directory.GetFileSystemEntries(work);
                bool expectOutput = args[0] == "rewrite" && r.Code == 0;
                if (outputs.Length != (expectOutput ? 1 : 0)) { left++; problems.Add($"{Fixtures[which]} mutant {files} {args[0]}: left {string.Join(", ", outputs)}"); }
                if (expectOutput)
                {
                    rewritten++;
                    if (OrtRefusal(Path.Combine(work, "out.onnx")) is { } why && ++ortRejected <= 5) log.WriteLine($"ORT refused a rewrite: {why}");
                }
                foreach (var o in outputs) File.Delete(o);
                if (!SHA256.HashData(File.ReadAllBytes(model)).AsSpan().SequenceEqual(hash)) changed++;
            }
        }
        log.WriteLine($"model fuzzer (seed {Seed}, {Seconds * 0.75:F0} s): files tried {files}, crashes {crashes}, hangs {hangs}, outputs left {left}, inputs changed {changed}; " +
                      $"rewritten {rewritten} (ORT refused {ortRejected} of them); exits: {string.Join(", ", exits.Select(e => $"{e.Key}: {e.Value}"))}");
        Assert.True(files > 0);
        Assert.True(problems.Count == 0 && hangs == 0 && changed == 0, string.Join("\n", problems.Take(20)));
    }

    [Fact]
    public void TestDataTensors_Mutated_Run_NeverCrashHangOrLeaveOutput()
    {
        using var dir = new TempDir();
        var model = IdentityModel.Save(dir.Path);
        var rng = new Random(Seed + 1);
        var valid = Google.Protobuf.MessageExtensions.ToByteArray(InfLlmV2.Onnx.GraphTools.TensorProtos.Float("x", [16], new float[16]));
        int files = 0, crashes = 0, hangs = 0, left = 0;
        var problems = new List<string>();
        var sw = Stopwatch.StartNew();
        var td = dir["td"];
        Directory.CreateDirectory(td);
        var outs = dir["outs"];
        while (sw.Elapsed.TotalSeconds < Seconds * 0.25)
        {
            File.WriteAllBytes(Path.Combine(td, "input_0.pb"), Mutate(valid, rng));
            if (rng.Next(2) == 0) File.WriteAllBytes(Path.Combine(td, "output_0.pb"), Mutate(valid, rng));
            else File.Delete(Path.Combine(td, "output_0.pb"));
            files++;
            var r = InProcessCli.Run("run", model, "--inputs", td, "--outputs", outs);
            if (r.Hung) hangs++;
            else if (r.Code is not (0 or 1 or 2) || (r.Code == 2 && !r.OneErrorLine)) { crashes++; problems.Add(r.ToString()); }
            bool wrote = Directory.Exists(outs);
            if (wrote != (r.Code is 0 or 1)) { left++; problems.Add($"exit {r.Code} with outputs folder {(wrote ? "present" : "missing")}"); }
            if (wrote) Directory.Delete(outs, recursive: true);
        }
        log.WriteLine($"tensor fuzzer (seed {Seed + 1}, {Seconds * 0.25:F0} s): files tried {files}, crashes {crashes}, hangs {hangs}, outputs left {left}");
        Assert.True(problems.Count == 0 && hangs == 0, string.Join("\n", problems.Take(20)));
    }

    private static bool LastLineIsError(string err) => err.Trim().Split('\n')[^1].StartsWith("error: ", StringComparison.Ordinal);

    private static string? OrtRefusal(string path)
    {
        try
        {
            using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
            options.RegisterInfLlmV2Ops();
            using var s = new InferenceSession(path, options);
            return null;
        }
        catch (OnnxRuntimeException e)
        {
            return e.Message.ReplaceLineEndings(" ");
        }
    }
}
