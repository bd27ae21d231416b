"""TFLite (ai_edge_litert Interpreter) INT8: dynamic_wi8_afp32 and static_wi8_ai8 models of a tiny 2-Linear torch
model, run with the default resolver (XNNPACK delegate), BUILTIN_WITHOUT_DEFAULT_DELEGATES (TFLite optimized
kernels, no XNNPACK) and BUILTIN_REF (TFLite reference kernels = exact integer reference).
First run (natively) builds the .tflite files under tfl/ with litert_torch + ai_edge_quantizer; later runs
(e.g. under qemu) only load them. Outputs are saved to logs/tfl_out_<mode>.npz for cross-CPU comparison."""
import os
import warnings

import numpy as np
from common import fverdict, mode_label, report

warnings.filterwarnings("ignore")

HERE = os.path.dirname(os.path.abspath(__file__))
D = os.path.join(HERE, "tfl")
K, H, N, B = 64, 64, 64, 4

def build():
    import litert_torch
    import torch
    from ai_edge_quantizer import quantizer, recipe
    os.makedirs(D, exist_ok=True)
    rng = np.random.default_rng(0)
    for pattern in ("sat", "rand"):
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(K, H, bias=False), torch.nn.ReLU(), torch.nn.Linear(H, N, bias=False))
        with torch.no_grad():
            m[0].weight.copy_(torch.eye(H, K))
            if pattern == "sat":   # adjacent-K same sign, magnitude at the per-channel max
                sign = np.repeat(np.where(rng.random((H // 2, N)) < 0.5, -1.0, 1.0), 2, axis=0)
                W2 = sign * rng.uniform(0.95, 1.0, (H, N))
            else:
                W2 = rng.standard_normal((H, N)) * 0.05
            m[2].weight.copy_(torch.from_numpy(W2.T.astype(np.float32)))
        lo, hi = (0.9, 1.0) if pattern == "sat" else (-1.0, 1.0)
        ex = torch.from_numpy(rng.uniform(lo, hi, (B, K)).astype(np.float32))
        path = os.path.join(D, f"{pattern}_fp32.tflite")
        litert_torch.convert(m.eval(), (ex,)).export(path)
        q = quantizer.Quantizer(path)
        q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        open(os.path.join(D, f"{pattern}_dyn.tflite"), "wb").write(q.quantize().quantized_model)
        q = quantizer.Quantizer(path)
        q.load_quantization_recipe(recipe.static_wi8_ai8())
        from ai_edge_litert.interpreter import Interpreter
        it = Interpreter(model_path=path)
        sig = list(it.get_signature_list().keys())[0]
        in_name = it.get_signature_list()[sig]["inputs"][0]
        calib = {sig: [{in_name: rng.uniform(lo, hi, (B, K)).astype(np.float32)} for _ in range(8)]}
        res = q.calibrate(calib)
        open(os.path.join(D, f"{pattern}_static.tflite"), "wb").write(q.quantize(res).quantized_model)
        np.save(os.path.join(D, f"{pattern}_x.npy"), rng.uniform(lo, hi, (B, K)).astype(np.float32))

if not os.path.exists(os.path.join(D, "rand_x.npy")):
    build()

# after the warnings filter and after build(), which loads litert_torch/torch first
import ai_edge_litert  # noqa: E402
from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: E402


def run(path, x, resolver):
    it = Interpreter(model_path=path, num_threads=1, experimental_op_resolver_type=resolver)
    runner = it.get_signature_runner()
    sig = it.get_signature_list()
    name = list(sig.values())[0]["inputs"][0]
    det = runner.get_input_details()[name]
    if det["dtype"] != np.float32:   # fully-int8 model: quantize the input with its own parameters
        sc, zp = det["quantization"]
        info = np.iinfo(det["dtype"])
        x = np.clip(np.rint(x / sc) + zp, info.min, info.max).astype(det["dtype"])
    out = runner(**{name: x})
    ops = sorted({d["op_name"] for d in it._get_ops_details()})
    y = list(out.values())[0]
    return y.astype(np.float64), ops  # int8 output stays in integer units (exact comparison)

rows, dump = [], {}
for pattern in ("sat", "rand"):
    x = np.load(os.path.join(D, f"{pattern}_x.npy"))
    for kind in ("dyn", "static"):
        p = os.path.join(D, f"{pattern}_{kind}.tflite")
        yref, ops_ref = run(p, x, OpResolverType.BUILTIN_REF)
        dump[f"{pattern}_{kind}_REF"] = yref
        for rname, res in (("XNNPACK(AUTO)", OpResolverType.AUTO),
                           ("BUILTIN_NO_XNNPACK", OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)):
            y, ops = run(p, x, res)
            dump[f"{pattern}_{kind}_{rname}"] = y
            d = np.abs(y - yref)
            rel = d.max() / np.abs(yref).max()
            unit = "int8 LSB (int8 output)" if kind == "static" else "float output"
            rows.append((f"{kind} {pattern} {rname} vs REF", float(d.max()),
                         f"{unit} rel={rel:.2g} ops={','.join(ops)}",
                         fverdict(d.max(), rel) if kind == "static" or rname != "XNNPACK(AUTO)"
                         else ("exact" if d.max() == 0 else "scheme≠")))
            # TFLite-REF hybrid rounds its runtime input quantization differently from XNNPACK:
            if kind == "dyn" and rname == "XNNPACK(AUTO)":
                from tfl_emul_probe import emul, weights  # compare with fp64 emulation of per-row asym int8
                ws = weights(p)
                for sat in (False, True):
                    ye = emul(x, ws, "f32", sat)
                    d = np.abs(y - ye)
                    rel = d.max() / np.abs(ye).max()
                    rows.append((f"{kind} {pattern} {rname} vs emul{'-SATURATING' if sat else '-exact'}",
                                 float(d.max()),
                                 f"rel={rel:.2g} (per-row asym int8 act, int32 acc"
                                 f"{', VPMADDUBSW int16 pair saturation' if sat else ''})",
                                 (fverdict(d.max(), rel) if not sat else
                                  ("SATURATES" if rel < 1e-5 else "no-match"))))
np.savez(os.path.join(HERE, "logs", f"tfl_out_{mode_label()}.npz"), **dump)
report(rows, f"ai_edge_litert {getattr(ai_edge_litert, '__version__', '?')} (err vs BUILTIN_REF reference kernels)")
