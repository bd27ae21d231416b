"""ExecuTorch programs' outputs on fixed padded batches, for comparison across CPU classes under QEMU.

    python benchmarks/cpu_classes/executorch_outputs.py DIR TARGET OUT.npz
    qemu-x86_64 -cpu Nehalem .venv/bin/python benchmarks/cpu_classes/executorch_outputs.py DIR TARGET OUT2.npz

prints a hash of every output and saves them; compare two .npz files with `--compare A.npz B.npz`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np


def outputs(out: Path, target: str) -> dict[str, np.ndarray]:
    from distilforge.artifacts.records import ExportedArtifact
    from distilforge.validate.runners.executorch import open_runner

    entry = next(a for a in json.loads((out / "manifest.json").read_text())["artifacts"] if a["target"] == target)
    runner = open_runner(out, ExportedArtifact.from_dict(entry), 1)
    rng = np.random.default_rng(0)
    found = {}
    for shape in [(1, 16), (2, 40), (4, 64)]:
        ids = rng.integers(1, 1000, size=shape)
        mask = np.ones(shape, dtype=np.int64)
        mask[-1, shape[1] // 2:] = 0
        for name, value in runner.run({"input_ids": ids, "attention_mask": mask}).items():
            found[f"{name} {'x'.join(map(str, shape))}"] = value
    return found


def main(argv: list[str]) -> None:
    if argv[0] == "--compare":
        a, b = np.load(argv[1]), np.load(argv[2])
        for key in a:
            diff = float(np.abs(a[key] - b[key]).max())
            print(f"{key}: max |diff| {diff:.3g} ({diff / float(np.abs(a[key]).max()):.1%} of the largest), "
                  f"argmax equal: {bool((a[key].argmax(-1) == b[key].argmax(-1)).all())}")
        return
    found = outputs(Path(argv[0]), argv[1])
    digest = hashlib.sha256(b"".join(v.tobytes() for _, v in sorted(found.items()))).hexdigest()
    print(argv[1], digest[:16])
    np.savez(argv[2], **found)


if __name__ == "__main__":
    main(sys.argv[1:])
