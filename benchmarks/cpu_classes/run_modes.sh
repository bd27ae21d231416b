#!/bin/bash
# usage: [SUFFIX=.x] bash run_modes.sh script.py [modes...]   -> logs/<script><SUFFIX>.<mode>.log
# modes: native haswell nehalem (default all three)
cd "$(dirname "$0")"; mkdir -p logs
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
P=${PYTHON:-$(cd ../.. && pwd)/.venv/bin/python}
S=$1; shift; MODES=${@:-native haswell nehalem}
for m in $MODES; do
  case $m in
    native) PRE="";; haswell) PRE="qemu-x86_64 -cpu Haswell";; nehalem) PRE="qemu-x86_64 -cpu Nehalem";;
  esac
  QC=""; case $m in haswell) QC=Haswell;; nehalem) QC=Nehalem;; esac
  if grep -q QEMU_CPU $S && [ -n "$QC" ]; then PRE=""; export QEMU_CPU=$QC; else unset QEMU_CPU; fi  # script spawns its own qemu children
  log=logs/${S%.py}${SUFFIX}.$m.log
  echo "### ${QEMU_CPU:+QEMU_CPU=$QEMU_CPU }$PRE $P $S" > $log
  start=$(date +%s.%N)
  CPU_MODE_LABEL=$m $PRE $P $S >> $log 2> >(grep -v "TCG doesn't support" >> $log)
  rc=$?
  end=$(date +%s.%N)
  echo "### rc=$rc wall=$(echo "$end - $start" | bc) s" >> $log
done
