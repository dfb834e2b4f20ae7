# Measure a docs/wip/<name>.diff against main (this tree) on the GPU machine; each call < 10 min.
# Here: mkdir -p .gpu/wheels && cp ../shared/gpu-wheels/*.whl .gpu/wheels/ && rm .gpu/wheels/mmpretrain-*
#       cp docs/wip/gpu/* .gpu/      (then run with carry [".gpu"], kind nvidia-h100-x1)
#   call 1: bash .gpu/measure_wip.sh docs/wip/NAME.diff tests    GPU tests of the diff's tree (run 98: ~330 s
#           of tests + ~100 s of set-up and builds on a fresh machine)
#   or:     bash .gpu/measure_wip.sh docs/wip/NAME.diff host     the core's host split per shape, both trees
#   call 2: bash .gpu/measure_wip.sh docs/wip/NAME.diff speed    training T/S/B (trees alternating, twice),
#           core at the goal shapes and at VMamba-S's stage shapes at batch 128
#           (WIP_TUNING=key=int,... runs the diff's tree under those SCAN_TUNING knobs, in speed, compiled, profile)
#   call 3: bash .gpu/measure_wip.sh docs/wip/NAME.diff profile  VMamba-S training kernel table, both trees
#   or:     bash .gpu/measure_wip.sh docs/wip/NAME.diff compiled compiled VMamba-T inference and training, both trees
#   or:     bash .gpu/measure_wip.sh docs/wip/NAME.diff gelu     main only: fc1 + GELU as one Triton GEMM against
#           cuBLAS + GELU (linear_gelu.py), and compiled VMamba-T / Swin-T inference, default mode
#   or:     bash .gpu/measure_wip.sh docs/wip/NAME.diff autotune main only: compiled VMamba-T / Swin-T inference
#           under max-autotune-no-cudagraphs (long compiles: its own call)
#   or:     bash .gpu/measure_wip.sh docs/wip/NAME.diff sweep    the diff's core under scan tunings (SWEEP,
#           ';' between them; default: defaults, split pair off and at every rank, unpaired, more
#           segments for the detection shape, the FMA forward at every rank), at the goal shapes and at
#           VMamba-T's stage shapes at batch 128; one CSV per tuning (at most 8 come back from a call)
# The trees are copies of the working files (mktree): the device's copy of .git can be stale (session 19:
# `git archive HEAD~1` there gave an older commit), so nothing here reads git history.
set -u
REPO=$PWD DIFF=$1 MODE=$2
source .gpu/setup.sh
source .gpu/mktree.sh
if [ ! -d /tmp/wip ]; then
  mkdir -p /tmp/empty && mktree wip /tmp/empty && (cd /tmp/wip && git apply "$REPO/$DIFF") || exit 1
  build_in "$REPO" /tmp/build_main.log & build_in /tmp/wip /tmp/build_wip.log & wait
fi
tree() { if [ "$1" = wip ]; then echo /tmp/wip; else echo "$REPO"; fi; }
bench() {  # bench TREE ARGS...: benchmark.py in TREE (the diff's tree under WIP_TUNING, if set)
  local d extra=(); d=$(tree "$1")
  [ "$1" = wip ] && [ -n "${WIP_TUNING:-}" ] && extra=(--scan-tuning "$WIP_TUNING")
  shift
  (cd "$d" && PYTHONPATH=$SITE:$d python3 tools/analysis/benchmark.py "${extra[@]}" "$@")
}
case $MODE in
tests)
  cd /tmp/wip && PYTHONPATH=$SITE:/tmp/wip python3 -m pytest -q -m gpu tests/test_ops/test_triton_ss2d_core.py \
    -k "not dot16x64w8 and not unrolled_pipelined" -p no:cacheprovider 2>&1 | tail -1 | tee $OUT/tests.txt
  PYTHONPATH=$SITE:/tmp/wip python3 -m pytest -q -m gpu tests/test_ops/test_backbone_through_op.py \
    tests/test_models/test_vmamba_gpu.py -p no:cacheprovider 2>&1 | tail -1 | tee -a $OUT/tests.txt ;;
host)
  for t in main wip; do d=$(tree $t)
    (cd $d && PYTHONPATH=$SITE:$d python3 $REPO/.gpu/core_host.py /tmp 2>&1 | grep wall | sed "s/^/$t /" | tee -a $OUT/core_host.txt)
  done ;;
speed)
  for i in 1 2; do for t in main wip; do
    bench $t --sections models --modes train --models vmamba_tiny,vmamba_small,vmamba_base --out /tmp/train_${t}_$i \
      2>&1 | grep '"models"' | python3 -c "import sys,json
for l in sys.stdin:
  r=json.loads(l); print('$t', r.get('model'), r.get('img_per_s'), r.get('ms'), r.get('gpu_ms'), r.get('peak_mib'))" \
      | tee -a $OUT/train.txt
  done; done
  for t in main wip; do
    bench $t --sections core --out /tmp/core_$t > /dev/null 2>&1
    bench $t --sections core --core-arch small --core-batch 128 --out /tmp/core_s128_$t > /dev/null 2>&1
    cp /tmp/core_$t/benchmark_core.csv $OUT/core_$t.csv; cp /tmp/core_s128_$t/benchmark_core.csv $OUT/core_s128_$t.csv
  done ;;
sweep)
  IFS=";" read -ra TUNINGS <<< "${SWEEP:-;split_pair_min_rank=0;split_pair_min_rank=6;pair_max_length=0;min_programs=4096,pipeline_max_programs=5000;fwd_dot_min_rank=0}"
  for n in "${!TUNINGS[@]}"; do
    bench wip --sections core --scan-tuning "${TUNINGS[$n]}" --out /tmp/sweep_$n > /dev/null 2>&1
    bench wip --sections core --core-batch 128 --scan-tuning "${TUNINGS[$n]}" --out /tmp/sweep128_$n > /dev/null 2>&1
    (echo "# scan tuning: '${TUNINGS[$n]}'"; cat /tmp/sweep_$n/benchmark_core.csv /tmp/sweep128_$n/benchmark_core.csv) \
      > $OUT/sweep_$n.csv
  done ;;
compiled)
  for t in main wip; do
    bench $t --sections compile --modes infer,train --compile-models vmamba_tiny --out /tmp/compiled_$t 2>&1 \
      | grep '"compile"' | sed "s/^/$t /" | tee -a $OUT/compiled.txt
  done ;;
gelu)
  (cd "$REPO" && PYTHONPATH=$SITE:$REPO python3 .gpu/linear_gelu.py 2>&1 | tee $OUT/linear_gelu.txt)
  bench main --sections compile --modes infer --compile-models vmamba_tiny,swin_tiny_patch4_window7_224 \
    --out /tmp/compile_default 2>&1 | grep '"compile"' | tee $OUT/compile_default.txt ;;
autotune)
  bench main --sections compile --modes infer --compile-models vmamba_tiny,swin_tiny_patch4_window7_224 \
    --compile-mode max-autotune-no-cudagraphs --out /tmp/compile_autotune 2>&1 | grep '"compile"' \
    | tee $OUT/compile_autotune.txt ;;
profile)
  for t in main wip; do
    bench $t --sections profile --profile-models vmamba_small --profile-modes train --out /tmp/prof_$t > /dev/null 2>&1
    cp /tmp/prof_$t/profile_*.txt $OUT/prof_$t.txt
  done ;;
esac
