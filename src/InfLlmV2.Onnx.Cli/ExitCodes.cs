namespace InfLlmV2.Onnx.Cli;

/// <summary>Process exit codes of every subcommand (a contract: scripts rely on them).</summary>
public static class ExitCodes
{
    /// <summary>Success.</summary>
    public const int Ok = 0;

    /// <summary>A comparison exceeded its tolerance (run, compare).</summary>
    public const int Mismatch = 1;

    /// <summary>Bad input or usage; a one-line reason went to stderr.</summary>
    public const int BadInput = 2;

    /// <summary>rewrite: the model is valid but nothing could be rewritten.</summary>
    public const int NothingRewritten = 3;
}
