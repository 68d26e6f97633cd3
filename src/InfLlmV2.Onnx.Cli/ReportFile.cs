using System.Text;
using InfLlmV2.Onnx.GraphTools;

namespace InfLlmV2.Onnx.Cli;

/// <summary>
/// The JSON files commands write beside their console output (<c>--json</c>, <c>--report</c>):
/// checked before the command does any work, so a typo never costs a finished run, and written
/// whole or not at all.
/// </summary>
public static class ReportFile
{
    /// <summary>The <c>schema_version</c> every JSON document of the CLI carries (1: the first versioned shape).</summary>
    public const int SchemaVersion = 1;

    /// <summary>The file name that means standard output (<c>--json -</c>).</summary>
    public const string StdoutName = "-";

    // The real standard output while a command runs with --json - (its console text then goes to stderr).
    private static readonly AsyncLocal<TextWriter?> JsonOut = new();
    private static readonly AsyncLocal<string?> StagedText = new();

    /// <summary>Whether <paramref name="file"/> is <c>-</c> (standard output).</summary>
    public static bool IsStdout(FileInfo? file) => file is not null && file.Name == StdoutName && file.ToString() == StdoutName;

    /// <summary>
    /// Runs <paramref name="body"/>; when <paramref name="args"/> send a JSON document to standard
    /// output (<c>--json -</c> or <c>--report -</c>), the command's console text goes to stderr so
    /// that stdout holds the JSON document alone.
    /// </summary>
    public static int WithJsonOnStdout(string[] args, Func<int> body)
    {
        bool toStdout = false;
        for (int i = 0; i + 1 < args.Length; i++)
            if (args[i] is "--json" or "--report" && args[i + 1] == StdoutName) toStdout = true;
        if (!toStdout) return body();
        var stdout = Console.Out;
        JsonOut.Value = stdout;
        Console.SetOut(Console.Error);
        try
        {
            return body();
        }
        finally
        {
            Console.SetOut(stdout);
            JsonOut.Value = null;
        }
    }

    /// <summary>Writes a JSON document to standard output (the real one while console text is sent to stderr).</summary>
    public static void WriteStdout(string text)
    {
        var w = JsonOut.Value ?? Console.Out;
        w.WriteLine(text);
        w.Flush();
    }
    /// <summary>
    /// Throws a <see cref="UsageException"/> naming <paramref name="option"/> when <paramref name="file"/>
    /// cannot be written as asked: its folder does not exist, it is a folder, it is not a regular file
    /// (a symbolic link such as <c>/dev/stdout</c>, a device such as <c>/dev/null</c>, a FIFO or a
    /// socket), it is one of the command's <paramref name="inputs"/>, or it exists and is not a JSON
    /// document (a model, its weights or a tensor is never replaced by a report).
    /// </summary>
    public static void Check(FileInfo file, string option, params string[] inputs)
    {
        if (IsStdout(file)) return;
        string full = Path.GetFullPath(file.FullName);
        if (Directory.Exists(full)) throw new UsageException($"{option} {full} is a folder; give a file path");
        var kind = SafeFiles.Kind(full, followLinks: false);
        if (kind is not (FileKind.Missing or FileKind.Regular))
            throw new UsageException($"{option} {full} is {SafeFiles.Describe(kind)}; reports are written only to regular files");
        string? dir = Path.GetDirectoryName(full);
        if (dir is null || !Directory.Exists(dir)) throw new UsageException($"{option} {full}: folder {dir} does not exist");
        foreach (var input in inputs)
            if (SafeFiles.SameFile(full, input))
                throw new UsageException($"{option} {full} is an input of this command ({Path.GetFullPath(input)}); inputs are never overwritten");
        if (File.Exists(full) && !LooksLikeJson(full))
            throw new UsageException($"{option} {full} exists and is not a JSON file; refusing to overwrite it");
    }

    /// <summary>Writes <paramref name="text"/> to a temporary file beside <paramref name="file"/>, then renames it over the target (a regular file or nothing).</summary>
    /// <remarks><c>-</c> writes to standard output instead.</remarks>
    public static void Write(FileInfo file, string text)
    {
        if (IsStdout(file)) WriteStdout(text);
        else SafeFiles.WriteAtomically(file.FullName, s => s.Write(Encoding.UTF8.GetBytes(text)), "Report");
    }

    /// <summary>Writes the temporary file of <see cref="Write"/> without renaming it; <see cref="Commit"/> does (for <c>-</c>, the text waits in memory).</summary>
    public static string Stage(FileInfo file, string text)
    {
        if (!IsStdout(file)) return SafeFiles.WriteTemporary(file.FullName, s => s.Write(Encoding.UTF8.GetBytes(text)), "Report");
        StagedText.Value = text;
        return StdoutName;
    }

    /// <summary>Renames a temporary from <see cref="Stage"/> over the report; the temporary is gone afterwards either way.</summary>
    public static void Commit(string temp, FileInfo file)
    {
        if (IsStdout(file))
        {
            WriteStdout(StagedText.Value ?? "");
            StagedText.Value = null;
            return;
        }
        try
        {
            SafeFiles.CommitTemporary(temp, file.FullName, "Report");
        }
        finally
        {
            SafeFiles.TryDelete(temp);
        }
    }

    // An existing JSON report starts, after white space, with an object or an array.
    private static bool LooksLikeJson(string path)
    {
        using var stream = SafeFiles.OpenRegular(path, "existing report", long.MaxValue);
        int b;
        while ((b = stream.ReadByte()) is ' ' or '\t' or '\r' or '\n' or 0xEF or 0xBB or 0xBF) { }  // white space, a UTF-8 BOM
        return b is '{' or '[' or -1;
    }
}
