using System.Security.Cryptography;
using InfLlmV2.Onnx.Cli;
using InfLlmV2.Onnx.GraphTools;

namespace InfLlmV2.Onnx.Tests.Reliability;

/// <summary>The reliability tests capture the console and set environment variables: they run alone.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ReliabilityCollection
{
    public const string Name = "Reliability";
}

/// <summary>One CLI run: exit code, stdout, stderr, and whether it finished in time.</summary>
public sealed record CliResult(int Code, string Out, string Err, bool Hung)
{
    /// <summary>stderr is exactly one "error: ..." line that is not an internal error (an unanticipated exception).</summary>
    public bool OneErrorLine
    {
        get
        {
            var lines = Err.Trim().Split('\n');
            return lines.Length == 1 && lines[0].StartsWith("error: ", StringComparison.Ordinal)
                && !lines[0].Contains(CommandRunner.InternalErrorPrefix, StringComparison.Ordinal);
        }
    }

    public override string ToString() => $"exit {Code}{(Hung ? " (hung)" : "")}; stderr: {Err.Trim()}";
}

/// <summary>Runs the CLI in this process (fast enough for hundreds of hostile files) with its console captured.</summary>
public static class InProcessCli
{
    private static readonly Lock Gate = new();

    public static CliResult Run(params string[] args) => RunWith(null, args);

    /// <summary>Runs with <see cref="SafeFiles.FailWriteVariable"/> set to <paramref name="failWrite"/> (null: unset).</summary>
    public static CliResult RunWith(string? failWrite, params string[] args)
    {
        lock (Gate)
        {
            var (stdout, stderr) = (Console.Out, Console.Error);
            var (o, e) = (new StringWriter(), new StringWriter());
            Console.SetOut(TextWriter.Synchronized(o));
            Console.SetError(TextWriter.Synchronized(e));
            Environment.SetEnvironmentVariable(SafeFiles.FailWriteVariable, failWrite);
            try
            {
                var task = Task.Run(() => CliApp.Run(args));
                bool done = task.Wait(TimeSpan.FromSeconds(60));
                return new CliResult(done ? task.Result : -1, o.ToString(), e.ToString(), !done);
            }
            finally
            {
                Environment.SetEnvironmentVariable(SafeFiles.FailWriteVariable, null);
                Console.SetOut(stdout);
                Console.SetError(stderr);
            }
        }
    }

    /// <summary>Every entry under <paramref name="dir"/> (links not followed) with its kind and, for regular files, a hash.</summary>
    public static SortedDictionary<string, string> Snapshot(string dir)
    {
        var map = new SortedDictionary<string, string>(StringComparer.Ordinal);
        if (!Directory.Exists(dir)) return map;
        foreach (var path in Directory.EnumerateFileSystemEntries(dir, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 }))
        {
            var kind = SafeFiles.Kind(path, followLinks: false);
            string value = kind == FileKind.Regular ? Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)))
                : kind == FileKind.SymbolicLink ? "link->" + new FileInfo(path).LinkTarget : kind.ToString();
            map[Path.GetRelativePath(dir, path)] = value;
        }
        return map;
    }

    public static string Describe(SortedDictionary<string, string> a, SortedDictionary<string, string> b) =>
        string.Join(", ", a.Keys.Union(b.Keys).Where(k => !a.TryGetValue(k, out var x) || !b.TryGetValue(k, out var y) || x != y));
}
