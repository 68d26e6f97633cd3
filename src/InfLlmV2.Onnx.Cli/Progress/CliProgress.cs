using System.Diagnostics;
using System.Globalization;
using System.Text;
using Spectre.Console;

namespace InfLlmV2.Onnx.Cli.Progress;

/// <summary>What a progress counts.</summary>
public enum ProgressUnit
{
    /// <summary>Items (cases, chunks, stages).</summary>
    Items,

    /// <summary>Bytes (shown as MB/GB).</summary>
    Bytes,
}

/// <summary>
/// Progress on long work, always on stderr (stdout, which may carry JSON or test data, is never
/// touched): Spectre.Console progress bars when stderr is a terminal, else a plain line every few
/// seconds (<c>INFLLMV2_PROGRESS_SECONDS</c>, default 5; 0 = every update); <c>--no-progress</c>
/// silences both. Scopes nest (one bar each while a display is live).
/// </summary>
public static class CliProgress
{
    private static readonly Lock Gate = new();
    private static LiveDisplay? _live;
    private static int _depth;

    /// <summary>Whether progress is shown at all (<c>--no-progress</c> clears it).</summary>
    public static bool Enabled { get; set; } = true;

    /// <summary>Seconds between the plain lines without a terminal.</summary>
    public static double PlainIntervalSeconds =>
        double.TryParse(Environment.GetEnvironmentVariable("INFLLMV2_PROGRESS_SECONDS"), NumberStyles.Float, CultureInfo.InvariantCulture, out var s) && s >= 0 ? s : 5;

    /// <summary>Starts a progress of <paramref name="total"/> <paramref name="unit"/>; dispose it when the work is done.</summary>
    public static ProgressScope Start(string description, double total, ProgressUnit unit = ProgressUnit.Items)
    {
        if (!Enabled) return new ProgressScope(null, null, description, total, unit);
        if (Console.IsErrorRedirected) return new ProgressScope(null, new PlainLine(description, total, unit), description, total, unit);
        lock (Gate)
        {
            _live ??= LiveDisplay.Open();
            _depth++;
            return new ProgressScope(_live.AddTask(description, total, unit), null, description, total, unit);
        }
    }

    internal static void End()
    {
        lock (Gate)
        {
            if (--_depth > 0 || _live is null) return;
            _live.Dispose();
            _live = null;
        }
    }

    /// <summary>A size in bytes as people read it.</summary>
    public static string Size(double bytes) =>
        bytes >= 1e9 ? $"{bytes / 1e9:F2} GB" : bytes >= 1e6 ? $"{bytes / 1e6:F1} MB" : $"{bytes / 1e3:F0} kB";

    // The plain form: "progress: <what>: 45% (3 of 7) after 12 s", at most every PlainIntervalSeconds.
    internal sealed class PlainLine(string description, double total, ProgressUnit unit)
    {
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private double _lastPrinted;
        private double _printedValue = double.NaN;

        public void Report(double value, string what, bool final)
        {
            double now = _clock.Elapsed.TotalSeconds;
            if (!final && now - _lastPrinted < PlainIntervalSeconds) return;
            if (final && now < PlainIntervalSeconds && PlainIntervalSeconds > 0) return;  // short work: no line at all
            if (final && value == _printedValue) return;  // said already
            _lastPrinted = now;
            _printedValue = value;
            string amount = unit == ProgressUnit.Bytes ? $"{Size(value)} of {Size(total)}" : $"{value:0} of {total:0}";
            double share = total > 0 ? Math.Min(1, value / total) : 0;
            Console.Error.WriteLine($"progress: {what}: {share:P0} ({amount}) after {now:F0} s");
        }

        public string Description => description;
    }

    // One Spectre.Console progress display on stderr, run on its own thread while scopes are open.
    // While it is live and stdout is the same terminal, stdout lines go through it (above the bars).
    private sealed class LiveDisplay : IDisposable
    {
        private readonly IAnsiConsole _console;
        private readonly ManualResetEventSlim _ready = new(), _done = new();
        private readonly Thread _thread;
        private readonly TextWriter? _stdout;
        private ProgressContext? _context;

        private LiveDisplay()
        {
            _console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
            _thread = new Thread(() =>
            {
                _console.Progress()
                    .AutoClear(true)
                    .HideCompleted(true)
                    .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new SpinnerColumn())
                    .Start(ctx =>
                    {
                        _context = ctx;
                        _ready.Set();
                        _done.Wait();
                        ctx.Refresh();
                    });
            })
            { IsBackground = true, Name = "infllmv2 progress" };
            _thread.Start();
            _ready.Wait();
            if (!Console.IsOutputRedirected)
            {
                _stdout = Console.Out;
                Console.SetOut(new LineForwarder(_console));
            }
        }

        public static LiveDisplay Open() => new();

        public ProgressTask AddTask(string description, double total, ProgressUnit unit) =>
            _context!.AddTask(Markup.Escape(description), maxValue: Math.Max(total, 1e-9));

        public void Dispose()
        {
            if (_stdout is not null)
            {
                Console.Out.Flush();
                Console.SetOut(_stdout);
            }
            _done.Set();
            _thread.Join();
        }
    }

    // Console.Out while a live display runs on the same terminal: whole lines are written through
    // the Spectre console, which draws them above the bars.
    private sealed class LineForwarder(IAnsiConsole console) : TextWriter
    {
        private readonly StringBuilder _line = new();

        public override Encoding Encoding => Encoding.UTF8;

        public override void Write(char value)
        {
            if (value == '\n')
            {
                console.Write(new Spectre.Console.Text(_line.ToString().TrimEnd('\r') + "\n"));
                _line.Clear();
            }
            else
            {
                _line.Append(value);
            }
        }

        public override void Flush()
        {
            if (_line.Length == 0) return;
            console.Write(new Spectre.Console.Text(_line.ToString()));
            _line.Clear();
        }
    }
}

/// <summary>One progress (a bar on a terminal, a plain line elsewhere, nothing with --no-progress); dispose when done.</summary>
public sealed class ProgressScope : IDisposable
{
    private readonly ProgressTask? _task;
    private readonly CliProgress.PlainLine? _plain;
    private readonly string _description;
    private readonly double _total;
    private readonly ProgressUnit _unit;
    private double _value;
    private string _what;
    private bool _disposed;

    internal ProgressScope(ProgressTask? task, CliProgress.PlainLine? plain, string description, double total, ProgressUnit unit)
    {
        (_task, _plain, _description, _total, _unit, _what) = (task, plain, description, total, unit, description);
    }

    /// <summary>Adds <paramref name="amount"/> to the work done.</summary>
    public void Advance(double amount = 1) => Set(_value + amount);

    /// <summary>Sets the work done to <paramref name="value"/>.</summary>
    public void Set(double value)
    {
        _value = Math.Min(value, _total);
        if (_task is not null) _task.Value = _value;
        _plain?.Report(_value, _what, final: false);
    }

    /// <summary>Names the part being worked on (shown after the description).</summary>
    public void Describe(string part)
    {
        _what = $"{_description}: {part}";
        if (_task is not null) _task.Description = Markup.Escape(_what);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_task is not null)
        {
            _task.Value = _total;
            _task.StopTask();
            CliProgress.End();
        }
        _plain?.Report(_value, _what, final: true);
    }
}
