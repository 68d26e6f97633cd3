using System.Reflection;
using System.Runtime.InteropServices;

namespace InfLlmV2.Onnx;

/// <summary>Finds the native library that implements <c>com.infllmv2::SwitchableAttention</c>.</summary>
/// <remarks>
/// The InfLlmV2.Onnx package carries the library for <see cref="RuntimeIdentifiers"/> (linux-x64,
/// linux-arm64, win-x64) under <c>runtimes/RID/native/</c>; the CUDA kernels are in the linux-x64
/// build only. macOS has a file name (<c>libinfllmv2_ops.dylib</c>) but no shipped build.
/// </remarks>
public static class NativeOpLibrary
{
    /// <summary>File name of the op library on Linux.</summary>
    public const string LinuxFileName = "libinfllmv2_ops.so";

    /// <summary>File name of the op library on Windows.</summary>
    public const string WindowsFileName = "infllmv2_ops.dll";

    /// <summary>File name the op library would have on macOS (not shipped: no macOS build exists).</summary>
    public const string MacOSFileName = "libinfllmv2_ops.dylib";

    /// <summary>The runtime identifiers the InfLlmV2.Onnx package carries the op library for.</summary>
    public static IReadOnlyList<string> RuntimeIdentifiers { get; } = ["linux-x64", "linux-arm64", "win-x64"];

    /// <summary>The op library's file name on this operating system (<see cref="FileNameFor(OSPlatform)"/>).</summary>
    public static string FileName => FileNameFor(NativeLibraryFiles.CurrentOS);

    /// <summary>
    /// The op library's file name on <paramref name="os"/>: <see cref="WindowsFileName"/>,
    /// <see cref="MacOSFileName"/> (not shipped) or <see cref="LinuxFileName"/> (Linux and FreeBSD).
    /// </summary>
    public static string FileNameFor(OSPlatform os) =>
        os == OSPlatform.Windows ? WindowsFileName : os == OSPlatform.OSX ? MacOSFileName : LinuxFileName;

    /// <summary>
    /// The op library's file name for <paramref name="targetOs"/>: an operating system
    /// (<c>linux</c>, <c>windows</c> or <c>win</c>, <c>osx</c> or <c>macos</c>; case-insensitive) or a
    /// runtime identifier whose first part is one (<c>win-x64</c>, <c>linux-arm64</c>).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="targetOs"/> names no known operating system.</exception>
    public static string FileNameFor(string targetOs) => FileNameFor(ParseOS(targetOs));

    /// <summary>
    /// Parses an operating system or runtime identifier as <see cref="FileNameFor(string)"/> accepts it.
    /// </summary>
    /// <exception cref="ArgumentException">Not linux, windows/win, osx/macos, or a runtime identifier starting with one.</exception>
    public static OSPlatform ParseOS(string targetOs)
    {
        ArgumentNullException.ThrowIfNull(targetOs);
        var os = targetOs.Trim().ToLowerInvariant();
        int dash = os.IndexOf('-', StringComparison.Ordinal);
        if (dash > 0) os = os[..dash];
        return os switch
        {
            "linux" => OSPlatform.Linux,
            "windows" or "win" => OSPlatform.Windows,
            "osx" or "macos" => OSPlatform.OSX,
            _ => throw new ArgumentException($"unknown operating system '{targetOs}': expected linux, windows or osx (or a runtime identifier such as win-x64)", nameof(targetOs)),
        };
    }

    /// <summary>The portable runtime identifier of this process (for example <c>linux-x64</c>, <c>win-x64</c>, <c>linux-arm64</c>).</summary>
    public static string CurrentRuntimeIdentifier => NativeLibraryFiles.PortableRid;

    /// <summary>
    /// Returns the full path of the op library: <paramref name="explicitPath"/> when given (a file,
    /// or a folder holding <see cref="FileName"/>), otherwise the first existing of: the folder of
    /// this assembly, the app's base folder, their <c>runtimes/RID/native</c> subfolders for this
    /// process's RID (where the InfLlmV2.Onnx package's copy lands in a build output), and the native
    /// search folders the .NET host resolved from the app's deps.json (<c>NATIVE_DLL_SEARCH_DIRECTORIES</c>:
    /// the package folder itself when an app runs from the NuGet cache).
    /// </summary>
    /// <exception cref="FileNotFoundException">No candidate exists; the message lists every path tried and the RIDs the package carries.</exception>
    public static string Locate(string? explicitPath = null) =>
        NativeLibraryFiles.FirstExisting(NativeLibraryFiles.Candidates(explicitPath, FileName, typeof(NativeOpLibrary)), FileName, tried =>
            $"SwitchableAttention op library ({FileName}) not found. Tried: {tried}. " +
            $"The InfLlmV2.Onnx package carries it for {string.Join(", ", RuntimeIdentifiers)} (runtimes/RID/native/; this process is {CurrentRuntimeIdentifier}); " +
            "in a repository checkout build it with `cmake -S customop -B artifacts/native && cmake --build artifacts/native`; or pass its path.");

    /// <summary>
    /// Returns the full path of the op library built for another platform, <paramref name="runtimeIdentifier"/>
    /// (one of <see cref="RuntimeIdentifiers"/>), for instance to copy it into a model folder prepared
    /// here for that platform. For this process's own RID this is <see cref="Locate"/>. Otherwise the
    /// first existing of: <c>runtimes/RID/native/FILE</c> under the folder of this assembly and the
    /// app's base folder (the InfLlmV2.Onnx package's copy in a build output; the infllmv2 tool
    /// carries every RID's library there), then <c>artifacts/natives/RID/FILE</c> in the folders
    /// above them (a repository checkout, after <c>eng/build-natives.sh</c>).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="runtimeIdentifier"/> is not one of <see cref="RuntimeIdentifiers"/>.</exception>
    /// <exception cref="FileNotFoundException">No candidate exists; the message lists every path tried.</exception>
    public static string LocateFor(string runtimeIdentifier)
    {
        ArgumentNullException.ThrowIfNull(runtimeIdentifier);
        if (!RuntimeIdentifiers.Contains(runtimeIdentifier))
            throw new ArgumentException($"no op library is built for '{runtimeIdentifier}': the package carries {string.Join(", ", RuntimeIdentifiers)}", nameof(runtimeIdentifier));
        var fileName = FileNameFor(runtimeIdentifier);
        var candidates = runtimeIdentifier == CurrentRuntimeIdentifier
            ? NativeLibraryFiles.Candidates(null, fileName, typeof(NativeOpLibrary)).Concat(CheckoutCandidates(runtimeIdentifier, fileName))
            : ForeignCandidates(runtimeIdentifier, fileName);
        return NativeLibraryFiles.FirstExisting(candidates, fileName, tried =>
            $"SwitchableAttention op library for {runtimeIdentifier} ({fileName}) not found. Tried: {tried}. " +
            $"The InfLlmV2.Onnx package and the infllmv2 tool carry it under runtimes/{runtimeIdentifier}/native/; " +
            $"in a repository checkout build it with `eng/build-natives.sh --rid {runtimeIdentifier}`.");
    }

    private static IEnumerable<string> ForeignCandidates(string rid, string fileName)
    {
        foreach (var folder in NativeLibraryFiles.AppFolders(typeof(NativeOpLibrary)))
            yield return Path.Combine(folder, "runtimes", rid, "native", fileName);
        foreach (var candidate in CheckoutCandidates(rid, fileName)) yield return candidate;
    }

    // artifacts/natives/RID/FILE in the nearest folder above the app that has an artifacts/natives folder.
    private static IEnumerable<string> CheckoutCandidates(string rid, string fileName)
    {
        foreach (var folder in NativeLibraryFiles.AppFolders(typeof(NativeOpLibrary)))
            for (var d = new DirectoryInfo(folder); d is not null; d = d.Parent)
                if (Directory.Exists(Path.Combine(d.FullName, "artifacts", "natives")))
                {
                    yield return Path.Combine(d.FullName, "artifacts", "natives", rid, fileName);
                    break;
                }
    }

    /// <summary>Informational version of this managed library.</summary>
    public static string ManagedVersion =>
        typeof(NativeOpLibrary).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
        ?? typeof(NativeOpLibrary).Assembly.GetName().Version?.ToString() ?? "unknown";
}
