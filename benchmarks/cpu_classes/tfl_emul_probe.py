"""Probe: which per-row asymmetric int8 input quantization do TFLite-REF hybrid FC and XNNPACK qd8 use?
Emulates the 2-FC dynamic model in fp64 with variants and prints the max diff to each kernel's output."""

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType


def weights(path):
    it = Interpreter(model_path=path, experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                     experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    ws = []
    for op in it._get_ops_details():
        t = it.get_tensor_details()[op["inputs"][1]]
        ws.append((it.get_tensor(op["inputs"][1]).astype(np.int64),
                   t["quantization_parameters"]["scales"].astype(np.float64)))
    return ws

def quant(x, variant):
    mn = np.minimum(0, x.min(1, keepdims=True))
    mx = np.maximum(0, x.max(1, keepdims=True))
    if variant == "f32":
        scale = ((mx - mn).astype(np.float32) / np.float32(255)).astype(np.float64)
    else:
        scale = (mx - mn) / 255
    zp = np.clip(np.rint(-128 - mn / scale), -128, 127)
    q = np.clip(np.rint(x / scale) + zp, -128, 127)
    return q, zp, scale

def emul(x, ws, variant, sat=False):
    h = x.astype(np.float64)
    for i, (w, s) in enumerate(ws):
        q, zp, sc = quant(h, variant)
        if sat:   # VPMADDUBSW-style: (q+128) u8 x w s8, adjacent pairs saturated to int16
            u = (q + 128)
            prod = u[:, None, :] * w[None, :, :]                    # [B,N,K]
            pair = np.clip(prod[..., 0::2] + prod[..., 1::2], -32768, 32767)
            acc = pair.sum(-1) - 128 * w.sum(1)[None, :] - (zp) * w.sum(1)[None, :]
        else:
            acc = (q - zp) @ w.T
        h = acc * sc * s[None, :]
        if i == 0:
            h = np.maximum(h, 0)   # fused ReLU
    return h

if __name__ == "__main__":
    for pattern in ("sat", "rand"):
        p = f"tfl/{pattern}_dyn.tflite"
        x = np.load(f"tfl/{pattern}_x.npy")
        ws = weights(p)
        for res in ("BUILTIN_REF", "AUTO"):
            it = Interpreter(model_path=p, num_threads=1, experimental_op_resolver_type=getattr(OpResolverType, res))
            r = it.get_signature_runner()
            y = list(r(**{list(it.get_signature_list().values())[0]["inputs"][0]: x}).values())[0]
            out = [f"{v}{'+sat' if s else ''}: {np.abs(y - emul(x, ws, v, s)).max():.3g}"
                   for v in ("f64", "f32") for s in (False, True)]
            print(pattern, res, " | ".join(out))
