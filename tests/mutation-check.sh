#!/usr/bin/env bash
# Mutation check, run on demand, not part of ./test.sh: copies the repository to a
# scratch folder, plants each deliberate bug of the table below there (never in this checkout),
# runs the test subset that must catch it, and reports "caught" or "SURVIVED" per mutation.
# Exit status: 0 when every mutation was caught; 1 when one survived, a pattern was not found
# (or found more than once), a mutated build failed, or a test subset failed before mutating.
#
#   tests/mutation-check.sh                  # the committed HEAD, every mutation
#   tests/mutation-check.sh --working-tree   # tracked + untracked (not ignored) files as they are
#   tests/mutation-check.sh --native-only    # skip the .NET mutations (reported as "skipped")
#   tests/mutation-check.sh --only NAME[,NAME]  # a subset of the table by name
#   tests/mutation-check.sh --keep           # keep the scratch folder (path printed) for triage
#
# Files are located by grepping for the exact pattern across the tree (code moves between files),
# so a mutation only names the text to replace. Native mutations rebuild one non-sanitized
# Release test binary in the scratch copy (-j2); .NET ones run `dotnet test` there.
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
exec python3 - "$root" "$@" <<'PY'
import os, shutil, subprocess, sys, tempfile, time

root, args = sys.argv[1], sys.argv[2:]
working_tree = "--working-tree" in args
native_only = "--native-only" in args
keep = "--keep" in args
only = None
if "--only" in args:
    only = set(args[args.index("--only") + 1].split(","))

NATIVE_TESTS = "build/tests/infllmv2_native_tests"
DOTNET_TESTS = "dotnet test tests/InfLlmV2.Onnx.Tests -c Release -nologo -v q --filter "

# name, kind ("native" | "dotnet"), [(exact text, replacement), ...], test command (run in the
# scratch root after the build; must fail with the bug).
MUTATIONS = [
    ("topk-ties-to-higher-index", "native",
     [("return (static_cast<uint64_t>(bits) << 32) | static_cast<uint64_t>(~static_cast<uint32_t>(block));",
       "return (static_cast<uint64_t>(bits) << 32) | static_cast<uint64_t>(static_cast<uint32_t>(block));"),
      ("IL_HD int32_t BlockOfKey(uint64_t key) { return static_cast<int32_t>(~static_cast<uint32_t>(key)); }",
       "IL_HD int32_t BlockOfKey(uint64_t key) { return static_cast<int32_t>(static_cast<uint32_t>(key)); }")],
     NATIVE_TESTS + " --gtest_filter=Selection.*:Retrieval.*"),
    ("maxpool-window-4b-to-4b+3", "native",
     [("const int64_t jlo = std::max<int64_t>(0, b * bw.per_block - bw.back);",
       "const int64_t jlo = std::max<int64_t>(0, b * bw.per_block - 0 * bw.back);")],
     NATIVE_TESTS + " --gtest_filter=Selection.*:Retrieval.*"),
    ("init-block-not-forced", "native",
     [("s.init_hi = r.init_blocks < s.local_lo ? r.init_blocks : s.local_lo;",
       "s.init_hi = 0 * (r.init_blocks < s.local_lo ? r.init_blocks : s.local_lo);")],
     NATIVE_TESTS + " --gtest_filter=Selection.*:Retrieval.*"),
    ("score-precision-bf16-truncated", "native",
     [("if (bf16_scores) best = ToFloat(FromFloat<BFloat16>(best));",
       "if (bf16_scores) best = BitsToFloat(FloatToBits(best) & 0xffff0000u);")],
     NATIVE_TESTS + " --gtest_filter=Schemes.ScorePrecision*"),
    ("op-mode-switch-total-gt-dense_len", "native",
     [("return r.dense_len == -1 || total >= r.dense_len;",
       "return r.dense_len == -1 || total > r.dense_len;")],
     NATIVE_TESTS + " --gtest_filter=Mode.*"),
    # The same rule in C# (OpContract's SparseAttentionSettings.ModeFor, used by DecoderSession's
    # LastModes), checked against what the op reports (SessionModeReportTests, OpContractTests).
    ("session-ModeFor-gt-DenseLen", "dotnet",
     [("_ => DenseLen == -1 || totalLength >= DenseLen ? AttentionMode.Sparse : AttentionMode.Dense,",
       "_ => DenseLen == -1 || totalLength > DenseLen ? AttentionMode.Sparse : AttentionMode.Dense,")],
     DOTNET_TESTS + "\"FullyQualifiedName~SessionModeReportTests|FullyQualifiedName~OpContractTests\""),
    ("rewriter-copies-first-external-file-only", "dotnet",
     [("foreach (var f in files)\n                {\n                    var dst = Path.GetFullPath(Path.Combine(outDir, f.Location));",
       "foreach (var f in files.Take(1))\n                {\n                    var dst = Path.GetFullPath(Path.Combine(outDir, f.Location));")],
     DOTNET_TESTS + "\"FullyQualifiedName~ExternalDataRewriteTests|FullyQualifiedName~RewriteCli\""),
    # Masks from attention_mask: seqlens_k must be ReduceSum(attention_mask) - 1, and the
    # genai builder's square causal mask expanded to past + S keys must be offset by the past length.
    ("mask-lengths-without-minus-one", "dotnet",
     [('Graph.Node.Add(Node("Sub", "", [sum32, one], [seqlens], name: N("Sub")));',
       'Graph.Node.Add(Node("Identity", "", [sum32], [seqlens], name: N("Sub")));')],
     DOTNET_TESTS + "\"FullyQualifiedName~AttentionMaskFormsTests\""),
    ("square-mask-not-shifted-by-past", "dotnet",
     [(": Key([a]) == Key([causal]) ? shifted", ": Key([a]) == Key([causal]) ? causal")],
     DOTNET_TESTS + "\"FullyQualifiedName~AttentionMaskFormsTests\""),
]
if only is not None:
    unknown = only - {m[0] for m in MUTATIONS}
    if unknown:
        sys.exit(f"unknown mutation(s): {', '.join(sorted(unknown))}")
    MUTATIONS = [m for m in MUTATIONS if m[0] in only]


def sh(cmd, cwd, log):
    with open(log, "a") as f:
        f.write(f"$ {cmd}\n")
        f.flush()
        return subprocess.run(cmd, shell=True, cwd=cwd, stdout=f, stderr=subprocess.STDOUT).returncode


def failed_tests(log):
    out = []
    with open(log, errors="replace") as f:
        for line in f:
            if line.startswith("[  FAILED  ] ") and "," not in line and " test" not in line[13:20]:
                out.append(line[13:].split(" ")[0].strip())
            elif line.strip().startswith("Failed ") and "[" in line:  # dotnet test
                out.append(line.strip()[7:].split(" [")[0])
    return sorted(set(out))


scratch = tempfile.mkdtemp(prefix="infllmv2-mutation-")
logs = os.path.join(scratch, "logs")
os.makedirs(logs)
src = os.path.join(scratch, "repo")
os.makedirs(src)
print(f"[mutation] scratch copy of {'the working tree' if working_tree else 'HEAD'} in {src}")
if working_tree:
    files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=root, check=True,
                           stdout=subprocess.PIPE).stdout
    tar = subprocess.Popen(["tar", "--null", "-T", "-", "-c"], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    untar = subprocess.Popen(["tar", "-x", "-C", src], stdin=tar.stdout)
    tar.stdin.write(files)
    tar.stdin.close()
    tar.stdout.close()
    if tar.wait() or untar.wait():
        sys.exit("copying the working tree failed")
else:
    subprocess.run(f"git -C '{root}' archive HEAD | tar -x -C '{src}'", shell=True, check=True)
cache = os.path.realpath(os.path.join(root, ".cache"))
if os.path.isdir(cache) and not os.path.lexists(os.path.join(src, ".cache")):  # ONNX Runtime headers
    os.symlink(cache, os.path.join(src, ".cache"))

tracked = subprocess.run(["find", ".", "-type", "f", "-not", "-path", "./.cache/*"], cwd=src, check=True,
                         stdout=subprocess.PIPE, text=True).stdout.split()


def locate(text):
    """Files of the scratch copy holding `text`, with the number of occurrences."""
    hits = []
    for rel in tracked:
        if not rel.endswith((".h", ".cc", ".inc", ".cs")):
            continue
        with open(os.path.join(src, rel), errors="replace") as f:
            n = f.read().count(text)
        if n:
            hits.append((rel[2:], n))
    return hits


results = []  # (name, status, detail)
native_ready = None
baseline_done = {}


def native_build(log):
    global native_ready
    if native_ready is None:
        native_ready = sh("cmake -S customop -B build -DCMAKE_BUILD_TYPE=Release -DINFLLMV2_SANITIZE=OFF "
                          "-DINFLLMV2_CUDA=OFF >/dev/null", src, log) == 0
    return native_ready and sh("cmake --build build -j2 --target infllmv2_native_tests", src, log) == 0


def build_and_test(kind, cmd, log):
    if kind == "native":
        if not native_build(log):
            return "build"
        return "pass" if sh(cmd, src, log) == 0 else "fail"
    return "pass" if sh(cmd, src, log) == 0 else "fail"  # dotnet test builds what it needs


for name, kind, edits, cmd in MUTATIONS:
    if kind == "dotnet" and native_only:
        results.append((name, "skipped", "--native-only"))
        continue
    log = os.path.join(logs, name + ".log")
    t0 = time.time()
    # The subset must pass before the bug is planted, or "caught" would mean nothing.
    if (kind, cmd) not in baseline_done:
        base_log = os.path.join(logs, f"baseline-{len(baseline_done)}.log")
        baseline_done[(kind, cmd)] = build_and_test(kind, cmd, base_log)
        if baseline_done[(kind, cmd)] != "pass":
            print(f"[mutation] baseline of `{cmd}` did not pass ({baseline_done[(kind, cmd)]}): see {base_log}")
    if baseline_done[(kind, cmd)] != "pass":
        results.append((name, "BASELINE FAILS", cmd))
        continue
    problems, backups = [], {}
    for text, repl in edits:
        hits = locate(text)
        first_line = text.splitlines()[0].strip()
        if not hits:
            problems.append(f"pattern not found: {first_line!r}")
        elif len(hits) > 1 or hits[0][1] > 1:
            problems.append(f"pattern found {sum(n for _, n in hits)} times ({', '.join(h for h, _ in hits)}): {first_line!r}")
        else:
            path = os.path.join(src, hits[0][0])
            if path not in backups:
                with open(path) as f:
                    backups[path] = f.read()
            with open(path) as f:
                body = f.read()
            with open(path, "w") as f:
                f.write(body.replace(text, repl))
    where = ", ".join(sorted(os.path.relpath(p, src) for p in backups))
    if problems:
        status, detail = "PATTERN NOT FOUND", "; ".join(problems)
    else:
        outcome = build_and_test(kind, cmd, log)
        if outcome == "build":
            status, detail = "BUILD FAILED", f"{where}: see {log}"
        elif outcome == "fail":
            caught_by = failed_tests(log)
            status, detail = "caught", f"{where}; failing: {', '.join(caught_by) if caught_by else '(see log)'}"
        else:
            status, detail = "SURVIVED", f"{where}: `{cmd}` passed with the bug"
    for path, body in backups.items():
        with open(path, "w") as f:
            f.write(body)
    results.append((name, status, detail))
    print(f"[mutation] {name}: {status} ({time.time() - t0:.0f} s)", flush=True)

print("\n| mutation | result | detail |\n|---|---|---|")
for name, status, detail in results:
    print(f"| {name} | {status} | {detail} |")
bad = [r for r in results if r[1] not in ("caught", "skipped")]
if keep or bad:
    print(f"\n[mutation] logs in {logs}" + ("" if keep else " (scratch kept because something did not get caught)"))
else:
    shutil.rmtree(scratch, ignore_errors=True)
sys.exit(1 if bad else 0)
PY
