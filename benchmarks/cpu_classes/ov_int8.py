"""OpenVINO CPU plugin INT8 (NNCF PTQ with/without overflow fix; NNCF INT8 weight compression) vs
ov.Model.evaluate() (reference op implementations = exact FakeQuantize emulation in fp32).
Also dumps outputs to ov_out_<mode>.npz so runs on different CPU classes can be compared bit-wise
(compare_ov.py)."""
import logging
import os
import warnings

import numpy as np
from common import fverdict, mode_label, report

# silence nncf/openvino import-time warnings and log lines: these imports must follow the two calls below
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
import nncf  # noqa: E402
import openvino as ov  # noqa: E402
import openvino.opset13 as ops  # noqa: E402
from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix  # noqa: E402

nncf.set_log_level(logging.ERROR)
K, H, N, B = 64, 64, 64, 4
rng = np.random.default_rng(0)

def build(pattern):
    """x[B,K] in [0,1] -> MatMul(W1=I) -> ReLU -> MatMul(W2) -> y.  Layer 2 sees u8 activations near 255."""
    x = ops.parameter([B, K], np.float32, name="x")
    W1 = np.eye(K, H, dtype=np.float32)
    h = ops.relu(ops.matmul(x, ops.constant(W1), False, False))
    if pattern == "sat":   # adjacent-K same-sign, magnitudes at the per-channel max
        sign = np.repeat(np.where(rng.random((H // 2, N)) < 0.5, -1.0, 1.0), 2, axis=0)
        W2 = (sign * rng.uniform(0.95, 1.0, (H, N))).astype(np.float32)
    else:                  # realistic
        W2 = (rng.standard_normal((H, N)) * 0.05).astype(np.float32)
    y = ops.matmul(h, ops.constant(W2), False, False)
    return ov.Model([y], [x], "tiny_" + pattern)

def inputs(pattern, n):
    if pattern == "sat":
        return [rng.uniform(0.9, 1.0, (B, K)).astype(np.float32) for _ in range(n)]
    return [rng.uniform(0.0, 1.0, (B, K)).astype(np.float32) for _ in range(n)]

def ref_eval(model, xin):
    out = ov.Tensor(np.zeros([d.get_length() for d in model.output(0).get_partial_shape()], np.float32))
    outs = [out]
    model.evaluate(outs, [ov.Tensor(xin)])
    return outs[0].data.copy()

def np_eval(model, xin):
    """fp64 numpy interpreter for the weight-compressed graph (decompression done exactly, not in f16)."""
    v = {}
    for op in model.get_ordered_ops():
        t, ins = op.get_type_name(), [v[i.get_source_output().get_node().get_friendly_name()] for i in op.inputs()]
        if t == "Parameter":
            r = xin.astype(np.float64)
        elif t == "Constant":
            r = op.get_data().astype(np.float64)
        elif t == "Convert":
            r = ins[0]
        elif t == "Subtract":
            r = ins[0] - ins[1]
        elif t == "Multiply":
            r = ins[0] * ins[1]
        elif t == "Relu":
            r = np.maximum(ins[0], 0)
        elif t == "Reshape":
            r = ins[0].reshape([int(d) for d in ins[1]])
        elif t == "MatMul":
            a, b = ins
            a = a.T if op.get_attributes()["transpose_a"] else a
            b = b.T if op.get_attributes()["transpose_b"] else b
            r = a @ b
        elif t == "Result":
            return ins[0]
        else:
            raise NotImplementedError(t)
        v[op.get_friendly_name()] = r

def run(core, model, xin, cfg=None):
    cm = core.compile_model(model, "CPU", cfg or {})
    y = cm({0: xin})[0].copy()
    rt = cm.get_runtime_model()
    kinds = sorted({f"{o.get_rt_info()['layerType'].astype(str)}:{o.get_rt_info()['runtimePrecision'].astype(str)}:"
                    f"{o.get_rt_info()['primitiveType'].astype(str)}" for o in rt.get_ordered_ops()
                    if o.get_rt_info()['layerType'].astype(str) in ("FullyConnected", "MatMul", "Convolution")})
    return y, kinds, cm

core = ov.Core()
rows, dump = [], {}
for pattern in ("sat", "rand"):
    m = build(pattern)
    calib = inputs(pattern, 8)
    xin = inputs(pattern, 1)[0]
    yf, _, _ = run(core, m, xin)
    for ofix in ("FIRST_LAYER(default)", "ENABLE", "DISABLE"):
        params = AdvancedQuantizationParameters(overflow_fix=getattr(OverflowFix, ofix.split("(")[0]))
        qm = nncf.quantize(m, nncf.Dataset(calib), subset_size=len(calib), fast_bias_correction=True,
                           advanced_parameters=params)
        yr = ref_eval(qm, xin)
        try:
            yq, kinds, _ = run(core, qm, xin)
        except Exception as e:
            rows.append((f"PTQ {pattern} overflow_fix={ofix}", "ERROR", str(e).strip().splitlines()[-1][:110]))
            continue
        d = np.abs(yq - yr)
        unit = np.abs(yr).max()
        rows.append((f"PTQ {pattern} overflow_fix={ofix}", float(d.max()),
                     f"rel={d.max() / unit:.2g} |y_fp32-y_ref|max={np.abs(yf - yr).max():.3g} {' '.join(kinds)}",
                     fverdict(d.max(), d.max() / unit)))
        dump[f"ptq_{pattern}_{ofix.split('(')[0]}"] = yq
    # weights-only INT8 compression (activations fp32; CPU may quantize activations dynamically)
    cw = nncf.compress_weights(m)
    yr = np_eval(cw, xin)
    for gs in (None, 0, 32):
        cfg = {} if gs is None else {"DYNAMIC_QUANTIZATION_GROUP_SIZE": str(gs)}
        try:
            yq, kinds, cm = run(core, cw, xin, cfg)
        except Exception as e:
            rows.append((f"compress_weights INT8 {pattern} DQ_GROUP={'default' if gs is None else gs}", "ERROR",
                         str(e).strip().splitlines()[-1][:110]))
            continue
        dq = cm.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")
        d = np.abs(yq - yr)
        rows.append((f"compress_weights INT8 {pattern} DQ_GROUP={'default' if gs is None else gs}", float(d.max()),
                     f"rel={d.max() / np.abs(yr).max():.2g} reported DYNAMIC_QUANTIZATION_GROUP_SIZE={dq} "
                     f"{' '.join(kinds)}",
                     fverdict(d.max(), d.max() / np.abs(yr).max())))
        dump[f"cw_{pattern}_dq{gs}"] = yq

np.savez(os.path.join(os.path.dirname(os.path.abspath(__file__)), "logs", f"ov_out_{mode_label()}.npz"), **dump)
dflt = core.get_property("CPU", "DYNAMIC_QUANTIZATION_GROUP_SIZE")
isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
report(rows, (f"ONEDNN_MAX_CPU_ISA={isa} " if isa else "")
       + f"openvino {ov.__version__} nncf {nncf.__version__} core DYNAMIC_QUANTIZATION_GROUP_SIZE={dflt} "
       f"caps={core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')}  "
       "(PTQ err vs ov.Model.evaluate FQ reference; compress_weights err vs fp64 numpy)")
