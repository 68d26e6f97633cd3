using System.Runtime.InteropServices;

namespace InfLlmV2.Onnx;

/// <summary>
/// Where a native library the package carries is looked for: shared by the op library
/// (<see cref="NativeOpLibrary"/>) and the Extensions library (<see cref="ExtensionsOpLibrary"/>).
/// </summary>
internal static class NativeLibraryFiles
{
    /// <summary>
    /// The full path of the first existing candidate; otherwise a <see cref="FileNotFoundException"/>
    /// whose message is <paramref name="notFound"/> given the paths tried, in order.
    /// </summary>
    internal static string FirstExisting(IEnumerable<string> candidates, string fileName, Func<string, string> notFound)
    {
        var tried = new List<string>();
        foreach (var candidate in candidates)
        {
            var full = Path.GetFullPath(candidate);
            if (tried.Contains(full)) continue;
            tried.Add(full);
            if (File.Exists(full)) return full;
        }
        throw new FileNotFoundException(notFound(string.Join(", ", tried)), fileName);
    }

    /// <summary>This process's operating system: Windows, macOS (OSX) or Linux (anything else).</summary>
    internal static OSPlatform CurrentOS =>
        OperatingSystem.IsWindows() ? OSPlatform.Windows : OperatingSystem.IsMacOS() ? OSPlatform.OSX : OSPlatform.Linux;

    /// <summary>
    /// The portable runtime identifier of <paramref name="os"/> and <paramref name="architecture"/>:
    /// win-, osx- or linux- (another platform: its lower-case name) and the architecture (x64, arm64, ...).
    /// </summary>
    internal static string RidFor(OSPlatform os, Architecture architecture)
    {
        var prefix = os == OSPlatform.Windows ? "win" : os == OSPlatform.OSX ? "osx" : os == OSPlatform.Linux ? "linux" : os.ToString().ToLowerInvariant();
        return $"{prefix}-{architecture.ToString().ToLowerInvariant()}";
    }

    /// <summary>This process's portable runtime identifier (<see cref="RidFor"/> of <see cref="CurrentOS"/> and the process architecture).</summary>
    internal static string PortableRid => RidFor(CurrentOS, RuntimeInformation.ProcessArchitecture);

    /// <summary>The folder of <paramref name="anchor"/>'s assembly (when it has one) and the app's base folder.</summary>
    internal static IReadOnlyList<string> AppFolders(Type anchor)
    {
        var folders = new List<string>();
        var assemblyDir = Path.GetDirectoryName(anchor.Assembly.Location);
        if (!string.IsNullOrEmpty(assemblyDir)) folders.Add(assemblyDir);
        folders.Add(AppContext.BaseDirectory);
        return folders;
    }

    /// <summary>
    /// <paramref name="explicitPath"/> alone when given (a file, or a folder holding
    /// <paramref name="fileName"/>); otherwise the folder of <paramref name="anchor"/>'s assembly, the
    /// app's base folder, their <c>runtimes/RID/native</c> subfolders (this process's RID and its
    /// portable form, e.g. linux-x64, where a package's copy lands in a build output), and the native
    /// search folders the .NET host resolved from the app's deps.json (<c>NATIVE_DLL_SEARCH_DIRECTORIES</c>:
    /// the package folder itself when an app runs from the NuGet cache).
    /// </summary>
    internal static IEnumerable<string> Candidates(string? explicitPath, string fileName, Type anchor)
    {
        if (!string.IsNullOrEmpty(explicitPath))
        {
            yield return Directory.Exists(explicitPath) ? Path.Combine(explicitPath, fileName) : explicitPath;
            yield break;
        }
        var folders = AppFolders(anchor);
        foreach (var f in folders) yield return Path.Combine(f, fileName);
        foreach (var f in folders)
            foreach (var rid in new[] { RuntimeInformation.RuntimeIdentifier, PortableRid }.Distinct())
                yield return Path.Combine(f, "runtimes", rid, "native", fileName);
        if (AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") is string searchDirs)
            foreach (var f in searchDirs.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
                yield return Path.Combine(f, fileName);
    }
}
