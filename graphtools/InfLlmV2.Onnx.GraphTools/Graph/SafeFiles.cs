using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace InfLlmV2.Onnx.GraphTools;

/// <summary>What a path names on disk.</summary>
public enum FileKind
{
    /// <summary>Nothing is there.</summary>
    Missing,

    /// <summary>A regular file.</summary>
    Regular,

    /// <summary>A folder.</summary>
    Directory,

    /// <summary>A symbolic link (only seen when links are not followed).</summary>
    SymbolicLink,

    /// <summary>A character device (<c>/dev/null</c>, <c>/dev/zero</c>, a terminal).</summary>
    CharacterDevice,

    /// <summary>A block device.</summary>
    BlockDevice,

    /// <summary>A named pipe.</summary>
    Fifo,

    /// <summary>A Unix socket.</summary>
    Socket,
}

/// <summary>The identity of a file: its device and inode (equal for two names of one file: links, bind mounts).</summary>
public readonly record struct FileId(uint DevMajor, uint DevMinor, ulong Inode);

/// <summary>
/// The file rules of every command: files read from a model's folder are regular files whose real
/// path (all symbolic links resolved) stays inside that folder, and files written are written whole
/// (a temporary renamed into place) over nothing but a regular file, leaving no temporary behind.
/// </summary>
public static class SafeFiles
{
    /// <summary>
    /// Environment variable for tests: when set, writing any file whose name contains its value
    /// fails part-way with an <see cref="IOException"/>, as a full disk would.
    /// </summary>
    public const string FailWriteVariable = "INFLLMV2_TEST_FAIL_WRITE";

    /// <summary>
    /// Environment variable for tests: when set, writing any file whose name contains its value
    /// pauses for 60 s with the temporary written (so a test can interrupt the process there).
    /// </summary>
    public const string PauseWriteVariable = "INFLLMV2_TEST_PAUSE_WRITE";

    /// <summary>What <paramref name="path"/> names; symbolic links are followed when <paramref name="followLinks"/>.</summary>
    public static FileKind Kind(string path, bool followLinks)
    {
        if (!OperatingSystem.IsLinux()) return ManagedKind(path, followLinks);
        if (path.Contains('\0')) return FileKind.Missing;
        return Stat(AtFdCwd, path, followLinks ? 0 : AtSymlinkNoFollow) is { } st ? st.Kind : FileKind.Missing;
    }

    /// <summary>The device and inode of what <paramref name="path"/> names (links followed); null when missing (or not Linux).</summary>
    public static FileId? Id(string path)
    {
        if (!OperatingSystem.IsLinux() || path.Contains('\0')) return null;
        return Stat(AtFdCwd, Path.GetFullPath(path), 0)?.Id;
    }

    private const int AtFdCwd = -100, AtSymlinkNoFollow = 0x100, AtEmptyPath = 0x1000;

    private static (FileKind Kind, FileId Id, long Size)? Stat(int dirfd, string path, int flags)
    {
        var buffer = new byte[256];  // struct statx: the same layout on every Linux architecture
        const uint StatxBasicStats = 0x7ff;
        if (Statx(dirfd, path, flags, StatxBasicStats, buffer) != 0) return null;
        int mode = BitConverter.ToUInt16(buffer, 28) & 0xF000;
        var kind = mode switch
        {
            0x8000 => FileKind.Regular,
            0x4000 => FileKind.Directory,
            0xA000 => FileKind.SymbolicLink,
            0x2000 => FileKind.CharacterDevice,
            0x6000 => FileKind.BlockDevice,
            0x1000 => FileKind.Fifo,
            _ => FileKind.Socket,
        };
        var id = new FileId(BitConverter.ToUInt32(buffer, 136), BitConverter.ToUInt32(buffer, 140), BitConverter.ToUInt64(buffer, 32));
        return (kind, id, (long)BitConverter.ToUInt64(buffer, 40));
    }

    /// <summary>Words for a kind in messages ("a FIFO").</summary>
    public static string Describe(FileKind kind) => kind switch
    {
        FileKind.Missing => "missing",
        FileKind.Regular => "a regular file",
        FileKind.Directory => "a folder",
        FileKind.SymbolicLink => "a symbolic link",
        FileKind.CharacterDevice => "a character device",
        FileKind.BlockDevice => "a block device",
        FileKind.Fifo => "a FIFO (named pipe)",
        _ => "a socket",
    };

    /// <summary>The absolute path with every symbolic link of every component resolved.</summary>
    /// <exception cref="FileNotFoundException">A component does not exist.</exception>
    public static string RealPath(string path)
    {
        var full = Path.GetFullPath(path);
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS())
            return new FileInfo(full).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? full;
        nint p = NativeRealPath(full, 0);
        if (p == 0) throw new FileNotFoundException($"{full} does not exist or cannot be resolved", full);
        try
        {
            return Marshal.PtrToStringUTF8(p)!;
        }
        finally
        {
            Free(p);
        }
    }

    /// <summary>
    /// <paramref name="path"/> ending in one directory separator (<c>/</c>; <c>\</c> on Windows): the
    /// prefix that a path inside it starts with.
    /// </summary>
    internal static string WithTrailingSeparator(string path) =>
        Path.EndsInDirectorySeparator(path) ? path : path + Path.DirectorySeparatorChar;

    /// <summary>
    /// Resolves <paramref name="relative"/> (a relative POSIX path) against <paramref name="folder"/>
    /// and returns its real path and length. Refused (<see cref="InvalidDataException"/>, or
    /// <see cref="FileNotFoundException"/> when missing) unless it is a regular file whose real path
    /// lies inside the real path of the folder. <paramref name="what"/> starts each message.
    /// </summary>
    public static (string RealPath, long Length) RegularFileInside(string folder, string relative, string what)
    {
        if (relative.Length == 0 || relative.Contains('\0') || relative.Contains('\\') || Path.IsPathRooted(relative))
            throw new InvalidDataException($"{what}: location '{relative}' must be a relative POSIX path");
        var root = RealPath(folder);
        var rootWithSep = WithTrailingSeparator(root);
        var candidate = Path.GetFullPath(Path.Combine(root, relative));
        if (!candidate.StartsWith(rootWithSep, StringComparison.Ordinal))
            throw new InvalidDataException($"{what}: location '{relative}' escapes the model folder");
        var kind = Kind(candidate, followLinks: true);
        if (kind == FileKind.Missing)
            throw new FileNotFoundException($"{what}: file '{relative}' not found (or a dangling link) in {root}", candidate);
        var real = RealPath(candidate);
        if (!real.StartsWith(rootWithSep, StringComparison.Ordinal))
            throw new InvalidDataException($"{what}: location '{relative}' resolves to {real}, outside the model folder {root}");
        kind = Kind(real, followLinks: false);
        if (kind != FileKind.Regular)
            throw new InvalidDataException($"{what}: location '{relative}' is {Describe(kind)}, not a regular file");
        return (real, new FileInfo(real).Length);
    }

    /// <summary>
    /// The one way every command opens a file it reads: <paramref name="path"/> must name (after its
    /// links) a regular file of at most <paramref name="maxBytes"/> bytes. A FIFO, a socket, a device
    /// or a folder is refused without blocking (checked before the open, opened non-blocking, and the
    /// opened file checked again); a file larger than the limit is refused before a byte is read.
    /// <paramref name="what"/> names the file in every message ("prompt file", "tokenizer").
    /// </summary>
    /// <exception cref="FileNotFoundException">Nothing is there (or a dangling link).</exception>
    /// <exception cref="InvalidDataException">It is not a regular file, or it is larger than the limit.</exception>
    public static FileStream OpenRegular(string path, string what, long maxBytes)
    {
        if (path.Contains('\0')) throw new InvalidDataException($"{what} path '{path.Replace("\0", "\\0")}' contains a NUL character");
        var full = Path.GetFullPath(path);
        var kind = Kind(full, followLinks: true);
        if (kind == FileKind.Missing) throw new FileNotFoundException($"{what} {full} not found (or a dangling link)", full);
        if (kind != FileKind.Regular) throw new InvalidDataException($"{what} {full} is {Describe(kind)}, not a regular file");
        FileStream stream;
        if (OperatingSystem.IsLinux())
        {
            const int ORdOnly = 0, ONonBlock = 0x800, ONoCtty = 0x100, OCloExec = 0x80000;
            int fd = Open(full, ORdOnly | ONonBlock | ONoCtty | OCloExec);
            if (fd < 0) throw new IOException($"{what} {full} cannot be opened (errno {Marshal.GetLastPInvokeError()})");
            var handle = new SafeFileHandle(fd, ownsHandle: true);
            var st = Stat(fd, "", AtEmptyPath);
            if (st is not { Kind: FileKind.Regular } s)
            {
                handle.Dispose();
                throw new InvalidDataException($"{what} {full} is {Describe(st?.Kind ?? FileKind.Missing)}, not a regular file");
            }
            if (s.Size > maxBytes)
            {
                handle.Dispose();
                throw new InvalidDataException($"{what} {full} is {s.Size} bytes, more than the limit of {maxBytes} bytes");
            }
            stream = new FileStream(handle, FileAccess.Read, bufferSize: 4096);
        }
        else
        {
            stream = new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read);
            if (stream.Length > maxBytes)
            {
                stream.Dispose();
                throw new InvalidDataException($"{what} {full} is {new FileInfo(full).Length} bytes, more than the limit of {maxBytes} bytes");
            }
        }
        return stream;
    }

    /// <summary>Reads a whole file through <see cref="OpenRegular"/>: never more than <paramref name="maxBytes"/> bytes, even when it grows while read.</summary>
    public static byte[] ReadBounded(string path, string what, long maxBytes)
    {
        using var stream = OpenRegular(path, what, maxBytes);
        using var memory = new MemoryStream();
        var buffer = new byte[1 << 16];
        int n;
        while ((n = stream.Read(buffer, 0, buffer.Length)) > 0)
        {
            memory.Write(buffer, 0, n);
            if (memory.Length > maxBytes)
                throw new InvalidDataException($"{what} {Path.GetFullPath(path)} grew past the limit of {maxBytes} bytes while read");
        }
        return memory.ToArray();
    }

    /// <summary>Reads a whole UTF-8 text file through <see cref="ReadBounded"/> (a leading BOM dropped); invalid UTF-8 is refused with its offset.</summary>
    public static string ReadTextBounded(string path, string what, long maxBytes)
    {
        var bytes = ReadBounded(path, what, maxBytes);
        int start = bytes.Length >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF ? 3 : 0;
        try
        {
            return StrictUtf8.GetString(bytes, start, bytes.Length - start);
        }
        catch (DecoderFallbackException e)
        {
            throw new InvalidDataException($"{what} {Path.GetFullPath(path)} is not UTF-8 text (invalid byte at offset {start + e.Index})");
        }
    }

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>
    /// The real path <paramref name="path"/> has or would have: its deepest existing ancestor's real
    /// path (every link resolved) followed by the components that do not exist yet.
    /// </summary>
    public static string ResolvedPath(string path)
    {
        var full = Path.GetFullPath(path);
        full = Path.TrimEndingDirectorySeparator(full);
        var missing = new Stack<string>();
        var current = full;
        while (Kind(current, followLinks: true) == FileKind.Missing)
        {
            var parent = Path.GetDirectoryName(current);
            if (parent is null) return full;
            missing.Push(Path.GetFileName(current));
            current = parent;
        }
        var real = RealPath(current);
        while (missing.Count > 0) real = Path.Combine(real, missing.Pop());
        return real;
    }

    /// <summary>
    /// True when <paramref name="inner"/> is <paramref name="outer"/> or lies inside it, through any
    /// link or mount: their real paths are compared, and every existing ancestor of <paramref name="inner"/>
    /// is compared with <paramref name="outer"/> by device and inode (bind mounts, hard-linked names).
    /// </summary>
    public static bool SameOrInside(string inner, string outer)
    {
        var ri = ResolvedPath(inner);
        var ro = ResolvedPath(outer);
        if (ri == ro || ri.StartsWith(WithTrailingSeparator(ro), StringComparison.Ordinal)) return true;
        if (Id(ro) is not { } outerId) return false;
        for (var d = ri; !string.IsNullOrEmpty(d); d = Path.GetDirectoryName(d))
            if (Id(d) == outerId) return true;
        return false;
    }

    /// <summary>True when the two paths name one file or folder (same real path, or same device and inode).</summary>
    public static bool SameFile(string a, string b) =>
        ResolvedPath(a) == ResolvedPath(b) || Id(a) is { } ia && Id(b) == ia;

    /// <summary>
    /// The alias check of every place where an input and an output meet: throws an <see cref="IOException"/>
    /// when <paramref name="output"/> is <paramref name="input"/> (through links, mounts or hard links),
    /// or, with <paramref name="nested"/>, when either lies inside the other.
    /// </summary>
    public static void CheckApart(string input, string output, string what, bool nested = false)
    {
        if (SameFile(input, output))
            throw new IOException($"{what} {Path.GetFullPath(output)} is the input {Path.GetFullPath(input)} (through a link or mount: real path {ResolvedPath(output)}); inputs are never overwritten");
        if (nested && SameOrInside(output, input))
            throw new IOException($"{what} {Path.GetFullPath(output)} lies inside the input {Path.GetFullPath(input)} (real path {ResolvedPath(output)})");
        if (nested && SameOrInside(input, output))
            throw new IOException($"{what} {Path.GetFullPath(output)} contains the input {Path.GetFullPath(input)} (real path {ResolvedPath(input)})");
    }

    /// <summary>
    /// Throws an <see cref="IOException"/> when a component of <paramref name="path"/> below
    /// <paramref name="root"/> exists and is a symbolic link (or not a folder, for the parents): nothing is
    /// written through a link inside an output folder. <paramref name="path"/> must lie under <paramref name="root"/>.
    /// </summary>
    public static void CheckNoLinkBelow(string root, string path, string what)
    {
        var top = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root));
        var full = Path.GetFullPath(path);
        if (!full.StartsWith(WithTrailingSeparator(top), StringComparison.Ordinal))
            throw new IOException($"{what} {full} is not inside the output folder {top}");
        var parts = full[WithTrailingSeparator(top).Length..].Split(Path.DirectorySeparatorChar);
        var current = top;
        for (int i = 0; i < parts.Length; i++)
        {
            current = Path.Combine(current, parts[i]);
            var kind = Kind(current, followLinks: false);
            if (kind == FileKind.Missing) return;
            bool last = i == parts.Length - 1;
            if (kind == FileKind.SymbolicLink || (!last && kind != FileKind.Directory) || (last && kind is not (FileKind.Regular or FileKind.Directory)))
                throw new IOException($"{what} {current} is {Describe(kind)}; nothing is written through links or over anything but regular files");
        }
    }

    /// <summary>
    /// Throws an <see cref="IOException"/> naming <paramref name="what"/> when <paramref name="path"/>
    /// exists and is not a regular file (a folder, a symbolic link, a device, a FIFO or a socket):
    /// only regular files are ever replaced.
    /// </summary>
    public static void CheckWritableTarget(string path, string what)
    {
        var kind = Kind(Path.GetFullPath(path), followLinks: false);
        if (kind is not (FileKind.Missing or FileKind.Regular))
            throw new IOException($"{what} {Path.GetFullPath(path)} is {Describe(kind)}; only regular files are written (refusing to replace or write through it)");
    }

    /// <summary>
    /// Writes a file whole: <paramref name="write"/> fills a temporary file beside <paramref name="path"/>
    /// (flushed to disk), which is then renamed over it. On failure the temporary is deleted and an
    /// existing file at <paramref name="path"/> is untouched.
    /// </summary>
    public static void WriteAtomically(string path, Action<Stream> write, string what = "output")
    {
        var temp = WriteTemporary(path, write, what);
        try
        {
            CommitTemporary(temp, path, what);
        }
        finally
        {
            TryDelete(temp);
        }
    }

    /// <summary>
    /// The first half of <see cref="WriteAtomically"/>: checks the target, writes the temporary file
    /// and returns its path (deleted again on failure). <see cref="CommitTemporary"/> renames it.
    /// </summary>
    public static string WriteTemporary(string path, Action<Stream> write, string what = "output")
    {
        var full = Path.GetFullPath(path);
        CheckWritableTarget(full, what);
        var temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Environment.ProcessId}.tmp");
        Track(temp);
        try
        {
            using var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write);
            write(stream);
            FailIfInjected(full, stream);
            stream.Flush(flushToDisk: true);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
        return temp;
    }

    /// <summary>Renames a temporary from <see cref="WriteTemporary"/> over <paramref name="path"/>, checking the target again just before.</summary>
    public static void CommitTemporary(string temp, string path, string what = "output")
    {
        CheckWritableTarget(path, what);
        File.Move(temp, Path.GetFullPath(path), overwrite: true);
        LiveTemporaries.TryRemove(temp, out _);
    }

    // Temporaries written and not yet renamed or deleted: an interrupt (SIGINT, SIGTERM, SIGHUP)
    // deletes them before the process ends, so no temporary is left behind.
    private static readonly ConcurrentDictionary<string, byte> LiveTemporaries = new(StringComparer.Ordinal);
    private static readonly Lock SignalGate = new();
    private static List<PosixSignalRegistration>? _signalHandlers;

    private static void Track(string temp)
    {
        LiveTemporaries[temp] = 0;
        lock (SignalGate)
        {
            if (_signalHandlers is not null || !(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())) return;
            _signalHandlers = [];
            foreach (var signal in new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM, PosixSignal.SIGHUP })
                _signalHandlers.Add(PosixSignalRegistration.Create(signal, _ => DeleteLiveTemporaries()));
        }
    }

    /// <summary>Deletes every temporary not yet renamed into place (what an interrupt does); returns how many.</summary>
    public static int DeleteLiveTemporaries()
    {
        int n = 0;
        foreach (var temp in LiveTemporaries.Keys)
        {
            TryDelete(temp);
            LiveTemporaries.TryRemove(temp, out _);
            n++;
        }
        return n;
    }

    /// <summary>Temporaries written and not yet renamed or deleted (for tests).</summary>
    public static IReadOnlyCollection<string> PendingTemporaries => [.. LiveTemporaries.Keys];

    /// <summary>
    /// Copies exactly <paramref name="length"/> bytes of <paramref name="source"/> to <paramref name="destination"/>
    /// (never more, whatever the source has become since it was checked).
    /// </summary>
    /// <exception cref="InvalidDataException">The source ended early.</exception>
    public static void CopyExactly(string source, long length, Stream destination)
    {
        using var input = OpenRegular(source, "copy source", long.MaxValue);
        var buffer = new byte[1 << 20];
        long left = length;
        var observer = CopyObserver;
        observer?.Invoke(source, 0, length);
        while (left > 0)
        {
            int n = input.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
            if (n == 0) throw new InvalidDataException($"{source} ended after {length - left} of {length} bytes (changed while copying)");
            destination.Write(buffer, 0, n);
            left -= n;
            observer?.Invoke(source, length - left, length);
        }
    }

    /// <summary>
    /// Told of every <see cref="CopyExactly"/> (external data copies): (source, bytes copied so far,
    /// bytes in all), first with 0, then after each MiB, last with all; for progress displays. Null: nobody.
    /// </summary>
    public static Action<string, long, long>? CopyObserver { get; set; }

    /// <summary>Deletes a file, ignoring failures (cleanup paths).</summary>
    public static void TryDelete(string path)
    {
        try
        {
            if (Kind(path, followLinks: false) != FileKind.Missing) File.Delete(path);
            LiveTemporaries.TryRemove(path, out _);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    private static void FailIfInjected(string target, Stream stream)
    {
        var pause = Environment.GetEnvironmentVariable(PauseWriteVariable);
        if (!string.IsNullOrEmpty(pause) && Path.GetFileName(target).Contains(pause, StringComparison.Ordinal))
        {
            stream.Flush();
            Thread.Sleep(TimeSpan.FromSeconds(60));
        }
        var name = Environment.GetEnvironmentVariable(FailWriteVariable);
        if (string.IsNullOrEmpty(name) || !Path.GetFileName(target).Contains(name, StringComparison.Ordinal)) return;
        stream.WriteByte(0);
        throw new IOException($"writing {target}: No space left on device (injected by {FailWriteVariable})");
    }

    /// <summary>Test seam of the copies that bypass <see cref="WriteTemporary"/>.</summary>
    internal static void FailIfInjectedFor(string target, Stream stream) => FailIfInjected(target, stream);

    private static FileKind ManagedKind(string path, bool followLinks)
    {
        FileSystemInfo info = new FileInfo(path);
        if (!info.Exists)
        {
            info = new DirectoryInfo(path);
            if (!info.Exists) return info.LinkTarget is not null ? FileKind.SymbolicLink : FileKind.Missing;
        }
        if (info.LinkTarget is not null)
        {
            if (!followLinks) return FileKind.SymbolicLink;
            var target = info.ResolveLinkTarget(returnFinalTarget: true);
            return target is null || !target.Exists ? FileKind.Missing : ManagedKind(target.FullName, followLinks: false);
        }
        return info is DirectoryInfo ? FileKind.Directory : FileKind.Regular;
    }

    [DllImport("libc", EntryPoint = "statx", SetLastError = true, CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern int Statx(int dirfd, string path, int flags, uint mask, byte[] buffer);

    [DllImport("libc", EntryPoint = "open", SetLastError = true, CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern int Open(string path, int flags);

    [DllImport("libc", EntryPoint = "realpath", SetLastError = true, CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern nint NativeRealPath(string path, nint resolved);

    [DllImport("libc", EntryPoint = "free")]
    private static extern void Free(nint p);
}
