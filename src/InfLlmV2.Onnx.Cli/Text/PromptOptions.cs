using System.CommandLine;
using InfLlmV2.Onnx.GraphTools;
using InfLlmV2.Onnx.Text;

namespace InfLlmV2.Onnx.Cli.Text;

/// <summary>Where a prompt comes from: text (<c>--prompt</c>, <c>--prompt-file</c>, tokenized with the model folder's tokenizer) or token ids.</summary>
internal static class PromptOptions
{
    /// <summary>The options <c>--prompt TEXT</c> and <c>--prompt-file F</c>.</summary>
    internal static (Option<string?> Text, Option<FileInfo?> File) Create() =>
        (new Option<string?>("--prompt") { Description = "Prompt text, tokenized with the model folder's tokenizer.json or tokenizer.model" },
         new Option<FileInfo?>("--prompt-file") { Description = "File whose text (UTF-8) is the prompt, tokenized like --prompt" });

    /// <summary>True when the text of a prompt is given (so the model's tokenizer is needed).</summary>
    internal static bool WantsText(string? text, FileInfo? file) => text is not null || file is not null;

    /// <summary>Checks that at most one prompt source is given (exactly one when <paramref name="required"/>).</summary>
    internal static void CheckOne(bool required, params (string Flag, bool Given)[] sources)
    {
        var given = sources.Where(s => s.Given).Select(s => s.Flag).ToList();
        var all = string.Join(", ", sources.Select(s => s.Flag));
        if (given.Count > 1) throw new UsageException($"give one prompt, not {string.Join(" and ", given)}");
        if (required && given.Count == 0) throw new UsageException($"give a prompt: one of {all}");
    }

    /// <summary>Largest <c>--prompt-file</c> read (16 MiB: millions of tokens, more than any model's context).</summary>
    internal const long MaxPromptFileBytes = 16L << 20;

    /// <summary>The prompt text of <c>--prompt</c> or <c>--prompt-file</c> (a regular UTF-8 file of at most <see cref="MaxPromptFileBytes"/>).</summary>
    internal static string ReadText(string? text, FileInfo? file)
    {
        if (file is not null)
        {
            if (SafeFiles.Kind(file.FullName, followLinks: true) == FileKind.Missing)
                throw new FileNotFoundException($"Prompt file not found: {file.FullName}");
            text = SafeFiles.ReadTextBounded(file.FullName, "--prompt-file", MaxPromptFileBytes);
        }
        if (string.IsNullOrEmpty(text)) throw new UsageException(file is not null ? $"the prompt file {file.FullName} is empty" : "--prompt is empty");
        return text;
    }

    /// <summary>Checks every prompt id against the model's vocabulary (<paramref name="tokenizer"/>: the tokenizer file that produced them, null for --prompt-ids).</summary>
    internal static void CheckVocabulary(int[] ids, int vocab, string? tokenizer)
    {
        foreach (var id in ids)
            if (id < 0 || id >= vocab)
                throw tokenizer is null
                    ? new UsageException($"--prompt-ids: token id '{id}' is not an integer in [0, {vocab})")
                    : new InvalidDataException($"{tokenizer} produced token id {id}, outside the model's vocabulary [0, {vocab}): tokenizer and model do not match");
    }

    /// <summary>Tokenizes <paramref name="text"/> and checks every id against the model's vocabulary.</summary>
    internal static int[] Encode(ModelTokenizer tokenizer, string text, int vocab)
    {
        var ids = tokenizer.Encode(text);
        if (ids.Length == 0) throw new UsageException($"the prompt tokenizes to no tokens ({tokenizer.Path})");
        foreach (var id in ids)
            if (id < 0 || id >= vocab)
                throw new InvalidDataException($"{tokenizer.Path} produced token id {id}, outside the model's vocabulary [0, {vocab}): tokenizer and model do not match");
        return ids;
    }
}
