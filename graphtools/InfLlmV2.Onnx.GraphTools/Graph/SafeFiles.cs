using System.Runtime.InteropServices;

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

    /// <summary>What <paramref name="path"/> names; symbolic links are followed when <paramref name="followLinks"/>.</summary>
    public static FileKind Kind(string path, bool followLinks)
    {
        if (!OperatingSystem.IsLinux()) return ManagedKind(path, followLinks);
        var buffer = new byte[256];  // struct statx: the same layout on every Linux architecture
        const int AtFdCwd = -100, AtSymlinkNoFollow = 0x100;
        const uint StatxType = 0x1;
        if (Statx(AtFdCwd, path, followLinks ? 0 : AtSymlinkNoFollow, StatxType, buffer) != 0) return FileKind.Missing;
        int mode = BitConverter.ToUInt16(buffer, 28) & 0xF000;
        return mode switch
        {
            0x8000 => FileKind.Regular,
            0x4000 => FileKind.Directory,
            0xA000 => FileKind.SymbolicLink,
            0x2000 => FileKind.CharacterDevice,
            0x6000 => FileKind.BlockDevice,
            0x1000 => FileKind.Fifo,
            _ => FileKind.Socket,
        };
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
        var rootWithSep = root.EndsWith('/') ? root : root + "/";
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
    }

    /// <summary>
    /// Copies exactly <paramref name="length"/> bytes of <paramref name="source"/> to <paramref name="destination"/>
    /// (never more, whatever the source has become since it was checked).
    /// </summary>
    /// <exception cref="InvalidDataException">The source ended early.</exception>
    public static void CopyExactly(string source, long length, Stream destination)
    {
        using var input = new FileStream(source, FileMode.Open, FileAccess.Read, FileShare.Read);
        var buffer = new byte[1 << 20];
        long left = length;
        while (left > 0)
        {
            int n = input.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
            if (n == 0) throw new InvalidDataException($"{source} ended after {length - left} of {length} bytes (changed while copying)");
            destination.Write(buffer, 0, n);
            left -= n;
        }
    }

    /// <summary>Deletes a file, ignoring failures (cleanup paths).</summary>
    public static void TryDelete(string path)
    {
        try
        {
            if (Kind(path, followLinks: false) != FileKind.Missing) File.Delete(path);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    private static void FailIfInjected(string target, Stream stream)
    {
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

    [DllImport("libc", EntryPoint = "realpath", SetLastError = true, CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern nint NativeRealPath(string path, nint resolved);

    [DllImport("libc", EntryPoint = "free")]
    private static extern void Free(nint p);
}
