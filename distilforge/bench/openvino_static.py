"""optimum-intel's static INT8, run by the optimum-intel peer (peer_openvino.py) in a child process:

    python -m distilforge.bench.openvino_static FP32_DIR TASK CALIBRATION.npz OUT_DIR

It is the Python call recorded as the peer's command: `optimum-cli export openvino --quant-mode int8` needs
`--dataset NAME`, a Hugging Face dataset download. The calibration samples are ours (peer_openvino.py writes
them), one (1, sequence) input dict each, unpadded.
"""

from __future__ import annotations

import sys
from pathlib import Path

# optimum-intel's model class for each of our heads' tasks (optimum.intel.openvino.utils._HEAD_TO_AUTOMODELS)
MODEL_CLASSES = {"feature-extraction": "OVModelForFeatureExtraction", "fill-mask": "OVModelForMaskedLM",
                 "text-classification": "OVModelForSequenceClassification",
                 "token-classification": "OVModelForTokenClassification",
                 "question-answering": "OVModelForQuestionAnswering"}


def quantize_static(fp32: Path, task: str, calibration: Path, out: Path) -> None:
    import nncf
    import numpy as np
    import optimum.intel
    from optimum.intel import OVConfig, OVQuantizationConfig, OVQuantizer

    model = getattr(optimum.intel, MODEL_CLASSES[task]).from_pretrained(fp32, compile=False)
    with np.load(calibration) as data:
        count = len(data.files) // 2
        samples = [{name: data[f"{i}.{name}"] for name in ("input_ids", "attention_mask")} for i in range(count)]
    config = OVConfig(quantization_config=OVQuantizationConfig(num_samples=len(samples)))
    OVQuantizer(model).quantize(calibration_dataset=nncf.Dataset(samples), ov_config=config, save_directory=out)


if __name__ == "__main__":
    fp32_dir, task_name, samples_file, out_dir = sys.argv[1:]
    quantize_static(Path(fp32_dir), task_name, Path(samples_file), Path(out_dir))
