using InfLlmV2.Onnx.GraphTools;
using SkiaSharp;

namespace InfLlmV2.Onnx.Cli.Pictures;

/// <summary>The picture formats, chosen by the file's extension.</summary>
public enum PictureFormat
{
    /// <summary>Portable Network Graphics (<c>.png</c>).</summary>
    Png,

    /// <summary>Scalable Vector Graphics (<c>.svg</c>).</summary>
    Svg,
}

/// <summary>
/// A picture file a command writes (<c>--selection-map</c>, <c>--plot</c>): the format from its
/// extension, checked before the command does any work, and written whole or not at all (a
/// temporary beside it, then renamed over it).
/// </summary>
public static class PictureFile
{
    /// <summary>The format of <paramref name="path"/>'s extension; a <see cref="UsageException"/> naming <paramref name="option"/> for any other.</summary>
    public static PictureFormat FormatOf(string path, string option) =>
        Path.GetExtension(path).ToLowerInvariant() switch
        {
            ".png" => PictureFormat.Png,
            ".svg" => PictureFormat.Svg,
            var ext => throw new UsageException($"{option} {path}: unknown picture format '{(ext.Length == 0 ? "(no extension)" : ext)}'; use .png or .svg"),
        };

    /// <summary>
    /// Throws a <see cref="UsageException"/> naming <paramref name="option"/> when <paramref name="file"/>
    /// cannot be written as asked: an unknown extension, a folder, not a regular file, a missing
    /// folder, one of the command's <paramref name="inputs"/>, or an existing file that is not a
    /// picture of its format (a model or a report is never replaced by a picture).
    /// </summary>
    public static PictureFormat Check(FileInfo file, string option, params string[] inputs)
    {
        string full = Path.GetFullPath(file.FullName);
        var format = FormatOf(full, option);
        if (Directory.Exists(full)) throw new UsageException($"{option} {full} is a folder; give a file path");
        var kind = SafeFiles.Kind(full, followLinks: false);
        if (kind is not (FileKind.Missing or FileKind.Regular))
            throw new UsageException($"{option} {full} is {SafeFiles.Describe(kind)}; pictures are written only to regular files");
        string? dir = Path.GetDirectoryName(full);
        if (dir is null || !Directory.Exists(dir)) throw new UsageException($"{option} {full}: folder {dir} does not exist");
        foreach (var input in inputs)
            if (SafeFiles.SameFile(full, input))
                throw new UsageException($"{option} {full} is an input of this command ({Path.GetFullPath(input)}); inputs are never overwritten");
        if (kind == FileKind.Regular && !LooksLike(full, format))
            throw new UsageException($"{option} {full} exists and is not a {format.ToString().ToUpperInvariant()} picture; refusing to overwrite it");
        return format;
    }

    /// <summary>
    /// Draws a <paramref name="width"/> × <paramref name="height"/> picture with <paramref name="draw"/>
    /// and writes it to <paramref name="path"/> in the format of its extension, atomically.
    /// </summary>
    public static void Write(string path, int width, int height, Action<SKCanvas> draw)
    {
        var format = FormatOf(path, "picture");
        PictureFonts.Ensure();
        SafeFiles.WriteAtomically(path, stream =>
        {
            if (format == PictureFormat.Svg)
            {
                using (var canvas = SKSvgCanvas.Create(new SKRect(0, 0, width, height), stream))
                {
                    canvas.Clear(SKColors.White);
                    draw(canvas);
                }  // the SVG document is finished when the canvas is disposed
                return;
            }
            using var surface = SKSurface.Create(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Premul))
                ?? throw new InvalidOperationException($"cannot allocate a {width}x{height} picture");
            surface.Canvas.Clear(SKColors.White);
            draw(surface.Canvas);
            using var image = surface.Snapshot();
            using var data = image.Encode(SKEncodedImageFormat.Png, 100) ?? throw new InvalidOperationException("PNG encoding failed");
            data.SaveTo(stream);
        }, "picture");
    }

    /// <summary>Renders <paramref name="plot"/> into <paramref name="rect"/> of <paramref name="canvas"/> only (ScottPlot clears the whole canvas otherwise).</summary>
    public static void RenderInto(SKCanvas canvas, ScottPlot.Plot plot, ScottPlot.PixelRect rect)
    {
        canvas.Save();
        canvas.ClipRect(new SKRect(rect.Left, rect.Top, rect.Right, rect.Bottom));
        plot.FigureBackground.Color = ScottPlot.Colors.White;
        plot.Render(canvas, rect);
        canvas.Restore();
    }

    private static bool LooksLike(string path, PictureFormat format)
    {
        using var stream = SafeFiles.OpenRegular(path, "existing picture", long.MaxValue);
        var head = new byte[256];
        int n = stream.Read(head, 0, head.Length);
        if (n == 0) return true;  // an empty file holds nothing to lose
        if (format == PictureFormat.Png) return n >= 8 && head.AsSpan(0, 8).SequenceEqual(PngSignature);
        var text = System.Text.Encoding.UTF8.GetString(head, 0, n).TrimStart('\uFEFF', ' ', '\t', '\r', '\n');
        return text.StartsWith("<?xml", StringComparison.Ordinal) || text.StartsWith("<svg", StringComparison.Ordinal);
    }

    private static readonly byte[] PngSignature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];
}

/// <summary>
/// The font of every picture: DejaVu Sans (Debian's fonts-dejavu-core, which eng/bootstrap.sh
/// installs) when present, so text looks the same on every machine; SkiaSharp's native library
/// (the NoDependencies build) reads fonts from /usr/share/fonts without fontconfig.
/// </summary>
internal static class PictureFonts
{
    private static readonly Lazy<bool> Loaded = new(() =>
    {
        foreach (var path in new[] { "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf" })
            if (File.Exists(path))
            {
                ScottPlot.Fonts.AddFontFile("DejaVu Sans", path, bold: false, italic: false);
                var boldPath = Path.Combine(Path.GetDirectoryName(path)!, "DejaVuSans-Bold.ttf");
                if (File.Exists(boldPath)) ScottPlot.Fonts.AddFontFile("DejaVu Sans", boldPath, bold: true, italic: false);
                ScottPlot.Fonts.Default = "DejaVu Sans";
                return true;
            }
        return false;
    });

    public static void Ensure() => _ = Loaded.Value;
}
