#!/usr/bin/env bash
# The device-machine runs behind docs/results.md, "Toy tasks: VMamba-T against Swin-T".
# From the repository root, with the stack set up (mmcv/mmdet/mmseg importable, mmvmamba._C built):
#   bash docs/results/toy_t/run_toy_gpu.sh OUT_DIR RUN [RUN ...]
# RUN is <task>_<backbone>_<dtype>: task maskrcnn|upernet, backbone vmamba|swin, dtype
# float16|bfloat16; it trains configs/toy/<task>_<backbone>_t_toy.py with --amp in that dtype.
# All RUNs train at once on the one GPU (their s/iter are therefore not clean; the clean timing is
# a separate, sequential run). Work dirs are work_dirs/toy_t/RUN; a run cut by the time limit
# (TOY_TRAIN_TIMEOUT seconds) continues from its last checkpoint (every 250 iterations) when the
# script is called again (--resume). A finished run gets tools/test.py on its final checkpoint.
# The console logs go to OUT_DIR/RUN.log; metrics stay in the work dirs (vis_data/scalars.json).
set -u
out=$1
shift
mkdir -p "$out"
export OMP_NUM_THREADS=2
for task in maskrcnn upernet; do
  python3 -c "from mmengine.config import Config; from mmvmamba.datasets.toy import \
ensure_toy_data_from_cfg as e; e(Config.fromfile('configs/toy/${task}_vmamba_t_toy.py'))"
done
for name in "$@"; do
  IFS=_ read -r task model dtype <<< "$name"
  config=configs/toy/${task}_${model}_t_toy.py
  work=work_dirs/toy_t/$name
  (
    if [ ! -f "$work/iter_2000.pth" ]; then
      timeout "${TOY_TRAIN_TIMEOUT:-480}" python3 tools/train.py "$config" --amp --resume \
        --work-dir "$work" --cfg-options optim_wrapper.dtype="$dtype" >> "$out/$name.log" 2>&1
      echo "$name train rc=$?" >> "$out/status.txt"
    fi
    if [ -f "$work/iter_2000.pth" ] && [ ! -d "$work/test" ]; then
      timeout 150 python3 tools/test.py "$config" "$work/iter_2000.pth" \
        --work-dir "$work/test" > "$out/${name}_test.log" 2>&1
      echo "$name test rc=$?" >> "$out/status.txt"
    fi
  ) &
done
wait
