using System.CommandLine;
using InfLlmV2.Onnx.Cli.Commands;

namespace InfLlmV2.Onnx.Cli;

/// <summary>The <c>infllmv2</c> command line as a method, so tests can run it in-process.</summary>
public static class CliApp
{
    /// <summary>Parses <paramref name="args"/>, runs the subcommand and returns its exit code (see <see cref="ExitCodes"/>).</summary>
    public static int Run(string[] args)
    {
        var root = new RootCommand("infllmv2: InfLLM-V2 dense-sparse switchable attention for ONNX Runtime");
        root.Subcommands.Add(VersionCommand.Create());
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(RunCommand.Create());
        root.Subcommands.Add(InspectCommand.Create());
        root.Subcommands.Add(RewriteCommand.Create());
        root.Subcommands.Add(CompareCommand.Create());
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        root.Options.Add(new Option<bool>("--verbose") { Description = "Add the stack trace to unexpected (internal) errors", Recursive = true });
        var noProgress = new Option<bool>("--no-progress") { Description = "No progress bars (terminal) or progress lines (stderr otherwise)", Recursive = true };
        root.Options.Add(noProgress);

        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            // One line, like every other usage error: the parser's messages joined, then the hint.
            var messages = parsed.Errors.Select(e => e.Message.ReplaceLineEndings(" ").Trim()).Distinct();
            Console.Error.WriteLine($"error: {string.Join("; ", messages)} (try 'infllmv2 --help')");
            return ExitCodes.BadInput;
        }
        CommandRunner.Verbose = parsed.GetValue<bool>("--verbose");
        Progress.CliProgress.Enabled = !parsed.GetValue(noProgress);
        Progress.CopyProgress.Install();
        try
        {
            return ReportFile.WithJsonOnStdout(args, () => parsed.Invoke());
        }
        finally
        {
            CommandRunner.Verbose = false;
        }
    }
}
