#!/usr/bin/env python3
"""GPU check of the op's CUDA kernels (tests/gpu/run.sh): libinfllmv2_gpu.so (capi.cu) fed torch
tensors through ctypes. --check: small cases against a torch fp32 reference of the op's semantics
(selected_blocks, output, caches), incl. the split-KV decode path with forced split counts.
--bench: timings, per stage too, against torch.nn.functional.scaled_dot_product_attention with
enable_gqa=True (K/V of the Hkv heads: the bytes ours reads); decode also with the split-KV path
off (kv_splits -1) and the bytes it must read as shares of the device's peak HBM bandwidth and of
a measured device-to-device copy. --json: the results as JSON. --dry-run: no torch, no GPU: the case plan, shapes, byte counts, split
counts and argument handling only, with sizes, modes and split counts from the host half of the C
ABI (capi_plan.cc, built alone by run.sh --dry-run)."""
import argparse
import ctypes
import json
import math
import sys
import time

# attr order of il_attention: block, kernel, stride, init, window, topk, dense_len, lse_approx
DEFAULT_ATTR = [64, 32, 16, 1, 2048, 64, 8192, 1]
TINY_ATTR = [16, 8, 4, 1, 32, 4, -1, 1]  # budget 6 blocks of 16: stage 1 at small lengths


def windows(n, l, s):
    """Level-1 windows of n keys (the reference's own count: docs/op-spec.md)."""
    return 0 if n < l else (n - l) // s + 1


# Stage-1 block scores computed on the device (expf/logf, its FMA and reduction order) and by the
# reference (torch fp32) agree to a relative SEL_MARGIN; selections may differ only among
# candidates within that margin of the take-th score (docs/numerics.md, "Selections on a GPU").
SEL_MARGIN = 1e-4


def selections_agree(got, want, cand, init_hi, take, margin=SEL_MARGIN):
    """The kernel's list `got` against the reference's `want` (init blocks, `take` chosen
    candidates in block order, local blocks, -1 padding) with the reference's candidate scores
    `cand` (block init_hi + i): equal, or equal but for near ties: the forced blocks and padding
    identical, `take` distinct candidates in block order, and each candidate chosen by one side only
    within `margin` (relative) of the take-th largest score."""
    if got == want:
        return True
    if len(got) != len(want) or got[:init_hi] != want[:init_hi] or got[init_hi + take:] != want[init_hi + take:]:
        return False
    mine, theirs = got[init_hi:init_hi + take], want[init_hi:init_hi + take]
    if mine != sorted(set(mine)) or any(not init_hi <= blk < init_hi + len(cand) for blk in mine):
        return False
    thr = sorted(cand, reverse=True)[take - 1]
    near = lambda blk: abs(cand[blk - init_hi] - thr) <= margin * max(abs(thr), 1e-30)
    return all(near(blk) for blk in set(mine) ^ set(theirs))


def self_test_selection_rule():
    """The near-tie rule on synthetic rows (run by --dry-run: no GPU needed)."""
    cand = [0.5, 0.30001, 0.3, 0.1]  # blocks 1..4 (init block 0); take 2: {1, 2}, block 3 a near tie
    want = [0, 1, 2, 5, -1]
    assert selections_agree(want, want, cand, 1, 2)
    assert selections_agree([0, 1, 3, 5, -1], want, cand, 1, 2)  # 0.3 vs 0.30001: within 1e-4
    assert not selections_agree([0, 1, 4, 5, -1], want, cand, 1, 2)  # 0.1: a real difference
    assert not selections_agree([0, 2, 3, 5, -1], want, cand, 1, 2)  # 0.5 dropped: not a tie
    assert not selections_agree([0, 1, 3, 4, -1], want, cand, 1, 2)  # a local block changed
    assert not selections_agree([0, 3, 1, 5, -1], want, cand, 1, 2)  # not in block order


STAGES = ("cache_write", "compress", "selection", "attention", "combine")  # cuda::kStageNames
# HBM peak by device name (vendor data sheets, GB/s); the bench also measures a device-to-device copy.
HBM_PEAK_GBS = (("H200", 4800), ("H100 NVL", 3900), ("H100 PCIe", 2000), ("H100", 3350),
                ("A100-SXM4-80GB", 2039), ("A100 80GB PCIe", 1935), ("A100", 1555), ("L40S", 864))


def hbm_peak_gbs(name):
    """The device's peak HBM bandwidth from its name (first match in HBM_PEAK_GBS), or None."""
    return next((gbs for key, gbs in HBM_PEAK_GBS if key in name), None)


RESULTS = {"cases": []}  # written to --json


LIB = None  # the C ABI (capi_plan.cc; capi.cu on a GPU): sizes, entry plans, split counts


def abi(c, splits=None, past_comp=0):
    """attr and dim arrays of il_attention and the capi_plan.cc queries for case c."""
    attr = (ctypes.c_int64 * 12)(*c["attr"], c["score_precision"], round(c["softcap"] * 1024), c["rotary_dim"],
                                 c["interleaved"])
    dim = (ctypes.c_int64 * 10)(c["B"], c["S"], c["H"], c["Hkv"], c["D"], c["P"], c["T"], c["mode"],
                                c["splits"] if splits is None else splits, past_comp)
    return attr, dim


def dims_of(case):
    """The op's sizes (il_output_dims: present capacity, compressed capacity, budget) and the tensor
    shapes the driver allocates."""
    B, S, H, Hkv, D, P = (case[k] for k in ("B", "S", "H", "Hkv", "D", "P"))
    out = (ctypes.c_int64 * 3)()
    if LIB.il_output_dims(*abi(case), out) != 0:
        raise ValueError(f"the op refuses case {case}")
    present, comp, budget = tuple(out)
    shapes = {"query": (B, S, H * D), "key": (B, S, Hkv * D), "value": (B, S, Hkv * D),
              "past_key": (B, Hkv, P, D) if P else None, "output": (B, S, H * D),
              "present_key": (B, Hkv, present, D), "present_compressed_key": (B, Hkv, comp, D),
              "selected_blocks": (B, Hkv, S, budget)}
    return present, comp, budget, shapes


def entry_plans(c, seqlens):
    """Each entry's plan as the kernels derive it on the device (il_entry_plans): dicts of total,
    past, sparse, windows, needs_stage1."""
    arr = (ctypes.c_int32 * c["B"])(*seqlens)
    out = (ctypes.c_int64 * (5 * c["B"]))()
    if LIB.il_entry_plans(*abi(c), arr, out) != 0:
        raise ValueError(f"the op refuses case {c}")
    keys = ("total", "past", "sparse", "windows", "needs_stage1")
    return [dict(zip(keys, out[5 * b:5 * b + 5])) for b in range(c["B"])]


def kv_splits_of(c):
    """The key-split count il_attention runs c with (il_kv_splits)."""
    out = (ctypes.c_int64 * 1)()
    if LIB.il_kv_splits(*abi(c), out) != 0:
        raise ValueError(f"the op refuses case {c}")
    return out[0]


def case(name, B, S, H, Hkv, D, past, mode, attr, dtype="bf16", splits=0, share=False, softcap=0.0,
         score_precision=0, rotary_dim=0, interleaved=0):
    """splits: cuda::RunOptions::kv_splits (0 automatic, -1 no split, n forced); share: present_*
    are the past_* buffers (as a decode loop runs; only the new rows are written); softcap and
    score_precision: the op's attributes (softcap in multiples of 1/1024); rotary_dim > 0: rotary
    (interleaved or not) with cos/sin caches of T + 8 positions."""
    T = past + S
    return {"name": name, "B": B, "S": S, "H": H, "Hkv": Hkv, "D": D, "P": T if past else 0, "T": T,
            "mode": mode, "attr": list(attr), "dtype": dtype, "splits": splits, "share": share and past > 0,
            "softcap": softcap, "score_precision": score_precision, "rotary_dim": rotary_dim,
            "interleaved": interleaved}


def read_bytes(c):
    """Bytes a decode call must read (16-bit caches, shared in place): K and V of every key an entry
    attends to (dense: all; sparse: the budget's blocks), plus the level-1 compressed keys stage 1
    scores (sparse past the budget). The HBM bound is this over the bandwidth."""
    B, Hkv, D, T = c["B"], c["Hkv"], c["D"], c["T"]
    _, comp, budget, _ = dims_of(c)
    sparse = entry_plans(c, [T - 1] * B)[0]["sparse"]
    keys = min(T, budget * c["attr"][0]) if sparse else T
    n = B * Hkv * keys * D * 2 * 2
    if sparse and T > budget * c["attr"][0]:
        n += B * Hkv * comp * D * 2
    return n


def check_cases(small):
    cs = []
    for dt in ("fp16", "bf16"):
        cs.append(case(f"dense-prefill-{dt}", 2, 200, 8, 2, 128, 0, 1, DEFAULT_ATTR, dt))
        cs.append(case(f"sparse-prefill-tiny-{dt}", 2, 160, 8, 2, 64, 0, 2, TINY_ATTR, dt))
        cs.append(case(f"sparse-decode-tiny-{dt}", 3, 1, 32, 2, 128, 300, 2, TINY_ATTR, dt))
        # split-KV: forced counts (1, many; more than the short entries' tiles), dense and sparse
        cs.append(case(f"dense-decode-split7-{dt}", 3, 1, 32, 2, 128, 1000, 1, DEFAULT_ATTR, dt, splits=7))
        cs.append(case(f"sparse-decode-split9-{dt}", 3, 1, 32, 2, 128, 300, 2, TINY_ATTR, dt, splits=9))
        cs.append(case(f"dense-decode-nosplit-{dt}", 2, 1, 16, 1, 64, 500, 1, DEFAULT_ATTR, dt, splits=-1))
        cs.append(case(f"dense-chunk-g1-{dt}", 2, 16, 2, 2, 64, 100, 1, DEFAULT_ATTR, dt))
        cs.append(case(f"dense-prefill-softcap-{dt}", 2, 100, 8, 2, 64, 0, 1, DEFAULT_ATTR, dt, softcap=30.0))
        cs.append(case(f"sparse-prefill-bf16scores-{dt}", 1, 160, 8, 2, 64, 0, 2, TINY_ATTR, dt, score_precision=1))
        cs.append(case(f"dense-chunk-rotary-{dt}", 2, 16, 8, 2, 128, 100, 1, DEFAULT_ATTR, dt, rotary_dim=128))
        cs.append(case(f"sparse-decode-rotary-il-{dt}", 3, 1, 32, 2, 128, 300, 2, TINY_ATTR, dt, rotary_dim=64,
                       interleaved=1))
        # head sizes 96 and 256 (their own tiles; 256 runs dense only: stage 1 takes D <= 128)
        cs.append(case(f"dense-prefill-d96-{dt}", 2, 150, 8, 2, 96, 0, 1, DEFAULT_ATTR, dt))
        cs.append(case(f"sparse-prefill-tiny-d96-{dt}", 2, 160, 8, 2, 96, 0, 2, TINY_ATTR, dt))
        cs.append(case(f"dense-prefill-d256-{dt}", 1, 130, 4, 2, 256, 0, 1, DEFAULT_ATTR, dt))
        cs.append(case(f"dense-decode-d256-split5-{dt}", 3, 1, 16, 2, 256, 700, 1, DEFAULT_ATTR, dt, splits=5))
        if not small:
            cs.append(case(f"sparse-decode-8k-{dt}", 2, 1, 32, 2, 128, 8192, 2, DEFAULT_ATTR, dt))
            cs.append(case(f"sparse-chunk-8k-{dt}", 1, 64, 32, 2, 128, 8192, 2, DEFAULT_ATTR, dt))
            cs.append(case(f"dense-decode-32k-auto-{dt}", 4, 1, 32, 2, 128, 32768, 1, DEFAULT_ATTR, dt))
            cs.append(case(f"sparse-decode-32k-split1-{dt}", 2, 1, 32, 2, 128, 32768, 2, DEFAULT_ATTR, dt, splits=1))
    return cs


def bench_cases():
    """Decode first (G = 16, D = 128, caches shared in place; dense and sparse, the automatic split
    choice, timed again with the split off), then prefill (sparse, then dense), then head sizes 64,
    96 and 256 at 32k."""
    cs = []
    for T in (8192, 32768, 131072):
        for B in (1, 16):
            cs.append(case(f"sparse-decode-{T // 1024}k-b{B}", B, 1, 32, 2, 128, T - 1, 2, DEFAULT_ATTR, share=True))
            cs.append(case(f"dense-decode-{T // 1024}k-b{B}", B, 1, 32, 2, 128, T - 1, 1, DEFAULT_ATTR, share=True))
    for T in (8192, 32768, 131072):
        for B in (1, 16):
            if B * T <= 16 * 32768:  # prefill at 128k x 16 would take minutes in SDPA alone
                cs.append(case(f"prefill-{T // 1024}k-b{B}", B, T, 32, 2, 128, 0, 2, DEFAULT_ATTR))
    for T in (8192, 32768):  # dense prefill: the same kernels without selection work
        cs.append(case(f"dense-prefill-{T // 1024}k-b1", 1, T, 32, 2, 128, 0, 1, DEFAULT_ATTR))
    # The other head sizes' tiles (instantiations/): decode and prefill at 32k; D = 256 dense only.
    for D in (64, 96, 256):
        cs.append(case(f"dense-decode-32k-b1-d{D}", 1, 1, 32, 2, D, 32767, 1, DEFAULT_ATTR, share=True))
        if D <= 128:
            cs.append(case(f"prefill-32k-b1-d{D}", 1, 32768, 32, 2, D, 0, 2, DEFAULT_ATTR))
        cs.append(case(f"dense-prefill-32k-b1-d{D}", 1, 32768, 32, 2, D, 0, 1, DEFAULT_ATTR))
    return cs


def plan(cases, title):
    print(f"== {title}: {len(cases)} cases")
    for c in cases:
        present, comp, budget, shapes = dims_of(c)
        elem = 2
        nbytes = sum(math.prod(s) for s in shapes.values() if s) * elem * (2 if c["P"] else 1)
        print(f"  {c['name']:28s} B={c['B']} S={c['S']} T={c['T']} G={c['H'] // c['Hkv']} D={c['D']} "
              f"mode={c['mode']} K={budget} present={present} comp={comp} kv_splits={kv_splits_of(c)}"
              f"{' shared' if c['share'] else ''} ~{nbytes / 2**30:.2f} GiB"
              + (f" reads {read_bytes(c) / 2**20:.1f} MiB" if c["S"] == 1 else ""))
        RESULTS["cases"].append({"name": c["name"], "mode": title, "present": present, "compressed": comp,
                                 "budget": budget, "kv_splits": kv_splits_of(c), "bytes": nbytes})
        if nbytes > 100 * 2**30:
            raise ValueError(f"{c['name']}: {nbytes} bytes do not fit the GPU")


# ---------------------------------------------------------------- torch part (GPU only)
def torch_run(lib, c, torch, inputs=None, splits=None):
    dev = "cuda"
    dt = torch.float16 if c["dtype"] == "fp16" else torch.bfloat16
    present, comp, budget, shapes = dims_of(c)
    B, S, H, Hkv, D, P, T = (c[k] for k in ("B", "S", "H", "Hkv", "D", "P", "T"))
    g = torch.Generator(device=dev).manual_seed(7)
    if inputs is None:
        rnd = lambda *s: torch.randn(*s, device=dev, generator=g, dtype=torch.float32).to(dt)
        inputs = {"query": rnd(B, S, H * D), "key": rnd(B, S, Hkv * D), "value": rnd(B, S, Hkv * D),
                  "past_key": rnd(B, Hkv, P, D) if P else None, "past_value": rnd(B, Hkv, P, D) if P else None,
                  "seqlens": torch.full((B,), T - 1, device=dev, dtype=torch.int32)}
        if B > 1 and S == 1 and P:  # ragged decode: later entries shorter
            inputs["seqlens"] = torch.tensor([T - 1 - 37 * b for b in range(B)], device=dev, dtype=torch.int32)
        if c["rotary_dim"]:  # GQA's caches: cos/sin of position x frequency
            freq = 10000.0 ** (-torch.arange(c["rotary_dim"] // 2, device=dev) / (c["rotary_dim"] // 2))
            angle = torch.arange(T + 8, device=dev)[:, None] * freq[None, :]
            inputs["cos"], inputs["sin"] = angle.cos().to(dt), angle.sin().to(dt)
    out = {"output": torch.empty(B, S, H * D, device=dev, dtype=dt),
           "present_key": torch.empty(B, Hkv, present, D, device=dev, dtype=dt),
           "present_value": torch.empty(B, Hkv, present, D, device=dev, dtype=dt),
           "present_compressed_key": torch.empty(B, Hkv, comp, D, device=dev, dtype=dt),
           "selected_blocks": torch.empty(B, Hkv, S, budget, device=dev, dtype=torch.int32)}
    past_comp = None
    if c["share"]:  # in place, as a decode loop runs: only the new rows (and windows) are written
        assert present == P
        out["present_key"], out["present_value"] = inputs["past_key"], inputs["past_value"]
        past_comp = out["present_compressed_key"].zero_()  # the past windows' state (timing only)
    ptr = lambda t: ctypes.c_void_p(t.data_ptr() if t is not None else 0)
    ptrs = (ctypes.c_void_p * 14)(*[ptr(inputs[k]) for k in ("query", "key", "value", "past_key", "past_value", "seqlens")],
                                  *[ptr(out[k]) for k in ("output", "present_key", "present_value",
                                                          "present_compressed_key", "selected_blocks")],
                                  ptr(past_comp), ptr(inputs.get("cos")), ptr(inputs.get("sin")))
    attr, dim = abi(c, splits, comp if past_comp is not None else 0)
    err = ctypes.create_string_buffer(512)
    stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
    def call():
        return lib.il_attention(0 if c["dtype"] == "fp16" else 1, attr, dim, ptrs, stream, err, 512)
    if call() != 0:
        raise RuntimeError(f"{c['name']}: {err.value.decode()}")

    def staged():
        """One call with a CUDA event at each stage (il_attention_staged): {stage: ms}."""
        ms = (ctypes.c_double * len(STAGES))()
        lib.il_attention_staged(0 if c["dtype"] == "fp16" else 1, attr, dim, ptrs, stream, ms, err, 512)
        return dict(zip(STAGES, ms))
    call.staged = staged
    return inputs, out, call


def rotate(c, inputs, x, pos, torch):
    """GQA's rotary of rows x [n, D] (fp32) at positions pos [n], rounded to the I/O type as the
    kernel stores rotated keys and queries; x itself when the case has no rotary."""
    rd = c["rotary_dim"]
    if not rd:
        return x
    cos, sin = inputs["cos"].float()[pos], inputs["sin"].float()[pos]
    lo, hi = (slice(0, rd, 2), slice(1, rd, 2)) if c["interleaved"] else (slice(0, rd // 2), slice(rd // 2, rd))
    y = x.clone()
    y[:, lo] = x[:, lo] * cos - x[:, hi] * sin
    y[:, hi] = x[:, hi] * cos + x[:, lo] * sin
    return y.to(inputs["query"].dtype).float()


def reference(c, inputs, out, torch):
    """fp32 reference of the op's semantics (docs/op-spec.md), per entry and kv head."""
    B, S, H, Hkv, D, P, T = (c[k] for k in ("B", "S", "H", "Hkv", "D", "P", "T"))
    Bk, l1, s1, init, window, topk, dense_len, lse_approx = c["attr"]
    G, scale, K = H // Hkv, 1.0 / math.sqrt(D), topk + window // Bk
    f = lambda t: t.float()
    res = {"output": torch.zeros(B, S, H * D, device="cuda"), "sel_rows": 0, "sel_equal": 0, "sel_near_ties": 0,
           "comp_err": 0.0}
    plans = entry_plans(c, [int(x) for x in inputs["seqlens"].cpu()])  # the op's per-entry rules
    for b in range(B):
        total, past, sparse = plans[b]["total"], plans[b]["past"], plans[b]["sparse"]
        for h in range(Hkv):
            new_pos = torch.arange(past, past + S, device="cuda")
            keys = torch.cat([f(inputs["past_key"][b, h, :past]) if past else torch.zeros(0, D, device="cuda"),
                              rotate(c, inputs, f(inputs["key"][b, :, h * D:(h + 1) * D]), new_pos, torch)])[:total]
            vals = torch.cat([f(inputs["past_value"][b, h, :past]) if past else torch.zeros(0, D, device="cuda"),
                              f(inputs["value"][b, :, h * D:(h + 1) * D])])[:total]
            n1 = windows(total, l1, s1)
            k1 = torch.stack([keys[j * s1:j * s1 + l1].mean(0) for j in range(n1)]) if n1 else keys[:0]
            k1_kernel = f(out["present_compressed_key"][b, h, :n1])
            res["comp_err"] = max(res["comp_err"], (k1 - k1_kernel).abs().max().item() if n1 else 0.0)
            for s in range(S):
                pos = past + s
                if pos >= total:
                    continue
                q = rotate(c, inputs, f(inputs["query"][b, s].view(H, D)[h * G:(h + 1) * G]),
                           torch.full((G,), pos, device="cuda"), torch)
                qb = pos // Bk
                if not sparse:
                    allowed = torch.zeros(total, dtype=torch.bool, device="cuda")
                    allowed[:pos + 1] = True
                elif qb + 1 <= K:
                    allowed = torch.zeros(total, dtype=torch.bool, device="cuda")
                    allowed[:pos + 1] = True
                else:  # stage 1 on the kernel's own compressed keys (its rounding), CPU rules
                    nv1 = min(n1, windows(pos + 1, l1, s1))
                    nv2 = min(windows(total, 4 * l1, 4 * s1), windows(pos + 1, 4 * l1, 4 * s1))
                    sc = scale * (q @ k1_kernel[:nv1].T)  # [G, nv1]
                    if lse_approx and nv2 > 0:
                        st = l1 // s1
                        x = 0.25 * (((sc[:, 0:4 * nv2:4] + sc[:, st:4 * nv2 + st:4][:, :nv2]) +
                                     sc[:, 2 * st::4][:, :nv2]) + sc[:, 3 * st::4][:, :nv2])
                    else:
                        x = sc
                    lse = torch.logsumexp(x, dim=1, keepdim=True)
                    grp = torch.exp(sc - lse).sum(0)
                    if c["score_precision"]:  # group sums rounded to bf16 before pooling
                        grp = grp.to(torch.bfloat16).float()
                    local_lo = max(0, qb - window // Bk)
                    init_hi = min(init, local_lo)
                    pb, back, ahead = Bk // s1, (l1 - 1) // s1, (Bk - 1) // s1
                    cand = []
                    for blk in range(init_hi, local_lo):
                        lo, hi = max(0, blk * pb - back), min(nv1 - 1, blk * pb + ahead)
                        cand.append(grp[lo:hi + 1].max().item() if hi >= lo else -math.inf)
                    take = max(0, min(K - init_hi - (qb - local_lo + 1), len(cand)))
                    order = sorted(range(len(cand)), key=lambda i: (-cand[i], i))[:take]
                    want = list(range(init_hi)) + sorted(init_hi + i for i in order) + list(range(local_lo, qb + 1))
                    want += [-1] * (K - len(want))
                    got = out["selected_blocks"][b, h, s].tolist()
                    res["sel_rows"] += 1
                    margin = 2.0**-7 if c["score_precision"] else SEL_MARGIN  # one bf16 ulp
                    agree = selections_agree(got, want, cand, init_hi, take, margin)
                    res["sel_equal"] += int(agree)
                    res["sel_near_ties"] += int(got != want and agree)
                    allowed = torch.zeros(total, dtype=torch.bool, device="cuda")
                    for blk in got:  # attend over the kernel's own list: output checked independently of flips
                        if blk >= 0:
                            allowed[blk * Bk:min((blk + 1) * Bk, pos + 1)] = True
                logits = scale * (q @ keys.T)
                if c["softcap"]:
                    logits = c["softcap"] * torch.tanh(logits / c["softcap"])
                logits[:, ~allowed] = -math.inf
                o = torch.softmax(logits, dim=1) @ vals
                res["output"][b, s].view(H, D)[h * G:(h + 1) * G] = o
    return res


def run_check(lib, torch, small):
    tol = {"fp16": 2e-3, "bf16": 1.6e-2}  # docs/numerics.md, CUDA kernel vs fp64 reference
    failed = 0
    for c in check_cases(small):
        inputs, out, _ = torch_run(lib, c, torch)
        torch.cuda.synchronize()
        r = reference(c, inputs, out, torch)
        err = (out["output"].float() - r["output"]).abs().max().item()
        ok = err <= 2 * tol[c["dtype"]] and r["sel_equal"] == r["sel_rows"] and r["comp_err"] <= tol[c["dtype"]]
        failed += not ok
        RESULTS["cases"].append({"name": c["name"], "ok": ok, "output_err": err, "sel_rows": r["sel_rows"],
                                 "sel_equal": r["sel_equal"], "sel_near_ties": r["sel_near_ties"],
                                 "compressed_err": r["comp_err"]})
        print(f"  {'ok  ' if ok else 'FAIL'} {c['name']:28s} output err {err:.2e}  selections {r['sel_equal']}/{r['sel_rows']}"
              f" ({r['sel_near_ties']} near ties)"
              f"  compressed err {r['comp_err']:.2e}")
    return failed


def d2d_copy_gbs(torch):
    """Measured device-to-device copy bandwidth (1 GiB, read + write bytes over the time)."""
    a = torch.empty(2**29, device="cuda", dtype=torch.float16)
    b = torch.empty_like(a)
    ms = _time(torch, lambda: b.copy_(a), 10)
    del a, b
    return 2 * 2**30 / (ms * 1e-3) / 1e9


def run_bench(lib, torch, deadline, hbm_gbs):
    import torch.nn.functional as F
    name = torch.cuda.get_device_name()
    peak = hbm_gbs or hbm_peak_gbs(name)
    copy = d2d_copy_gbs(torch)
    RESULTS.update({"device": name, "hbm_peak_gbs": peak, "d2d_copy_gbs": copy})
    print(f"device {name}: HBM peak {peak} GB/s (data sheet), device-to-device copy {copy:.0f} GB/s (measured)")
    print(f"{'case':22s} {'ours ms':>10s} {'sdpa ms':>10s} {'speedup':>8s}  stages (ms)")
    for c in bench_cases():
        if time.time() > deadline:
            print(f"{c['name']:22s} skipped (time budget)")
            RESULTS["cases"].append({"name": c["name"], "skipped": "time budget"})
            continue
        B, S, H, Hkv, D, T = (c[k] for k in ("B", "S", "H", "Hkv", "D", "T"))
        try:
            inputs, out, call = torch_run(lib, c, torch)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
            print(f"{c['name']:22s} ours failed: {e}")
            RESULTS["cases"].append({"name": c["name"], "error": str(e)})
            continue
        time_it = lambda fn, reps: _time(torch, fn, reps)
        reps = 3 if S > 1 else 20
        ours = time_it(call, reps)
        stages = call.staged()
        row = {"name": c["name"], "ours_ms": ours, "stages_ms": stages, "kv_splits": kv_splits_of(c)}
        extra = ""
        if S == 1:  # decode: the split-KV path off, and the bandwidth shares
            _, _, call_plain = torch_run(lib, c, torch, inputs, splits=-1)
            plain = time_it(call_plain, reps)
            gbs = read_bytes(c) / (ours * 1e-3) / 1e9
            row.update({"no_split_ms": plain, "read_gbs": gbs, "share_of_peak": gbs / peak if peak else None,
                        "share_of_copy": gbs / copy})
            extra = (f"  kv_splits={row['kv_splits']} no-split {plain:.3f} ms ({plain / ours:.2f}x)"
                     f"  {gbs:.0f} GB/s = {100 * gbs / copy:.0f}% of copy"
                     + (f", {100 * gbs / peak:.0f}% of peak" if peak else ""))
        # The baseline reads the same 16-bit K/V bytes: Hkv heads, grouped queries (enable_gqa).
        q = torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(B, Hkv, T, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        sd = time_it(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=S > 1, enable_gqa=True), reps)
        row["sdpa_gqa_ms"] = sd
        RESULTS["cases"].append(row)
        st = " ".join(f"{k_}={v_:.3f}" for k_, v_ in stages.items() if v_ > 0)
        print(f"{c['name']:22s} {ours:10.3f} {sd:10.3f} {sd / ours:8.2f}x  {st}{extra}", flush=True)
        del inputs, out, q, k, v
        torch.cuda.empty_cache()


def _time(torch, fn, reps):
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lib", default="build/libinfllmv2_gpu.so",
                    help="the C ABI: libinfllmv2_gpu.so, or for --dry-run the host-only libinfllmv2_plan.so")
    ap.add_argument("--check", action="store_true", help="correctness against the torch reference")
    ap.add_argument("--small", action="store_true", help="only the small check cases (sanitizer runs)")
    ap.add_argument("--bench", action="store_true", help="timings against SDPA")
    ap.add_argument("--budget-s", type=float, default=300, help="stop starting bench cases after this")
    ap.add_argument("--dry-run", action="store_true", help="no torch, no GPU: plan and shapes only")
    ap.add_argument("--hbm-gbs", type=float, default=None,
                    help="HBM peak in GB/s (default: from the device name, HBM_PEAK_GBS)")
    ap.add_argument("--json", help="write the results (or the dry run's plan) as JSON here")
    a = ap.parse_args()
    if not (a.check or a.bench):
        ap.error("nothing to do: give --check and/or --bench")
    global LIB
    LIB = lib = ctypes.CDLL(a.lib)
    if a.dry_run:
        self_test_selection_rule()
        assert hbm_peak_gbs("NVIDIA H100 80GB HBM3") == 3350 and hbm_peak_gbs("NVIDIA H200") == 4800
        if a.check:
            plan(check_cases(a.small), "check")
        if a.bench:
            plan(bench_cases(), "bench")
        RESULTS["dry_run"] = True
        write_json(a.json)
        print("dry run: ok")
        return 0
    import torch
    if not torch.cuda.is_available():
        print("no CUDA device visible to torch", file=sys.stderr)
        return 2
    failed = run_check(lib, torch, a.small) if a.check else 0
    if a.bench:
        run_bench(lib, torch, time.time() + a.budget_s, a.hbm_gbs)
    RESULTS["failed"] = failed
    write_json(a.json)
    return 1 if failed else 0


def write_json(path):
    if path:
        with open(path, "w") as f:
            json.dump(RESULTS, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
