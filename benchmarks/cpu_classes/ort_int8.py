"""ONNX Runtime INT8 kernels vs exact int64 numpy reference.
Run: python ort_int8.py   (or under qemu-x86_64 -cpu Nehalem|Haswell)"""
import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from common import AZP, cmp, datasets, exact_mm, report, sat_model
from onnx import TensorProto, helper, numpy_helper

ort.set_default_logger_severity(3)

M, K, N = 64, 256, 256
S_A = 2.0 ** -7   # power-of-two scales: float outputs stay exactly integer*scale
S_W = 2.0 ** -6
OPSET = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
TMP = tempfile.mkdtemp(prefix="ortq_")

def sess(model, name, opt=True):
    onnx.checker.check_model(model)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if opt else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    so.optimized_model_filepath = os.path.join(TMP, name + ".opt.onnx")
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    return s, ops

def matmulinteger(A, W, w_const, b_zp=None, a_zp=None):
    """MatMulInteger; W as initializer (prepacked) or as graph input."""
    bt = TensorProto.INT8 if W.dtype == np.int8 else TensorProto.UINT8
    inputs = [helper.make_tensor_value_info("A", TensorProto.UINT8, [M, K])]
    inits = []
    if w_const:
        inits.append(numpy_helper.from_array(W, "B"))
    else:
        inputs.append(helper.make_tensor_value_info("B", bt, [K, N]))
    node_in = ["A", "B"]
    if a_zp is not None or b_zp is not None:
        inits.append(numpy_helper.from_array(np.array(a_zp or 0, np.uint8), "azp"))
        node_in.append("azp")
    if b_zp is not None:
        inits.append(numpy_helper.from_array(np.array(b_zp, W.dtype), "bzp"))
        node_in.append("bzp")
    g = helper.make_graph([helper.make_node("MatMulInteger", node_in, ["Y"])], "mmi", inputs,
                          [helper.make_tensor_value_info("Y", TensorProto.INT32, [M, N])], inits)
    m = helper.make_model(g, opset_imports=OPSET[:1])
    m.ir_version = 8
    s, ops = sess(m, "mmi")
    feed = {"A": A} if w_const else {"A": A, "B": W}
    return s.run(None, feed)[0].astype(np.int64), ops

def dyn_qmm(A, W, a_zp=0):
    """com.microsoft DynamicQuantizeMatMul: float A (quantized inside to u8 per tensor), int8 B + scale.
    A float = A_u8 * S_A with min 0 and max 255*S_A -> internal scale S_A, zp 0 exactly."""
    Af = ((A.astype(np.float32) - a_zp) * S_A)
    inits = [numpy_helper.from_array(W, "B"), numpy_helper.from_array(np.array([S_W], np.float32), "bs")]
    g = helper.make_graph([helper.make_node("DynamicQuantizeMatMul", ["A", "B", "bs"], ["Y"], domain="com.microsoft")],
                          "dqmm", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [M, K])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [M, N])], inits)
    m = helper.make_model(g, opset_imports=OPSET)
    m.ir_version = 8
    s, ops = sess(m, "dqmm")
    Y = s.run(None, {"A": Af})[0].astype(np.float64)
    return np.rint(Y / (S_A * S_W)).astype(np.int64), np.abs(Y / (S_A * S_W) - np.rint(Y / (S_A * S_W))).max(), ops

def qdq(A, W, w_zp=0, a_zp=0):
    """float X -> Q(u8, S_A, 0) -> DQ -> MatMul( . , DQ(W const int8/uint8, S_W, w_zp)) -> float Y."""
    Af = (A.astype(np.float32) - a_zp) * S_A
    wt = W.dtype
    inits = [numpy_helper.from_array(np.array(S_A, np.float32), "sa"),
             numpy_helper.from_array(np.array(a_zp, np.uint8), "za"),
             numpy_helper.from_array(W, "Wq"), numpy_helper.from_array(np.array(S_W, np.float32), "sw"),
             numpy_helper.from_array(np.array(w_zp, wt), "zw")]
    nodes = [helper.make_node("QuantizeLinear", ["X", "sa", "za"], ["Xq"]),
             helper.make_node("DequantizeLinear", ["Xq", "sa", "za"], ["Xd"]),
             helper.make_node("DequantizeLinear", ["Wq", "sw", "zw"], ["Wd"]),
             helper.make_node("MatMul", ["Xd", "Wd"], ["Y"])]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [M, K])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [M, N])], inits)
    m = helper.make_model(g, opset_imports=OPSET[:1])
    m.ir_version = 8
    s, ops = sess(m, "qdq")
    Y = s.run(None, {"X": Af})[0].astype(np.float64)
    return np.rint(Y / (S_A * S_W)).astype(np.int64), ops

SM = {}

def note(Y, R, ops):
    e, n = cmp(Y, R)
    if e and CUR in SM:
        n += f" ==VPMADDUBSW-model:{np.array_equal(Y, SM[CUR])}"
    return e, n + " ops=" + ops

rows = []
for wname, (lo, hi) in [("8bit[-128,127]", (-128, 127)), ("7bit[-64,63]", (-64, 63))]:
    for dname, maker in datasets():
        A, W = maker(M, K, N, lo, hi)
        z = AZP[dname]
        R = exact_mm(A, W, z)
        CUR = (wname, dname)
        SM[CUR] = sat_model(A, W, z)
        for wc in (True, False):
            Y, ops = matmulinteger(A, W, wc, a_zp=z if z else None)
            rows.append((f"MatMulInteger u8s8 {wname} {dname} B={'const' if wc else 'input'}",
                         *note(Y, R, "+".join(ops))))
        Y, frac, ops = dyn_qmm(A, W, z)
        rows.append((f"DynamicQuantizeMatMul s8 {wname} {dname}",
                     *note(Y, R, "+".join(ops) + f" (non-int residue {frac:.1e})")))
        Y, ops = qdq(A, W, a_zp=z)
        rows.append((f"QDQ MatMul s8 {wname} {dname}", *note(Y, R, "+".join(ops))))

# u8u8 path: uint8 weights, zero point 128 (QUInt8 symmetric-equivalent), full range
for dname, maker in datasets():
    A, Ws = maker(M, K, N)
    Wu = (Ws.astype(np.int16) + 128).astype(np.uint8)     # 0..255, same real values with zp=128
    z = AZP[dname]
    R = exact_mm(A, Wu, z, 128)
    CUR = None
    for wc in (True, False):
        Y, ops = matmulinteger(A, Wu, wc, b_zp=128, a_zp=z)
        rows.append((f"MatMulInteger u8u8 zp128 {dname} B={'const' if wc else 'input'}", *note(Y, R, "+".join(ops))))
    Y, ops = qdq(A, Wu, 128, a_zp=z)
    rows.append((f"QDQ MatMul u8 weights zp128 {dname}", *note(Y, R, "+".join(ops))))
    # u8u8 with zp 0 (no zero point subtraction) and A,W both near 255
    R0 = exact_mm(A, Wu)
    Y, ops = matmulinteger(A, Wu, True)
    rows.append((f"MatMulInteger u8u8 zp0 {dname} B=const", *note(Y, R0, "+".join(ops))))

report(rows, f"onnxruntime {ort.__version__} M,K,N={M},{K},{N}")
