#!/bin/bash
# Every command used for RESULTS.md (logs land in benchmarks/cpu_classes/logs/). Numerical checks only, no timing.
set -x
cd "$(dirname "$0")"; P=${PYTHON:-$(cd ../.. && pwd)/.venv/bin/python}
bash run_modes.sh ort_int8.py                 # native, qemu -cpu Haswell, qemu -cpu Nehalem
bash run_modes.sh torch_int8.py               # parent native; parts re-exec'd via qemu-x86_64 -cpu X when QEMU_CPU set
bash run_modes.sh ov_int8.py
bash run_modes.sh tflite_int8.py              # first native run builds tfl/*.tflite (litert_torch + ai_edge_quantizer)
for v in ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 FBGEMM_ENABLE_INSTRUCTIONS=AVX2; do
  env $v SUFFIX=.env_${v%%=*} bash run_modes.sh torch_int8.py native
done
for v in SSE41 AVX AVX2; do
  ONEDNN_MAX_CPU_ISA=$v CPU_MODE_LABEL=native_isa_$v $P ov_int8.py > logs/ov_int8.env_ONEDNN_MAX_CPU_ISA_$v.native.log 2>&1
done
ONEDNN_VERBOSE=1 $P onednn_verbose_probe.py > logs/onednn_verbose.native.log 2>&1
ONEDNN_VERBOSE=1 ONEDNN_MAX_CPU_ISA=SSE41 $P onednn_verbose_probe.py > logs/onednn_verbose.sse41.native.log 2>&1
ONEDNN_VERBOSE=1 qemu-x86_64 -cpu Nehalem $P -X faulthandler onednn_verbose_probe.py > logs/onednn_verbose.nehalem.log 2>&1
$P tfl_emul_probe.py > logs/tfl_emul_probe.native.log 2>&1
$P compare_outputs.py > logs/compare_outputs.log 2>&1
