"""Cross-CPU-class comparison of saved outputs (logs/{ov,tfl}_out_<mode>.npz): max |native - mode| per output,
'bit-identical' when arrays are equal bit for bit."""
import glob
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
for prefix in ("ov_out", "tfl_out"):
    base = os.path.join(HERE, "logs", f"{prefix}_native.npz")
    if not os.path.exists(base):
        continue
    nat = np.load(base)
    others = sorted(p for p in glob.glob(os.path.join(HERE, "logs", f"{prefix}_*.npz")) if p != base)
    print(f"## {prefix}: max |native - other| ({', '.join(os.path.basename(p)[len(prefix) + 1:-4] for p in others)})")
    for k in nat.files:
        cells = []
        for p in others:
            o = np.load(p)
            if k not in o.files:
                cells.append("missing")
                continue
            d = np.abs(nat[k].astype(np.float64) - o[k].astype(np.float64)).max()
            cells.append("bit-identical" if np.array_equal(nat[k], o[k]) else f"{d:.3g}")
        print(f"{k:40s} | " + " | ".join(f"{c:>14}" for c in cells))
    print()
