"""The reference: the eager PyTorch model in fp32, behind the same runner protocol."""

from __future__ import annotations

from typing import Any

import numpy as np

from distilforge.heads import HeadSpec


class EagerRunner:
    def __init__(self, model: Any, head: HeadSpec, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self._torch = torch
        self.model = model.eval()
        self.head = head
        self.output_names = head.output_names

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(np.asarray(inputs["input_ids"], dtype=np.int64)),
                             attention_mask=torch.from_numpy(np.asarray(inputs["attention_mask"], dtype=np.int64)))
        return {name: out[name].float().numpy() for name in self.output_names}
