using System.Runtime.CompilerServices;
using InfLlmV2.Onnx.Session;
using Microsoft.ML.OnnxRuntime;

namespace InfLlmV2.Onnx.Text;

/// <summary>Why a generation ended.</summary>
public enum FinishReason
{
    /// <summary>Still running (or cancelled).</summary>
    None,

    /// <summary>An end-of-sequence id, a stop id or a stop sequence.</summary>
    Stop,

    /// <summary>The token limit (max new tokens, the KV capacity or the context length).</summary>
    Length,
}

/// <summary>Counts and the finish reason of one generation, filled in as it runs.</summary>
public sealed class GenerationStatistics
{
    /// <summary>Prompt tokens.</summary>
    public int InputTokens { get; internal set; }

    /// <summary>Generated tokens (the stop token included).</summary>
    public int OutputTokens { get; internal set; }

    /// <summary>Why generation ended (<see cref="FinishReason.None"/> while running or when cancelled).</summary>
    public FinishReason FinishReason { get; internal set; }

    /// <summary>The last generated token id (-1 before the first).</summary>
    public int LastToken { get; internal set; } = -1;
}

/// <summary>
/// A model file or folder opened for text generation: its <see cref="ModelFolder"/> configuration,
/// its <see cref="ModelTokenizer"/> and a <see cref="DecoderModel"/> (original or rewritten). Thread
/// safe: each generation runs its own <see cref="DecoderSession"/> over the shared model.
/// </summary>
public sealed class TextGenerator : IDisposable
{
    private TextGenerator(ModelFolder folder, ModelTokenizer tokenizer, DecoderModel model)
    {
        Folder = folder;
        Tokenizer = tokenizer;
        Model = model;
        VocabularySize = (int)model.Session.OutputMetadata[model.Names.Logits].Dimensions[^1];
    }

    /// <summary>The model's folder and what its configuration files say.</summary>
    public ModelFolder Folder { get; }

    /// <summary>The folder's tokenizer.</summary>
    public ModelTokenizer Tokenizer { get; }

    /// <summary>The decoder.</summary>
    public DecoderModel Model { get; }

    /// <summary>Logits per token.</summary>
    public int VocabularySize { get; }

    /// <summary>The context length: the configuration's, or the graph's position table rows, the smaller; null when neither says.</summary>
    public long? ContextLength => Folder.ContextLength is long c ? Math.Min(c, Model.MaxPositions ?? long.MaxValue) : Model.MaxPositions;

    /// <summary>Opens a model file or folder (see <see cref="ModelFolder.Open"/>) with its tokenizer.</summary>
    /// <param name="path">A model file, a genai folder or a Hugging Face style export folder.</param>
    /// <param name="options">Session options (the op library is registered on them); null for defaults.</param>
    public static TextGenerator Open(string path, SessionOptions? options = null)
    {
        var folder = ModelFolder.Open(path);
        var tokenizer = ModelTokenizer.ForModel(folder.ModelPath);
        var model = DecoderModel.Open(folder.ModelPath, options);
        return new TextGenerator(folder, tokenizer, model);
    }

    /// <summary>Encodes <paramref name="text"/> and checks every id against the vocabulary.</summary>
    /// <exception cref="InvalidDataException">The tokenizer produced an id outside the model's vocabulary.</exception>
    public int[] Encode(string text)
    {
        var ids = Tokenizer.Encode(text);
        foreach (var id in ids)
            if (id < 0 || id >= VocabularySize)
                throw new InvalidDataException($"{Tokenizer.Path} produced token id {id}, outside the model's vocabulary [0, {VocabularySize}): tokenizer and model do not match");
        return ids;
    }

    /// <summary>
    /// The options a prompt of <paramref name="promptLength"/> tokens runs with by default: the
    /// configuration's search settings (greedy unless it says do_sample), its end-of-sequence ids as
    /// stop tokens, and at most max_new_tokens, else max_length minus the prompt, else 256 tokens,
    /// within the context length.
    /// </summary>
    public GenerationOptions DefaultOptions(int promptLength)
    {
        var s = Folder.Search;
        int maxNew = s.MaxNewTokens ?? (s.MaxLength is int l ? Math.Max(1, l - promptLength) : 256);
        if (ContextLength is long ctx) maxNew = (int)Math.Max(1, Math.Min(maxNew, ctx - promptLength + 1));
        return new GenerationOptions
        {
            MaxNewTokens = maxNew,
            Temperature = s.EffectiveTemperature,
            TopKTokens = s.DoSample == true ? s.TopK ?? 0 : 0,
            TopP = s.DoSample == true && s.TopP is float p && p > 0 ? p : 1f,
            StopTokens = Folder.EosTokenIds.Where(id => id < VocabularySize).ToArray(),
        };
    }

    /// <summary>Streams the text generated after <paramref name="prompt"/> (see the token-id overload).</summary>
    public IAsyncEnumerable<string> GenerateAsync(string prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        var ids = Encode(prompt);
        return GenerateAsync(ids, options ?? DefaultOptions(ids.Length), null, cancellationToken);
    }

    /// <summary>
    /// Streams the text generated after <paramref name="prompt"/>: each piece is whole characters
    /// (a multi-byte character split over tokens comes out once complete), and the text of a stop
    /// token is not part of it. Cancellation is checked before every decode step, so it stops
    /// within one step (<see cref="OperationCanceledException"/>).
    /// </summary>
    /// <param name="prompt">Prompt token ids.</param>
    /// <param name="options">Search and stopping (null: <see cref="DefaultOptions"/>).</param>
    /// <param name="statistics">Filled in with the counts and the finish reason; may be null.</param>
    /// <param name="cancellationToken">Stops the generation.</param>
    /// <exception cref="ArgumentException">An empty prompt, or one longer than the context length (the message says it).</exception>
    public async IAsyncEnumerable<string> GenerateAsync(IReadOnlyList<int> prompt, GenerationOptions? options, GenerationStatistics? statistics,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        if (prompt.Count == 0) throw new ArgumentException("The prompt has no tokens");
        if (ContextLength is long ctx && prompt.Count > ctx)
            throw new ArgumentException($"The prompt ({prompt.Count} tokens) is longer than the model's context length {ctx}");
        options ??= DefaultOptions(prompt.Count);
        if (options.MaxNewTokens < 1) throw new ArgumentException($"MaxNewTokens must be >= 1, got {options.MaxNewTokens}");
        statistics ??= new GenerationStatistics();
        statistics.InputTokens = prompt.Count;
        cancellationToken.ThrowIfCancellationRequested();
        var sampler = new TokenSampler(options);
        // The last generated token is not fed back: a request holds at most prompt + max new - 1 tokens.
        long capacity = Math.Min(prompt.Count + (long)options.MaxNewTokens, ContextLength ?? long.MaxValue);
        using var session = new DecoderSession(Model, new DecoderSessionOptions { Capacity = (int)Math.Min(int.MaxValue, capacity) });
        var promptArray = prompt.ToArray();
        var logits = await Task.Run(() =>
        {
            session.AppendTokens(promptArray);
            return session.LastLogits()!;
        }, cancellationToken).ConfigureAwait(false);
        var decoder = new StreamingDecoder(Tokenizer);
        var stops = options.StopTokens as ISet<int> ?? options.StopTokens.ToHashSet();
        for (int n = 0; ; n++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int token = sampler.Next(logits);
            statistics.OutputTokens = n + 1;
            statistics.LastToken = token;
            if (stops.Contains(token))
            {
                statistics.FinishReason = FinishReason.Stop;
                break;
            }
            var piece = decoder.Add(token);
            if (piece.Length > 0) yield return piece;
            if (n + 1 >= options.MaxNewTokens || session.Lengths[0] + 1 > capacity)
            {
                statistics.FinishReason = FinishReason.Length;
                break;
            }
            cancellationToken.ThrowIfCancellationRequested();
            logits = await Task.Run(() => session.NextToken(token), cancellationToken).ConfigureAwait(false);
        }
        var rest = decoder.Flush();
        if (rest.Length > 0) yield return rest;
    }

    /// <inheritdoc/>
    public void Dispose() => Model.Dispose();
}
