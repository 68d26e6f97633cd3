using System.CommandLine;
using InfLlmV2.Onnx.Cli;
using InfLlmV2.Onnx.Cli.Commands;

var root = new RootCommand("infllmv2: InfLLM-V2 dense-sparse switchable attention for ONNX Runtime");
root.Subcommands.Add(VersionCommand.Create());
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(RunCommand.Create());
root.Subcommands.Add(InspectCommand.Create());
root.Subcommands.Add(RewriteCommand.Create());
root.Subcommands.Add(CompareCommand.Create());
root.Subcommands.Add(GenerateCommand.Create());
root.Subcommands.Add(BenchCommand.Create());

var parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    foreach (var error in parsed.Errors)
        Console.Error.WriteLine($"error: {error.Message}");
    Console.Error.WriteLine("Try 'infllmv2 --help'.");
    return ExitCodes.BadInput;
}
return parsed.Invoke();
