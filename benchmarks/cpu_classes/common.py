"""Shared helpers: CPUID via ctypes (sees QEMU's emulated CPU), test-data makers, table printing."""
import ctypes
import mmap
import os

import numpy as np


def _cpuid(leaf, subleaf=0):
    # x86-64 SysV: rdi=leaf, rsi=subleaf, rdx=out ptr(uint32[4])
    code = bytes([
        0x53,                    # push rbx
        0x49, 0x89, 0xd0,        # mov r8, rdx
        0x89, 0xf8,              # mov eax, edi
        0x89, 0xf1,              # mov ecx, esi
        0x0f, 0xa2,              # cpuid
        0x41, 0x89, 0x00,        # mov [r8], eax
        0x41, 0x89, 0x58, 0x04,  # mov [r8+4], ebx
        0x41, 0x89, 0x48, 0x08,  # mov [r8+8], ecx
        0x41, 0x89, 0x50, 0x0c,  # mov [r8+12], edx
        0x5b,                    # pop rbx
        0xc3,                    # ret
    ])
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    f = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))(addr)
    out = (ctypes.c_uint32 * 4)()
    f(leaf, subleaf, out)
    res = tuple(out)
    del f
    return res

def cpu_class():
    """Feature summary from the CPUID instruction (emulated CPU under qemu-user)."""
    try:
        _, _, c1, d1 = _cpuid(1)
        _, b7, c7, d7 = _cpuid(7, 0)
        a71 = _cpuid(7, 1)[0]
        feats = {
            "sse4_2": bool(c1 >> 20 & 1), "avx": bool(c1 >> 28 & 1), "fma": bool(c1 >> 12 & 1),
            "avx2": bool(b7 >> 5 & 1), "avx512f": bool(b7 >> 16 & 1), "avx512bw": bool(b7 >> 30 & 1),
            "avx512_vnni": bool(c7 >> 11 & 1), "avx_vnni": bool(a71 >> 4 & 1), "amx_int8": bool(d7 >> 25 & 1),
        }
        on = [k for k, v in feats.items() if v]
        return "cpuid: " + " ".join(on)
    except Exception as e:  # pragma: no cover
        return f"cpuid: unavailable ({e})"

def mode_label():
    return os.environ.get("CPU_MODE_LABEL", "?")

def sat_pair(M, K, N, wlo=-128, whi=127, seed=0):
    """Activations u8 near 255, weights with the same sign in adjacent K positions near the range ends.
    Returns (A_u8, W_s8)."""
    rng = np.random.default_rng(seed)
    A = rng.integers(240, 256, size=(M, K)).astype(np.uint8)
    sign = np.where(rng.random((K // 2, N)) < 0.5, -1, 1)
    sign = np.repeat(sign, 2, axis=0)  # same sign in adjacent K pairs
    mag_pos = rng.integers(max(whi - 8, 1), whi + 1, size=(K, N))
    mag_neg = rng.integers(wlo, min(wlo + 9, 0), size=(K, N))
    W = np.where(sign > 0, mag_pos, mag_neg).astype(np.int8)
    return A, W

def rand_pair(M, K, N, wlo=-128, whi=127, seed=1):
    """Realistic random: u8 uniform 0..255, weights ~ N(0, range/4) clipped, with at least one value at each end."""
    rng = np.random.default_rng(seed)
    A = rng.integers(0, 256, size=(M, K)).astype(np.uint8)
    W = np.clip(np.round(rng.normal(0, (whi - wlo) / 8, size=(K, N))), wlo, whi).astype(np.int8)
    W[0, 0], W[1, 0] = whi, wlo
    return A, W

AZP = {"sat": 0, "rand": 0, "gauss": 128, "gaussPC": 128}   # activation zero point used with each data set

def exact_mm(A, W, a_zp=0, w_zp=0):
    return (A.astype(np.int64) - a_zp) @ (W.astype(np.int64) - w_zp)

def report(rows, title):
    print(f"## {title} [{mode_label()}] {cpu_class()}")
    w = max(len(r[0]) for r in rows)
    print(f"{'case'.ljust(w)} | {'max_abs_err':>14} | {'verdict':>8} | note")
    for r in rows:
        name, err, note = r[:3]
        if isinstance(err, str):
            print(f"{name.ljust(w)} | {err:>14} | {'n/a':>8} | {note}")
        else:
            verdict = r[3] if len(r) > 3 else ("exact" if err == 0 else "WRONG")
            print(f"{name.ljust(w)} | {err:>14.6g} | {verdict:>8} | {note}")
    print(flush=True)

def cmp(Y, R):
    """max abs error and a short note (fraction of wrong outputs, error relative to max |exact|)."""
    d = np.abs(np.asarray(Y, np.float64) - np.asarray(R, np.float64))
    return float(d.max()), f"wrong={100.0 * (d > 0).mean():.1f}% rel={d.max() / max(np.abs(R).max(), 1):.2g}"

def gauss_pair(M, K, N, wlo=-128, whi=127, seed=2):
    """Realistic: activations = u8 quantization of N(0,1) data (scale 4/128, zp 128);
    weights = symmetric per-tensor quantization of N(0,0.02) to [wlo, whi] (max |w| hits the range end)."""
    rng = np.random.default_rng(seed)
    A = np.clip(np.round(rng.standard_normal((M, K)) * 32 + 128), 0, 255).astype(np.uint8)
    w = rng.standard_normal((K, N)) * 0.02
    W = np.clip(np.round(w / np.abs(w).max() * whi), wlo, whi).astype(np.int8)
    A[0, 0], A[0, 1] = 0, 255   # so a per-tensor u8 quantizer of (A-128)*s picks exactly scale s, zp 128
    return A, W

def gauss_pc_pair(M, K, N, wlo=-128, whi=127, seed=3):
    """Like gauss_pair but weights quantized per output channel (each column's max |w| hits the range end)."""
    rng = np.random.default_rng(seed)
    A = np.clip(np.round(rng.standard_normal((M, K)) * 32 + 128), 0, 255).astype(np.uint8)
    A[0, 0], A[0, 1] = 0, 255
    w = rng.standard_normal((K, N)) * 0.02
    W = np.clip(np.round(w / np.abs(w).max(axis=0, keepdims=True) * whi), wlo, whi).astype(np.int8)
    return A, W

DATASETS = None  # filled below

def datasets():
    return [("sat", sat_pair), ("rand", rand_pair), ("gauss", gauss_pair), ("gaussPC", gauss_pc_pair)]

def fverdict(err, rel, fp_rel=1e-5):
    """verdict for float outputs: exact / fp-level (rounding only) / WRONG (saturation-sized)."""
    return "exact" if err == 0 else ("fp-level" if rel < fp_rel else "WRONG")

def sat_model(A, W, a_zp=0):
    """What a VPMADDUBSW kernel returns: u8 A x s8 W, adjacent-k pair sums saturated to int16, then int32 sum,
    minus the (exact) activation zero-point correction."""
    P = A.astype(np.int64)[:, None, :] * W.astype(np.int64).T[None, :, :]      # [M, N, K]
    pair = np.clip(P[..., 0::2] + P[..., 1::2], -32768, 32767)
    return pair.sum(-1) - a_zp * W.astype(np.int64).sum(0)[None, :]
