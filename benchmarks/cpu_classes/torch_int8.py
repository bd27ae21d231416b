"""PyTorch INT8 kernels (torch._int_mm, quantized::linear_dynamic per engine) vs exact int64 reference.
Run: python torch_int8.py   (QEMU_CPU=Nehalem|Haswell runs every part under qemu-x86_64; env vars ATEN_CPU_CAPABILITY /
ONEDNN_MAX_CPU_ISA / FBGEMM_ENABLE_INSTRUCTIONS are passed through to the children and shown in the header)."""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
from common import AZP, cmp, cpu_class, datasets, exact_mm, report, sat_model

warnings.filterwarnings("ignore")
S_A, S_W = 2.0 ** -7, 2.0 ** -6

PARTS = ["int_mm", "x86", "fbgemm", "onednn", "qnnpack"]

def part_int_mm(rows):
    import torch
    # ---- 1. torch._int_mm: int8 x int8 -> int32 (A_s8 = A_u8 - 128) ----
    M, K, N = 16, 256, 64
    for dname, maker in datasets():
        A, W = maker(M, K, N)
        As = (A.astype(np.int16) - 128).astype(np.int8)
        R = As.astype(np.int64) @ W.astype(np.int64)
        Y = torch._int_mm(torch.from_numpy(As), torch.from_numpy(W)).numpy()
        rows.append((f"_int_mm s8s8 {dname}", *cmp(Y, R)))
        # and with A near -128 / +127 extremes directly (sat pattern on s8 A)
        if dname == "sat":
            As2 = np.where(np.arange(K)[None, :] % 4 < 2, 127, -128).astype(np.int8).repeat(M, 0)
            W2 = np.where(np.arange(K)[:, None] % 4 < 2, 127, -128).astype(np.int8).repeat(N, 1)
            R2 = As2.astype(np.int64) @ W2.astype(np.int64)
            Y2 = torch._int_mm(torch.from_numpy(As2), torch.from_numpy(W2)).numpy()
            rows.append(("_int_mm s8s8 extremes(+127/-128 pairs)", *cmp(Y2, R2)))

# ---- 2. quantized::linear_dynamic with per-channel qint8 weights ----
def choose_qparams(x, qmin, qmax):
    """fbgemm ChooseQuantizationParams (asymmetric, min/max include 0)."""
    mn, mx = min(0.0, float(x.min())), max(0.0, float(x.max()))
    scale = (mx - mn) / (qmax - qmin)
    if scale == 0:
        scale = 0.1
    scale = float(np.float32(scale))
    zmin, zmax = qmin - mn / scale, qmax - mx / scale
    ez, ex = abs(qmin) + abs(mn / scale), abs(qmax) + abs(mx / scale)
    z = zmin if ez < ex else zmax
    z = int(min(max(round(z), qmin), qmax))
    return scale, z

def part_engine(rows, eng):
    import torch
    M, K, N = 8, 256, 64
    if eng not in torch.backends.quantized.supported_engines:
        rows.append((f"linear_dynamic {eng}", "UNSUPPORTED",
                     f"supported_engines={torch.backends.quantized.supported_engines}"))
        return
    torch.backends.quantized.engine = eng
    for rr in (False, True):
        eff_rr = rr and eng != "qnnpack"   # qnnpack ignores reduce_range=True (warns) and always uses 0..255
        for dname, maker in datasets():
            A, W = maker(M, K, N)
            z = AZP[dname]
            if eff_rr:  # 7-bit activations, so that the kernel's own quantizer picks scale S_A exactly
                A = A >> 1
                z //= 2
            x = torch.from_numpy((A.astype(np.float32) - z) * S_A)
            wint = torch.from_numpy(W.T.copy())            # [N, K]
            wq = torch._make_per_channel_quantized_tensor(wint, torch.full((N,), S_W, dtype=torch.double),
                                                           torch.zeros(N, dtype=torch.long), 0)
            try:
                packed = torch.ops.quantized.linear_prepack(wq, None)
                y = torch.ops.quantized.linear_dynamic(x, packed, rr).numpy().astype(np.float64)
            except Exception as e:
                rows.append((f"linear_dynamic {eng} rr={rr} {dname}", "ERROR", str(e).splitlines()[0][:80]))
                continue
            R = exact_mm(A, W, z)
            e, n = cmp(y / (S_A * S_W), R)
            if e:
                n += f" ==VPMADDUBSW-model:{np.array_equal(np.rint(y / (S_A * S_W)), sat_model(A, W, z))}"
            rows.append((f"linear_dynamic {eng} rr={rr} {dname}", e, n + " (units of s_x*s_w)",
                         "exact" if e == 0 else ("fp-level" if e < 0.5 else "WRONG")))
        # realistic float input, reference quantized by hand the same way (per-tensor u8, 0..255 or 0..127)
        rng = np.random.default_rng(5)
        xf = rng.standard_normal((M, K)).astype(np.float32)
        wf = rng.standard_normal((N, K)).astype(np.float32) * 0.02
        ws = np.abs(wf).max(axis=1) / 127.0
        wint = np.clip(np.round(wf / ws[:, None]), -128, 127).astype(np.int8)
        wq = torch._make_per_channel_quantized_tensor(torch.from_numpy(wint), torch.from_numpy(ws.astype(np.float64)),
                                                       torch.zeros(N, dtype=torch.long), 0)
        qmax = 127 if eff_rr else 255
        sx, zx = choose_qparams(xf, 0, qmax)
        xq = np.clip(np.rint(xf / np.float32(sx)) + zx, 0, qmax).astype(np.int64)
        Rint = (xq - zx) @ wint.astype(np.int64).T
        yref = Rint * sx * ws[None, :]
        try:
            packed = torch.ops.quantized.linear_prepack(wq, None)
            y = torch.ops.quantized.linear_dynamic(torch.from_numpy(xf), packed, rr).numpy().astype(np.float64)
            unit = sx * ws[None, :]
            d = np.abs(y - yref) / unit
            rows.append((f"linear_dynamic {eng} rr={rr} floatN(0,1)", float(d.max()),
                         f"max|y-yref|={np.abs(y - yref).max():.3g} |yref|max={np.abs(yref).max():.3g} "
                         "(err in units of s_x*s_w[n])",
                         "exact" if d.max() == 0 else ("fp-level" if d.max() < 0.5 else "WRONG")))
        except Exception as e:
            rows.append((f"linear_dynamic {eng} rr={rr} floatN(0,1)", "ERROR", str(e).splitlines()[0][:80]))

def child(part):
    import torch
    torch.set_num_threads(1)
    rows = []
    if part == "int_mm":
        part_int_mm(rows)
    else:
        part_engine(rows, part)
    hdr = (f"torch {torch.__version__} capability={torch.backends.cpu.get_cpu_capability()} "
           f"engines={torch.backends.quantized.supported_engines} child {cpu_class()};")
    print("JSON" + json.dumps({"hdr": hdr, "rows": [list(r) for r in rows]}), flush=True)

def parent():
    """Each part runs in its own process (a SIGILL in one library must not hide the others).
    Under QEMU_CPU=<model> the children are started through qemu-x86_64 -cpu <model> too."""
    qcpu = os.environ.get("QEMU_CPU")
    pre = ["qemu-x86_64", "-cpu", qcpu] if qcpu else []
    rows, hdr = [], ""
    for part in PARTS:
        p = subprocess.run(pre + [sys.executable, os.path.abspath(__file__), part], capture_output=True, text=True)
        js = [line for line in p.stdout.splitlines() if line.startswith("JSON")]
        if js:
            d = json.loads(js[-1][4:])
            hdr = d["hdr"]
            rows += [tuple(r) for r in d["rows"]]
        else:
            sig = -p.returncode if p.returncode < 0 else p.returncode
            why = {4: "SIGILL (illegal instruction)", 132: "SIGILL (illegal instruction)"}.get(
                sig, f"rc={p.returncode}")
            err = [line for line in p.stderr.splitlines() if "TCG" not in line][-3:]
            rows.append((f"part {part}", "CRASH", why + " | " + " / ".join(err)[:150]))
    envs = " ".join(f"{k}={os.environ[k]}"
                    for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS")
                    if k in os.environ)
    report(rows, hdr + " " + envs)

if __name__ == "__main__":
    if len(sys.argv) > 1:
        child(sys.argv[1])
    else:
        parent()
