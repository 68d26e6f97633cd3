using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.Proto;
using InfLlmV2.Onnx.Session;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Cli.Commands;

/// <summary>
/// <c>infllmv2 run MODEL --inputs DIR [--outputs DIR] [--atol X] [--repeat N] [--json FILE]</c>:
/// runs any model with our op registered on an ONNX test-data folder and compares with the
/// folder's expected outputs when it has them.
/// </summary>
public static class RunCommand
{
    /// <summary>Creates the command.</summary>
    public static Command Create()
    {
        var model = new Argument<FileInfo>("MODEL") { Description = "ONNX model file, or a model folder (genai folder, or a folder with one .onnx model)" };
        var inputs = new Option<DirectoryInfo>("--inputs") { Description = "Test-data folder with input_N.pb (and optionally output_N.pb to compare with)", Required = true };
        var outputs = new Option<DirectoryInfo?>("--outputs") { Description = "Folder to write output_N.pb into (created; must differ from --inputs)" };
        var atol = new Option<double>("--atol") { Description = "Max abs difference allowed per output", DefaultValueFactory = _ => 1e-4 };
        var repeat = new Option<int>("--repeat") { Description = "Runs in one session; the median latency is printed", DefaultValueFactory = _ => 1 };
        var json = new Option<FileInfo?>("--json") { Description = "Write the results as JSON to this file (- for stdout)" };
        var ops = new Option<string?>("--ops-library") { Description = $"Path of the op library ({NativeOpLibrary.FileName} here; {NativeOpLibrary.LinuxFileName} on Linux, {NativeOpLibrary.WindowsFileName} on Windows; default: next to the app)" };
        var device = DeviceOption.Create();
        var threads = ThreadsOption.Create();
        var cmd = new Command("run", "Run a model with the SwitchableAttention op registered on an ONNX test-data folder")
        {
            model, inputs, outputs, atol, repeat, json, ops, device, threads,
        };
        cmd.SetAction(r => CommandRunner.Guard(() => Run(
            r.GetValue(model)!, r.GetValue(inputs)!, r.GetValue(outputs), r.GetValue(atol), r.GetValue(repeat),
            r.GetValue(json), r.GetValue(ops), DeviceOption.Check(r.GetValue(device)!), ThreadsOption.Value(r.GetValue(threads)))));
        return cmd;
    }

    private static int Run(FileInfo model, DirectoryInfo inputDir, DirectoryInfo? outputDir, double atol, int repeat,
        FileInfo? json, string? opsLibrary, ExecutionDevice device = ExecutionDevice.Cpu, int? threads = null)
    {
        model = new FileInfo(CompareCommand.Existing(model));
        if (!inputDir.Exists) throw new DirectoryNotFoundException($"Inputs folder not found: {inputDir.FullName}");
        CommandRunner.InRange("--repeat", repeat, 1, MaxRepeat);
        CommandRunner.InRange("--atol", atol, 0, double.MaxValue);
        if (outputDir is not null && SafeFiles.SameFile(outputDir.FullName, inputDir.FullName))
            throw new UsageException($"--outputs must differ from --inputs (it would overwrite the expected outputs; real path {SafeFiles.ResolvedPath(outputDir.FullName)})");
        if (outputDir is not null && File.Exists(outputDir.FullName))
            throw new UsageException($"--outputs {outputDir.FullName} is a file; give a folder (it is created when missing)");
        if (outputDir is not null && outputDir.Exists)
            foreach (var existing in Directory.GetFileSystemEntries(outputDir.FullName, "output_*.pb"))
            {
                SafeFiles.CheckWritableTarget(existing, "--outputs:");
                foreach (var input in Directory.GetFiles(inputDir.FullName).Append(model.FullName))
                    SafeFiles.CheckApart(input, existing, "--outputs:");
            }
        if (json is not null) ReportFile.Check(json, "--json", [model.FullName, .. Directory.GetFiles(inputDir.FullName)]);
        ModelValidator.Check(OnnxModelFile.Load(model.FullName), model.DirectoryName);

        var expected = OnnxTestData.ReadAll(inputDir.FullName, "output");
        var (produced, times) = Execute(model.FullName, inputDir.FullName, opsLibrary, repeat, device, threads);
        return Report(model, produced, expected, outputDir, atol, times, json, inputDir.FullName);
    }

    /// <summary>Most runs <c>--repeat</c> asks for.</summary>
    public const int MaxRepeat = 100_000;

    /// <summary>Runs <paramref name="model"/> <paramref name="repeat"/> times on the folder's input_N.pb; returns every graph output and the latencies.</summary>
    internal static (List<TensorProto> Outputs, List<double> Times) Execute(string model, string inputDir, string? opsLibrary, int repeat,
        ExecutionDevice device = ExecutionDevice.Cpu, int? threads = null)
    {
        var graph = OnnxModelFile.Load(model);
        ModelWriter.CheckExternalData(graph, model);  // ORT reads these itself: checked first (compare --inputs comes here directly)
        var inputTensors = OnnxTestData.ReadAll(inputDir, "input");
        using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL, IntraOpNumThreads = threads ?? DecoderModel.DefaultThreads };
        options.UseDevice(device);
        options.RegisterInfLlmV2Ops(opsLibrary);
        options.RegisterExtensionsOpsIfImported(graph);  // a model with ai.onnx.contrib ops (tokenizer, string ops)
        using var session = new InferenceSession(model, options);
        var inputNames = session.InputNames;
        var names = new List<string>();
        var values = new List<OrtValue>();
        try
        {
            for (int i = 0; i < inputTensors.Count; i++)
            {
                var t = inputTensors[i];
                var name = t.Name.Length > 0 ? t.Name
                    : i < inputNames.Count ? inputNames[i]
                    : throw new InvalidDataException($"input_{i}.pb has no name and the model has only {inputNames.Count} inputs");
                if (!inputNames.Contains(name))
                    throw new InvalidDataException($"input_{i}.pb feeds '{name}', which is not an input of the model (inputs: {string.Join(", ", inputNames)})");
                names.Add(name);
                values.Add(OnnxTestData.ToOrtValue(t, inputDir));
            }

            var outputNames = session.OutputNames;
            using var runOptions = new RunOptions();
            var times = new List<double>();
            IDisposableReadOnlyCollection<OrtValue>? results = null;
            try
            {
                for (int k = 0; k < repeat; k++)
                {
                    results?.Dispose();
                    var sw = Stopwatch.StartNew();
                    results = session.Run(runOptions, names, values, outputNames);
                    times.Add(sw.Elapsed.TotalMilliseconds);
                }
                return (outputNames.Select((n, i) => OnnxTestData.FromOrtValue(n, results![i])).ToList(), times);
            }
            finally
            {
                results?.Dispose();
            }
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    private static int Report(FileInfo model, List<TensorProto> produced, List<TensorProto> expected,
        DirectoryInfo? outputDir, double atol, List<double> times, FileInfo? json, string inputDir)
    {
        var (rows, allOk) = Diff(produced, expected, atol, inputDir);
        if (expected.Count == 0) Console.WriteLine("no expected outputs in the inputs folder: nothing compared");

        var sorted = times.OrderBy(t => t).ToList();
        double median = sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : 0.5 * (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]);
        if (times.Count > 1) Console.WriteLine($"median latency {median:F3} ms over {times.Count} runs");

        // Outputs and the JSON report are written whole or not at all: on a failure (a full disk)
        // every file written, and the outputs folder when this run created it, are removed.
        var created = new List<string>();
        bool createdDir = outputDir is not null && !Directory.Exists(outputDir.FullName);
        try
        {
            if (outputDir is not null)
            {
                Directory.CreateDirectory(outputDir.FullName);
                for (int i = 0; i < produced.Count; i++)
                {
                    var path = Path.Combine(outputDir.FullName, $"output_{i}.pb");
                    bool existed = File.Exists(path);
                    OnnxTestData.WriteTensor(produced[i], path);
                    if (!existed) created.Add(path);
                }
            }
            WriteJson(model, produced, atol, times, json, rows, allOk, median);
        }
        catch
        {
            foreach (var f in created) SafeFiles.TryDelete(f);
            if (createdDir)
                try { Directory.Delete(outputDir!.FullName); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
        if (outputDir is not null) Console.WriteLine($"wrote {produced.Count} outputs to {outputDir.FullName}");
        return allOk ? ExitCodes.Ok : ExitCodes.Mismatch;
    }

    private static void WriteJson(FileInfo model, List<TensorProto> produced, double atol, List<double> times, FileInfo? json,
        List<Dictionary<string, object?>> rows, bool allOk, double median)
    {
        if (json is not null)
        {
            var doc = new Dictionary<string, object?>
            {
                ["schema_version"] = ReportFile.SchemaVersion,
                ["model"] = model.FullName,
                ["atol"] = atol,
                ["repeat"] = times.Count,
                ["median_latency_ms"] = median,
                ["outputs"] = produced.Select(p => new Dictionary<string, object?> { ["name"] = p.Name, ["shape"] = p.Dims.ToArray() }).ToList(),
                ["comparisons"] = rows,
                ["ok"] = allOk,
            };
            ReportFile.Write(json, JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }));
        }
    }

    /// <summary>
    /// Compares <paramref name="produced"/> with every tensor of <paramref name="expected"/> (by name,
    /// else by position), prints one line per expected tensor and returns the rows and whether all are within atol.
    /// </summary>
    internal static (List<Dictionary<string, object?>> Rows, bool AllOk) Diff(List<TensorProto> produced, List<TensorProto> expected, double atol, string? dataDir)
    {
        var rows = new List<Dictionary<string, object?>>();
        bool allOk = true;
        for (int i = 0; i < expected.Count; i++)
        {
            var want = expected[i];
            var got = want.Name.Length > 0 ? produced.FirstOrDefault(p => p.Name == want.Name)
                : i < produced.Count ? produced[i] : null;
            var label = want.Name.Length > 0 ? want.Name : $"output_{i}";
            string status;
            double diff = double.NaN;
            if (got is null)
            {
                status = "MISSING";
            }
            else if (!got.Dims.SequenceEqual(want.Dims))
            {
                status = $"SHAPE [{string.Join(",", got.Dims)}] != expected [{string.Join(",", want.Dims)}]";
            }
            else if (want.DataType == (int)TensorProto.Types.DataType.String || got.DataType == (int)TensorProto.Types.DataType.String)
            {
                // Text is compared exactly.
                diff = got.DataType == want.DataType && got.StringData.SequenceEqual(want.StringData) ? 0 : double.PositiveInfinity;
                status = diff == 0 ? "ok" : "FAIL";
            }
            else
            {
                var a = TensorProtos.ToDoubles(got);
                var b = TensorProtos.ToDoubles(want, dataDir);
                diff = 0;
                for (int k = 0; k < a.Length; k++)
                {
                    double d = Math.Abs(a[k] - b[k]);
                    if (double.IsNaN(d)) d = double.IsNaN(a[k]) && double.IsNaN(b[k]) ? 0 : double.PositiveInfinity;
                    diff = Math.Max(diff, d);
                }
                status = diff <= atol ? "ok" : "FAIL";
            }
            bool ok = status == "ok";
            allOk &= ok;
            Console.WriteLine($"{label,-40} max|diff| {diff,12:G4}  atol {atol:G3}  {status}");
            rows.Add(new() { ["name"] = label, ["max_abs_diff"] = double.IsFinite(diff) ? diff : null, ["ok"] = ok, ["status"] = status });
        }
        return (rows, allOk);
    }
}
