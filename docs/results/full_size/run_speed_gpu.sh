#!/usr/bin/env bash
# Clean (one run at a time) training-speed runs behind docs/results.md: the full-size configs on
# synthetic COCO/ADE-shaped data (200 timed iterations) and the toy VMamba-T/Swin-T configs at
# their own 160x128 size (100 timed iterations), fp16 AMP, random init, VMamba-T against the
# stock Swin-T configs. From the repository root, with the stack set up:
#   bash docs/results/full_size/run_speed_gpu.sh OUT_DIR
set -u
out=$1
mkdir -p "$out"
bench() {  # NAME CONFIG ARGS...
  local name=$1 config=$2
  shift 2
  python3 tools/analysis/benchmark_train.py "$config" --amp --workers 4 --out "$out/$name.json" \
    --work-dir "work_dirs/speed/$name" "$@" --cfg-options model.backbone.init_cfg=None \
    > "$out/$name.log" 2>&1
  echo "$name rc=$? $(cat "$out/$name.json" 2>/dev/null)"
}
full=docs/results/full_size
bench det_vmamba_t configs/maskrcnn_vmamba_t.py --data coco --batch-size 2 --warmup 15 --iters 200
bench det_swin_t $full/swin_maskrcnn.py --data coco --batch-size 2 --warmup 15 --iters 200
for b in 2 4; do
  bench seg_vmamba_t_b$b configs/upernet_vmamba_t_ade20k.py --data ade --batch-size $b \
    --warmup 15 --iters 200
  bench seg_swin_t_b$b $full/swin_upernet.py --data ade --batch-size $b --warmup 15 --iters 200
done
for task in maskrcnn upernet; do
  data=coco
  [ $task = upernet ] && data=ade
  for model in vmamba swin; do
    bench toy_${task}_${model}_t configs/toy/${task}_${model}_t_toy.py --data $data \
      --image-size 160 128 --batch-size 4 --warmup 20 --iters 100
  done
done
