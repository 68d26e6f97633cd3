using System.CommandLine;
using System.Text.Json;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.GraphTools.GenAi;
using InfLlmV2.Onnx.GraphTools.Rewriting;
using InfLlmV2.Onnx.OpContract;
using InfLlmV2.Onnx.Text;
using Spectre.Console;

namespace InfLlmV2.Onnx.Cli.Commands;

/// <summary>
/// <c>infllmv2 rewrite IN -o OUT [options] [--report FILE.json]</c>: exit 0 when at least one
/// attention was rewritten, 3 when the model is valid but nothing could be, 2 on bad input or
/// usage. On failure no output file exists afterwards; the input is never overwritten, nor an
/// existing output without --force. A model whose folder has a genai_config.json naming it (or
/// <c>--genai-folder IN -o OUTDIR</c>) is written as a whole genai folder (<see cref="GenAiRewrite"/>),
/// with the op library of <c>--target-os linux|windows</c> and <c>--target-arch x64|arm64</c>
/// (default: this process's platform).
/// </summary>
public static class RewriteCommand
{
    /// <summary>Creates the command.</summary>
    public static Command Create()
    {
        var d = SparseAttentionSettings.Defaults;
        var input = new Argument<FileInfo?>("IN") { Description = "ONNX model to rewrite (never modified)", Arity = ArgumentArity.ZeroOrOne };
        var genaiFolder = new Option<DirectoryInfo?>("--genai-folder") { Description = "Rewrite this onnxruntime-genai folder's decoder; -o is then the output folder" };
        var output = new Option<FileInfo>("--output", "-o") { Description = "Rewritten model path", Required = true };
        var force = new Option<bool>("--force") { Description = "Overwrite an existing output" };
        var report = new Option<FileInfo?>("--report", "--json") { Description = "Write the per-site report as JSON to this file (- for stdout)" };
        var denseLen = new Option<long>("--dense-len") { Description = "Dense iff total length < this; -1 = always sparse", DefaultValueFactory = _ => d.DenseLen };
        var topk = new Option<long>("--topk") { Description = "Dynamic top-k blocks", DefaultValueFactory = _ => d.TopKBlocks };
        var window = new Option<long>("--window") { Description = "Sparse local window in tokens (window_size; not a sliding window)", DefaultValueFactory = _ => d.SparseWindowTokens };
        var block = new Option<long>("--block-size") { Description = "Sparse block size", DefaultValueFactory = _ => d.BlockSize };
        var init = new Option<long>("--init-blocks") { Description = "Always-selected leading blocks", DefaultValueFactory = _ => d.InitBlocks };
        var kernel = new Option<long>("--compress-kernel") { Description = "Compression window", DefaultValueFactory = _ => d.CompressKernel };
        var stride = new Option<long>("--compress-stride") { Description = "Compression stride", DefaultValueFactory = _ => d.CompressStride };
        var exactLse = new Option<bool>("--exact-lse") { Description = "Normalize stage-1 scores exactly (lse_approx=0)" };
        var scorePrecision = new Option<string>("--score-precision") { Description = "Stage-1 score precision before pooling: fp32 (default) or bf16 (the official kernel's rounding)", DefaultValueFactory = _ => "fp32" };
        var preset = new Option<string?>("--preset") { Description = $"Named sparse attributes ({SparsePresets.Names}); explicit flags win over it" };
        var state = new Option<bool>("--compressed-state") { Description = "Add past/present compressed-key inputs/outputs per layer" };
        var mode = new Option<bool>("--attention-mode-input") { Description = "Add one shared int32 'attention_mode' graph input" };
        var exposeSelection = new Option<bool>("--expose-selection") { Description = "Add each layer's selected_blocks as graph output 'selected_blocks.N' (for --selection-map)" };
        var tokenizerGraphs = new Option<bool>("--tokenizer-graphs") { Description = $"Also write {TokenizerGraphs.EncoderFile} and {TokenizerGraphs.DecoderFile} (ONNX Runtime Extensions ops, built from the folder's tokenizer.json) next to the rewritten model" };
        var targetOs = new Option<string?>("--target-os")
        {
            Description = "With a genai folder: the operating system it is for, linux or windows (default: this one); the folder gets that platform's op library " +
                          $"({NativeOpLibrary.LinuxFileName} or {NativeOpLibrary.WindowsFileName}) and its {GenAiFolder.ConfigFileName} names it",
        };
        var targetArch = new Option<string?>("--target-arch")
        {
            Description = $"With a genai folder: the architecture it is for, x64 or arm64 (default: this one); op libraries exist for {string.Join(", ", NativeOpLibrary.RuntimeIdentifiers)}",
        };
        var cmd = new Command("rewrite", "Rewrite the attention of an ONNX LLM to SwitchableAttention")
        {
            input, output, force, report, genaiFolder, preset, denseLen, topk, window, block, init, kernel, stride, exactLse, scorePrecision, state, mode, exposeSelection,
            tokenizerGraphs, targetOs, targetArch,
        };
        cmd.SetAction(r => CommandRunner.Guard(() =>
        {
            // The preset's attributes (the op's defaults without one), then every flag given explicitly.
            string? presetName = r.GetValue(preset);
            SparsePreset? chosen = null;
            if (presetName is not null)
                chosen = SparsePresets.Find(presetName) ?? throw new UsageException($"--preset: unknown preset '{presetName}'; known presets: {SparsePresets.Names}");
            var sparse = chosen?.Settings ?? SparseAttentionSettings.Defaults;
            var overrides = new List<string>();
            bool Given(Option o) => r.GetResult(o) is { Implicit: false };
            T Flag<T>(Option<T> o, T current, Func<T, string> show)
            {
                if (!Given(o)) return current;
                var v = r.GetValue(o)!;
                overrides.Add($"{o.Name} {show(v)}");
                return v;
            }
            string Num(long v) => v.ToString(System.Globalization.CultureInfo.InvariantCulture);
            sparse = sparse with
            {
                DenseLen = Flag(denseLen, sparse.DenseLen, Num),
                TopKBlocks = Flag(topk, sparse.TopKBlocks, Num),
                SparseWindowTokens = Flag(window, sparse.SparseWindowTokens, Num),
                BlockSize = Flag(block, sparse.BlockSize, Num),
                InitBlocks = Flag(init, sparse.InitBlocks, Num),
                CompressKernel = Flag(kernel, sparse.CompressKernel, Num),
                CompressStride = Flag(stride, sparse.CompressStride, Num),
                LseApprox = !Flag(exactLse, !sparse.LseApprox, v => v ? "true" : "false"),
            };
            var precisionText = Flag(scorePrecision, sparse.ScorePrecision == ScorePrecision.Bf16 ? "bf16" : "fp32", v => v);
            sparse = sparse with
            {
                ScorePrecision = precisionText.ToLowerInvariant() switch
                {
                    "fp32" => ScorePrecision.Fp32,
                    "bf16" => ScorePrecision.Bf16,
                    _ => throw new UsageException($"--score-precision must be fp32 or bf16, got '{precisionText}'"),
                },
            };
            var request = new RewriteRequest(
                new RewriteOptions { Sparse = sparse, CompressedState = r.GetValue(state), AttentionModeInput = r.GetValue(mode), ExposeSelection = r.GetValue(exposeSelection) }, chosen, overrides);
            if (request.Validate() is { } why) throw new UsageException(why);
            var rid = GenAiRewrite.TargetRuntimeIdentifier(r.GetValue(targetOs), r.GetValue(targetArch));
            var (model, target, genai) = GenAiRewrite.Resolve(r.GetValue(input), r.GetValue(genaiFolder), r.GetValue(output)!);
            if (genai is null && (Given(targetOs) || Given(targetArch)))
                Console.WriteLine("note: --target-os/--target-arch choose the op library copied into a genai folder; no genai folder is written here " +
                                  "(the rewritten model itself is the same on every platform)");
            return Run(model, target, r.GetValue(force), r.GetValue(report), request, genai, r.GetValue(tokenizerGraphs), rid);
        }));
        return cmd;
    }

    /// <summary>Rewrites; on a terminal a Spectre.Console status line (on stderr) follows the sites.</summary>
    private static IReadOnlyList<AttentionSite> RewriteWithProgress(CheckedModelFile file, RewriteOptions options)
    {
        if (Console.IsErrorRedirected || !Progress.CliProgress.Enabled) return ModelRewriter.Rewrite(file.Model, options).Sites;
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        IReadOnlyList<AttentionSite> sites = [];
        console.Status().Start("rewriting attention...", ctx =>
        {
            int done = 0;
            sites = ModelRewriter.Rewrite(file.Model, options, node => ctx.Status($"rewriting attention {++done}: {Markup.Escape(node)}")).Sites;
        });
        return sites;
    }

    /// <summary>The sparse attributes written: the preset asked for, the flags that overrode it, and the preset they match.</summary>
    private static void PrintAttributes(RewriteRequest request)
    {
        if (request.Preset is { } p)
        {
            Console.WriteLine($"preset {p.Name}: {SparsePresets.Describe(p.Settings)} ({p.Description})");
            if (request.OverriddenByFlags.Count > 0)
                Console.WriteLine($"explicit flags override the preset: {string.Join(", ", request.OverriddenByFlags)}");
        }
        var sparse = request.Options.Sparse;
        var match = SparsePresets.Matching(sparse);
        Console.WriteLine($"sparse attributes: {SparsePresets.Describe(sparse)} ({(match is null ? "custom" : $"= preset {match.Name}")})");
    }

    private static int Run(FileInfo input, FileInfo output, bool force, FileInfo? report, RewriteRequest request, GenAiFolder? genai, bool tokenizerGraphs, string targetRid)
    {
        if (!input.Exists) throw new FileNotFoundException($"Model not found: {input.FullName}");
        if (Path.GetFullPath(input.FullName) == Path.GetFullPath(output.FullName))
            throw new UsageException("The output must differ from the input (the input is never overwritten)");
        SafeFiles.CheckWritableTarget(output.FullName, "Output");
        if (output.Exists && !force) throw new UsageException($"Output {output.FullName} exists; pass --force to overwrite it");
        if (report is not null) ReportFile.Check(report, "--report", input.FullName, output.FullName);

        var options = request.Options;
        // The tokenizer graphs are built (and opened in ONNX Runtime) before anything is written.
        var graphs = tokenizerGraphs ? TokenizerGraphsOf(input) : null;
        var graphsFolder = Path.GetDirectoryName(output.FullName)!;
        if (graphs is not null && genai is null && !force)
            foreach (var name in new[] { TokenizerGraphs.EncoderFile, TokenizerGraphs.DecoderFile })
                if (SafeFiles.Kind(Path.Combine(graphsFolder, name), followLinks: false) != FileKind.Missing)
                    throw new UsageException($"--tokenizer-graphs: {Path.Combine(graphsFolder, name)} exists; pass --force to overwrite it");
        var file = ModelRewriter.Load(input.FullName);
        var genaiWrite = genai?.Prepare(file.Model, output.FullName, GenAiRewrite.OpLibraryFor(targetRid), force);
        var sites = RewriteWithProgress(file, options);
        int rewritten = sites.Count(s => s.Rewritten);
        string? reportText = report is null ? null : JsonSerializer.Serialize(new
        {
            schema_version = ReportFile.SchemaVersion,
            input = input.FullName, output = rewritten > 0 ? output.FullName : null, rewritten, sites = sites.Select(InspectCommand.SiteJson),
            genai = GenAiRewrite.Json(rewritten > 0 ? genaiWrite?.Planned : null),
            options = new
            {
                preset = request.Preset?.Name, preset_attributes = request.Preset?.Settings.Attributes().ToDictionary(a => a.Name, a => a.Value),
                overridden_by_flags = request.OverriddenByFlags, matches_preset = SparsePresets.Matching(options.Sparse)?.Name ?? "custom",
                score_precision = (long)options.Sparse.ScorePrecision,
                dense_len = options.Sparse.DenseLen, topk = options.Sparse.TopKBlocks, window_size = options.Sparse.SparseWindowTokens,
                block_size = options.Sparse.BlockSize, init_blocks = options.Sparse.InitBlocks, compress_kernel = options.Sparse.CompressKernel,
                compress_stride = options.Sparse.CompressStride, lse_approx = options.Sparse.LseApprox, compressed_state = options.CompressedState,
                attention_mode_input = options.AttentionModeInput, expose_selection = options.ExposeSelection,
            },
        }, InspectCommand.JsonOptions);
        if (rewritten > 0)
        {
            // The report is staged before the model is saved and renamed into place after it: when
            // either write fails, neither file is left behind.
            string? staged = report is null ? null : ReportFile.Stage(report, reportText!);
            IReadOnlyList<string> created;
            try
            {
                created = genaiWrite is not null ? genaiWrite.Write(file.Model) : file.Save(output.FullName, force);
                try
                {
                    // In a genai folder just written they replace any copies of the source's own.
                    if (graphs is not null) created = [.. created, .. graphs.Write(graphsFolder, force: force || genaiWrite is not null)];
                }
                catch
                {
                    ModelWriter.Undo(created);
                    throw;
                }
            }
            catch
            {
                if (staged is not null && staged != ReportFile.StdoutName) SafeFiles.TryDelete(staged);
                throw;
            }
            if (staged is not null)
            {
                try
                {
                    ReportFile.Commit(staged, report!);
                }
                catch
                {
                    ModelWriter.Undo(created);
                    throw;
                }
            }
        }
        else if (report is not null)
        {
            ReportFile.Write(report, reportText!);
        }
        PrintAttributes(request);
        InspectCommand.PrintSites(input.FullName, sites);
        if (rewritten == 0)
        {
            Console.Error.WriteLine($"error: nothing rewritten: {(sites.Count == 0 ? "no attention found" : string.Join("; ", sites.Select(s => s.Reason).Distinct()))}");
            return ExitCodes.NothingRewritten;
        }
        Console.WriteLine($"wrote {output.FullName} ({rewritten} of {sites.Count} attention sites rewritten)");
        if (genaiWrite is not null) GenAiRewrite.Print(genaiWrite.Planned);
        if (graphs is not null)
            Console.WriteLine($"tokenizer graphs {Path.Combine(graphsFolder, TokenizerGraphs.EncoderFile)}, {TokenizerGraphs.DecoderFile} " +
                              $"({graphs.Kind}, {ExtensionsOpLibrary.Domain} ops: register the ONNX Runtime Extensions library to run them)");
        return ExitCodes.Ok;
    }

    /// <summary>The tokenizer graphs of the model's folder (its tokenizer.json), checked by opening them in ONNX Runtime.</summary>
    private static TokenizerGraphs TokenizerGraphsOf(FileInfo model)
    {
        var folder = model.DirectoryName!;
        if (SafeFiles.Kind(Path.Combine(folder, ModelTokenizer.JsonFile), followLinks: false) == FileKind.Missing)
            throw new UsageException($"--tokenizer-graphs: {Path.Combine(folder, ModelTokenizer.JsonFile)} not found (the graphs are built from the model folder's tokenizer.json)");
        ModelTokenizer tokenizer;
        try
        {
            tokenizer = ModelTokenizer.ForModel(model.FullName);
        }
        catch (NotSupportedException e)
        {
            throw new UsageException($"--tokenizer-graphs: {e.Message}");
        }
        return tokenizer.Graphs ?? throw new UsageException($"--tokenizer-graphs: {tokenizer.Path}: {tokenizer.GraphsRefusal}");
    }
}
