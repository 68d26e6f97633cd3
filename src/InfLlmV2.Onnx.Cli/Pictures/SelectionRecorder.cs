using System.CommandLine;
using InfLlmV2.Onnx.Session;

namespace InfLlmV2.Onnx.Cli.Pictures;

/// <summary>
/// Collects the selection of request 0 and one kv head over a session's steps (its
/// <see cref="DecoderSessionOptions.OnSelection"/>) and writes it as a <see cref="SelectionMap"/>.
/// </summary>
public sealed class SelectionRecorder
{
    private readonly int _kvHead;
    private readonly List<List<(int Position, int[] Blocks)>> _layers = [];

    /// <summary>A recorder of kv head <paramref name="kvHead"/>.</summary>
    public SelectionRecorder(int kvHead) => _kvHead = kvHead;

    /// <summary>The kv head recorded.</summary>
    public int KvHead => _kvHead;

    /// <summary>Query rows recorded so far (per layer).</summary>
    public int Rows => _layers.Count == 0 ? 0 : _layers[0].Count;

    /// <summary>Records one step (pass as <see cref="DecoderSessionOptions.OnSelection"/>).</summary>
    public void Add(StepSelection step)
    {
        ArgumentNullException.ThrowIfNull(step);
        if (_kvHead >= step.KvHeads) throw new UsageException($"--kv-head {_kvHead}: the model has {step.KvHeads} kv heads");
        while (_layers.Count < step.Layers.Count) _layers.Add([]);
        for (int l = 0; l < step.Layers.Count; l++)
            for (int s = 0; s < step.StepLengths[0]; s++)
                _layers[l].Add((step.PastLengths[0] + s, step.Row(l, 0, _kvHead, s).ToArray()));
    }

    /// <summary>
    /// Writes the map to <paramref name="path"/>: rows at positions ≥ <paramref name="promptLength"/>
    /// are decode steps; the geometry is layer 0's sparse attributes.
    /// </summary>
    public void Write(string path, DecoderModel model, int promptLength, string title, int? markedBlock = null, string markedLabel = "marked block")
    {
        if (Rows == 0) throw new InvalidOperationException("no step was recorded for the selection map");
        var s = model.SwitchableNodes[0];
        var geometry = new SelectionGeometry((int)s.BlockSize, (int)s.InitBlocks, (int)(s.SparseWindowTokens / s.BlockSize));
        var panels = _layers.Select((rows, l) => new SelectionPanel(l, rows.Select(r => new SelectionRow(r.Position, r.Position >= promptLength, r.Blocks)).ToList())).ToList();
        SelectionMap.Write(path, panels, geometry, title, markedBlock, markedLabel);
    }
}

/// <summary>The <c>--selection-map FILE</c> and <c>--kv-head N</c> options of <c>generate</c> and <c>compare</c>.</summary>
public sealed class SelectionMapOptions
{
    /// <summary>Where to write the map (.png or .svg).</summary>
    public Option<FileInfo?> Map { get; } = new("--selection-map") { Description = "Write a selection map (.png or .svg): query position x key block per layer, coloured by why each block was attended (needs a model rewritten with --expose-selection)" };

    /// <summary>The kv head the map shows.</summary>
    public Option<int> KvHead { get; } = new("--kv-head") { Description = "With --selection-map: the kv head to draw", DefaultValueFactory = _ => 0 };

    /// <summary>Adds both options to <paramref name="command"/>.</summary>
    public void AddTo(Command command)
    {
        command.Options.Add(Map);
        command.Options.Add(KvHead);
    }

    /// <summary>Checks the options before any work; returns a recorder when a map was asked for, else null.</summary>
    public SelectionRecorder? Check(ParseResult r, params string[] inputs)
    {
        var file = r.GetValue(Map);
        bool headGiven = r.GetResult(KvHead) is { Implicit: false };
        if (file is null)
        {
            if (headGiven) throw new UsageException("--kv-head applies with --selection-map only");
            return null;
        }
        PictureFile.Check(file, "--selection-map", inputs);
        int head = (int)CommandRunner.InRange("--kv-head", r.GetValue(KvHead), 0, int.MaxValue);
        return new SelectionRecorder(head);
    }

    /// <summary>Throws the one-line error for a model that exposes no selection, or has fewer kv heads than asked for.</summary>
    public static void RequireExposed(DecoderModel model, string path, SelectionRecorder recorder)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(recorder);
        if (model.SelectionLayers == 0)
            throw new UsageException($"--selection-map: {path} exposes no selection (no 'selected_blocks.0' output); rewrite it with 'infllmv2 rewrite ... --expose-selection'");
        if (model.SwitchableNodes.Count == 0)
            throw new UsageException($"--selection-map: {path} has no SwitchableAttention node");
        if (recorder.KvHead >= model.KvNumHeads) throw new UsageException($"--kv-head {recorder.KvHead}: {path} has {model.KvNumHeads} kv heads");
    }
}
