"""A Triton python-backend model written by `distilforge package --format triton --backend python`: copied as
REPO/<name>/1/model.py, it runs the artifact beside it through distilforge's runner for its format. It runs only
inside Triton (triton_python_backend_utils is the server's); its Python needs distilforge and the format's extra.

Tensors cross over by DLPack, not as_numpy()/Tensor(name, array): the backend's stub reads NumPy arrays through
NumPy 1's C layout, and with NumPy 2 an output came back empty ("output tensor shape does not match size of
output"; pytriton 0.7's stubs, Triton 2.51)."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from distilforge.package.triton_python import open_copied, threads_of


class TritonPythonModel:
    def initialize(self, args):
        threads = threads_of(json.loads(args["model_config"]))
        self.runner, record = open_copied(Path(__file__).parent, threads)
        self.inputs = [spec["name"] for spec in record["inputs"]]
        self.outputs = [(spec["name"], spec["dtype"]) for spec in record["outputs"]]

    def execute(self, requests):
        return [self._answer(request) for request in requests]

    def _answer(self, request):
        try:
            fed = {name: np.from_dlpack(pb_utils.get_input_tensor_by_name(request, name)) for name in self.inputs}
            out = self.runner.run(fed)
        except Exception as e:  # the runner's message (e.g. a shape outside the artifact's) goes to the client
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e).strip().splitlines()[0]))
        tensors = [pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(out[name], dtype=dtype))
                   for name, dtype in self.outputs]
        return pb_utils.InferenceResponse(output_tensors=tensors)
