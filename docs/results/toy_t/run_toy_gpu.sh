#!/usr/bin/env bash
# The device-machine run behind docs/results.md, "Toy tasks: VMamba-T against Swin-T".
# From the repository root, with the stack set up (mmcv/mmdet/mmseg importable, mmvmamba._C built):
#   bash docs/results/toy_t/run_toy_gpu.sh OUT_DIR maskrcnn|upernet [...]
# For each task it trains configs/toy/<task>_{vmamba,swin}_t_toy.py with --amp in fp16 and in bf16,
# the four runs at once on the one GPU (their s/iter are therefore not clean: see
# time_toy_gpu.sh), then runs tools/test.py on each final checkpoint.
set -u
out=$1
shift
mkdir -p "$out"
export OMP_NUM_THREADS=2
for task in "$@"; do
  config=configs/toy/${task}_vmamba_t_toy.py
  python3 -c "from mmengine.config import Config; from mmvmamba.datasets.toy import \
ensure_toy_data_from_cfg as e; e(Config.fromfile('$config'))"
  for model in vmamba swin; do
    for dtype in float16 bfloat16; do
      name=${task}_${model}_${dtype}
      config=configs/toy/${task}_${model}_t_toy.py
      (
        timeout "${TOY_TRAIN_TIMEOUT:-430}" python3 tools/train.py "$config" --amp \
          --work-dir "$out/$name" --cfg-options optim_wrapper.dtype=$dtype \
          > "$out/$name.log" 2>&1
        echo "$name train rc=$?" >> "$out/status.txt"
        if [ -f "$out/$name/iter_2000.pth" ]; then
          timeout 150 python3 tools/test.py "$config" "$out/$name/iter_2000.pth" \
            --work-dir "$out/${name}_test" > "$out/${name}_test.log" 2>&1
          echo "$name test rc=$?" >> "$out/status.txt"
        fi
      ) &
    done
  done
done
wait
