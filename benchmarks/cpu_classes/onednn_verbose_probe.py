"""Which library runs linear_dynamic / _int_mm? Run with ONEDNN_VERBOSE=1 (optionally ONEDNN_MAX_CPU_ISA=SSE41)."""
import numpy as np
import torch
from common import exact_mm, sat_pair

torch.set_num_threads(1)
A, W = sat_pair(8, 256, 64)
print("--- _int_mm", flush=True)
torch._int_mm(torch.from_numpy((A.astype(np.int16) - 128).astype(np.int8)), torch.from_numpy(W))
for eng in ("onednn", "x86", "fbgemm"):
    torch.backends.quantized.engine = eng
    wq = torch._make_per_channel_quantized_tensor(
        torch.from_numpy(W.T.copy()), torch.full((64,), 2.0**-6, dtype=torch.double),
        torch.zeros(64, dtype=torch.long), 0,
    )
    x = torch.from_numpy(A.astype(np.float32) * 2.0**-7)
    for rr in (False, True):
        print(f"--- linear_dynamic engine={eng} rr={rr}", flush=True)
        y = torch.ops.quantized.linear_dynamic(x, torch.ops.quantized.linear_prepack(wq, None), rr).numpy()
        if not rr:
            print("maxerr", np.abs(y / 2.0**-13 - exact_mm(A, W)).max(), flush=True)
