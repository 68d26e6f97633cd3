#!/usr/bin/env python3
"""Checks the SASS of the op's CUDA kernels for sm_80 (no GPU needed; run by sass-check.sh).

Input: cubins or host objects with embedded device code (cuobjdump reads both), and the attention
tile traits as printed by the traits probe (kernel_traits.h). For every kernel: registers, static
and dynamic shared memory, HMMA and LDGSTS instruction counts, stack and local memory. Checks:
  - no kernel uses a stack frame or local memory (spills, dynamically indexed register arrays);
  - the attention kernels (plain and split-KV) run on tensor cores (HMMA) and load K/V with
    cp.async (LDGSTS);
  - an attention kernel's registers x threads x the CTAs per SM its traits assume fit an SM's
    64 K registers, and its shared memory x those CTAs fits an SM's 164 KiB (sm_80);
  - stage 1 on tensor cores: HMMA in the scoring kernels (Stage1LseKernel, Stage1GroupKernel), and a
    stage-1 scoring kernel present at all;
  - the sm_90 code the build also holds (CMake's "80;90") has no stack or local memory either.
Prints a Markdown table; exits 1 naming every failed check.
"""
import argparse
import re
import subprocess
import sys

# The stage-1 kernels that score compressed keys (mma.sync); the top-k kernel has no matrix work.
STAGE1_SCORING = ("Stage1LseKernel", "Stage1GroupKernel")

SM_REGISTERS = 65536
SM_SHARED = 164 * 1024


def run(args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def demangle(names):
    out = run(["c++filt"] + names) if names else ""
    return out.splitlines()


def short(name):
    """BlockAttentionKernel<Float16, AttnTraits<2, 128, false>>(...) -> readable short form."""
    name = name.split("(")[0].replace("infllmv2::cuda::", "").replace("infllmv2::", "").replace("void ", "")
    return re.sub(r"AttnTraits<2, (\d+), (true|false)>\s*>",
                  lambda m: "D%s %s>" % (m.group(1), "decode" if m.group(2) == "true" else "prefill"), name)


def resource_usage(path, arch):
    """(mangled kernel, {"REG": .., "STACK": .., "SHARED": .., "LOCAL": .., ...}) for each kernel of `arch`."""
    current = None
    for line in run(["cuobjdump", "-res-usage", "-arch", arch, path]).splitlines():
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            current = m.group(1)
            continue
        if current and "REG:" in line:
            yield current, dict((k, int(v)) for k, v in re.findall(r"(\w+)(?:\[\d+\])?:(\d+)", line))
            current = None


def parse_objects(paths):
    kernels = {}  # mangled -> dict
    for path in paths:
        for name, usage in resource_usage(path, "sm_80"):
            kernels.setdefault(name, {"file": path, "hmma": 0, "ldgsts": 0}).update(usage)
        sass = run(["cuobjdump", "-sass", "-arch", "sm_80", path])
        current = None
        for line in sass.splitlines():
            m = re.match(r"\s*Function : (\S+)", line)
            if m:
                current = m.group(1)
                kernels.setdefault(current, {"file": path, "hmma": 0, "ldgsts": 0})
                continue
            if current is None:
                continue
            if re.search(r"\bHMMA\.", line):
                kernels[current]["hmma"] += 1
            if re.search(r"\bLDGSTS\b", line):
                kernels[current]["ldgsts"] += 1
    return kernels


def sm90_stack_failures(paths):
    """Kernels whose sm_90 code (when the objects hold any) has a stack frame or local memory."""
    failures, seen = [], 0
    for path in paths:
        for name, usage in resource_usage(path, "sm_90"):
            seen += 1
            if usage.get("STACK", 0) or usage.get("LOCAL", 0):
                failures.append("%s (sm_90): stack %d bytes, local %d bytes" %
                                (short(demangle([name])[0]), usage.get("STACK", 0), usage.get("LOCAL", 0)))
    return failures, seen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--traits", required=True, help="the traits probe's output")
    ap.add_argument("--table", help="also write the table to this file")
    ap.add_argument("objects", nargs="+")
    args = ap.parse_args()
    traits = {}
    for line in open(args.traits):
        d, decode, threads, min_ctas, smem = line.split()
        traits[(d, decode)] = (int(threads), int(min_ctas), int(smem))

    kernels = parse_objects(args.objects)
    if not kernels:
        print("sass-check: no kernels found in " + " ".join(args.objects))
        return 1
    mangled = sorted(kernels)
    names = dict(zip(mangled, demangle(mangled)))
    failures = []
    rows = []
    attention_seen = stage1_seen = 0
    for k in sorted(mangled, key=lambda m: short(names[m])):
        info, name = kernels[k], names[k]
        label = short(name)
        dynamic = 0
        m = re.search(r"AttnTraits<2, (\d+), (true|false)>", name)
        is_attention = ("BlockAttentionKernel" in name or "SplitKvAttentionKernel" in name) and m
        if is_attention:
            attention_seen += 1
            threads, min_ctas, dynamic = traits[(m.group(1), m.group(2))]
            if info["hmma"] == 0:
                failures.append(label + ": no HMMA (not on tensor cores)")
            if info["ldgsts"] == 0:
                failures.append(label + ": no LDGSTS (K/V not loaded with cp.async)")
            if info.get("REG", 0) * threads * min_ctas > SM_REGISTERS:
                failures.append("%s: %d registers x %d threads x %d CTAs exceed an SM's %d" %
                                (label, info["REG"], threads, min_ctas, SM_REGISTERS))
            if (info.get("SHARED", 0) + dynamic) * min_ctas > SM_SHARED:
                failures.append("%s: shared memory x %d CTAs exceeds an SM's %d bytes" %
                                (label, min_ctas, SM_SHARED))
        if any(k in name for k in STAGE1_SCORING):
            stage1_seen += 1
            if info["hmma"] == 0:
                failures.append(label + ": stage 1 has no HMMA (not on tensor cores)")
        if info.get("STACK", 0) != 0 or info.get("LOCAL", 0) != 0:
            failures.append("%s: stack %d bytes, local %d bytes" % (label, info.get("STACK", 0), info.get("LOCAL", 0)))
        rows.append("| `%s` | %d | %d | %d | %d | %d | %d / %d |" %
                    (label, info.get("REG", 0), info.get("SHARED", 0), dynamic, info["hmma"], info["ldgsts"],
                     info.get("STACK", 0), info.get("LOCAL", 0)))
    if attention_seen == 0:
        failures.append("no attention kernel found")
    if stage1_seen == 0:
        failures.append("no stage-1 scoring kernel found")
    sm90_failures, sm90_seen = sm90_stack_failures(args.objects)
    failures += sm90_failures
    table = "\n".join(["| kernel (sm_80) | registers | static smem | dynamic smem | HMMA | LDGSTS | stack / local |",
                       "|---|---|---|---|---|---|---|"] + rows)
    print(table)
    if args.table:
        with open(args.table, "w") as f:
            f.write(table + "\n")
    for f in failures:
        print("sass-check FAIL: " + f)
    print("sass-check: %d kernels (sm_80), %d attention kernels, %d kernels checked at sm_90, %s" %
          (len(mangled), attention_seen, sm90_seen, "ok" if not failures else "%d failures" % len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
