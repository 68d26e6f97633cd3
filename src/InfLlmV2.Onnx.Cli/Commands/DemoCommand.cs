using System.CommandLine;
using System.Diagnostics;
using InfLlmV2.Onnx.GraphTools;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InfLlmV2.Onnx.Cli.Commands;

/// <summary>
/// <c>infllmv2 demo</c>: one decode step of a one-node SwitchableAttention model on a 16k-token
/// context, once in dense and once in sparse mode, with a planted "needle" block.
/// </summary>
public static class DemoCommand
{
    private const int Heads = 16, KvHeads = 1, HeadSize = 64, Context = 16384, NeedleBlock = 77;

    /// <summary>Creates the command.</summary>
    public static Command Create()
    {
        var cmd = new Command("demo", "Run SwitchableAttention on a 16k-token context in dense and sparse mode");
        cmd.SetAction(_ => CommandRunner.Guard(Run));
        return cmd;
    }

    private static int Run()
    {
        var model = AttentionNodeModels.Build(new AttentionNodeConfig
        {
            NumHeads = Heads, KvNumHeads = KvHeads, WithAttentionMode = true, WithSelectedBlocks = true,
        });
        using var options = new SessionOptions();
        options.RegisterInfLlmV2Ops();
        using var session = new InferenceSession(OnnxModelFile.ToBytes(model), options);

        // Keys: noise; block NeedleBlock holds keys aligned with the query (the "needle").
        var rng = new Random(1234);
        int past = Context - 1;
        var pastKey = new float[KvHeads * past * HeadSize];
        var pastValue = new float[pastKey.Length];
        var direction = new float[HeadSize];
        for (int i = 0; i < HeadSize; i++) direction[i] = (float)(rng.NextDouble() * 2 - 1);
        for (int i = 0; i < pastKey.Length; i++)
        {
            pastKey[i] = (float)(rng.NextDouble() * 2 - 1);
            pastValue[i] = (float)(rng.NextDouble() * 2 - 1);
        }
        for (int t = NeedleBlock * 64; t < NeedleBlock * 64 + 64; t++)
            for (int i = 0; i < HeadSize; i++) pastKey[t * HeadSize + i] = 2.5f * direction[i];
        var query = new float[Heads * HeadSize];
        for (int h = 0; h < Heads; h++)
            for (int i = 0; i < HeadSize; i++) query[h * HeadSize + i] = direction[i] + 0.1f * (float)(rng.NextDouble() * 2 - 1);
        var key = new float[KvHeads * HeadSize];
        var value = new float[KvHeads * HeadSize];

        Console.WriteLine($"SwitchableAttention decode step: H={Heads} Hkv={KvHeads} D={HeadSize}, context {Context} tokens, needle in block {NeedleBlock}");
        Console.WriteLine($"onnxruntime {OrtEnv.Instance().GetVersionString()}, op library {NativeOpLibrary.Locate()}");
        Console.WriteLine();
        Console.WriteLine($"{"mode",-8}{"time ms",10}{"blocks",8}{"tokens",8}{"needle",8}{"max|out-dense|",16}");
        float[]? dense = null;
        foreach (var (mode, label) in new[] { (1, "dense"), (2, "sparse") })
        {
            using var q = OrtValue.CreateTensorValueFromMemory(query, [1, 1, Heads * HeadSize]);
            using var k = OrtValue.CreateTensorValueFromMemory(key, [1, 1, KvHeads * HeadSize]);
            using var v = OrtValue.CreateTensorValueFromMemory(value, [1, 1, KvHeads * HeadSize]);
            using var pk = OrtValue.CreateTensorValueFromMemory(pastKey, [1, KvHeads, past, HeadSize]);
            using var pv = OrtValue.CreateTensorValueFromMemory(pastValue, [1, KvHeads, past, HeadSize]);
            using var seqlens = OrtValue.CreateTensorValueFromMemory(new[] { Context - 1 }, [1]);
            using var total = OrtValue.CreateTensorValueFromMemory(new[] { Context }, []);
            using var modeValue = OrtValue.CreateTensorValueFromMemory(new[] { mode }, []);
            string[] names = ["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length", "attention_mode"];
            OrtValue[] values = [q, k, v, pk, pv, seqlens, total, modeValue];
            using var runOptions = new RunOptions();
            session.Run(runOptions, names, values, session.OutputNames).Dispose();  // warm-up
            var sw = Stopwatch.StartNew();
            using var results = session.Run(runOptions, names, values, session.OutputNames);
            double ms = sw.Elapsed.TotalMilliseconds;
            var output = results[0].GetTensorDataAsSpan<float>().ToArray();
            var selected = results[3].GetTensorDataAsSpan<int>().ToArray().Where(b => b >= 0).ToArray();
            int blocks = mode == 1 ? (Context + 63) / 64 : selected.Length;
            int tokens = mode == 1 ? Context : selected.Sum(b => Math.Min(64, Context - b * 64));
            bool needle = mode == 1 || selected.Contains(NeedleBlock);
            dense ??= output;
            double diff = output.Zip(dense, (a, b) => Math.Abs(a - b)).Max();
            Console.WriteLine($"{label,-8}{ms,10:F2}{blocks,8}{tokens,8}{(needle ? "yes" : "NO"),8}{diff,16:G3}");
        }
        Console.WriteLine();
        Console.WriteLine("Sparse mode attends to the init block, the 33 local blocks and the 62 top-scored blocks (96 x 64 = 6144 tokens).");
        return ExitCodes.Ok;
    }
}
