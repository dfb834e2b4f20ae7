# Measure docs/wip/image-minor.diff against main on the GPU machine (two calls, each < 10 min).
# Here: mkdir -p .gpu/wheels && cp ../shared/gpu-wheels/*.whl .gpu/wheels/ && rm .gpu/wheels/mmpretrain-*
#       cp docs/wip/gpu/* .gpu/   (then run with carry [".gpu"], kind nvidia-h100-x1)
#   call 1: bash .gpu/measure_image_minor.sh tests
#   call 2: bash .gpu/measure_image_minor.sh speed     (warm: fire it right after call 1)
set -u
REPO=$PWD
source .gpu/setup.sh
source .gpu/mktree.sh
if [ ! -d /tmp/im ]; then
  mkdir -p /tmp/empty && mktree im /tmp/empty && (cd /tmp/im && git apply "$REPO/docs/wip/image-minor.diff")
  build_in "$REPO" /tmp/build_main.log & build_in /tmp/im /tmp/build_im.log & wait
fi
tree() { if [ "$1" = im ]; then echo /tmp/im; else echo "$REPO"; fi; }
if [ "$1" = tests ]; then
  cd /tmp/im && PYTHONPATH=$SITE:/tmp/im python3 -m pytest -q -m gpu tests/test_ops/test_triton_ss2d_core.py \
    -k "not dot16x64w8 and not unrolled_pipelined" -p no:cacheprovider 2>&1 | tail -1 | tee $OUT/tests.txt
  PYTHONPATH=$SITE:/tmp/im python3 -m pytest -q -m gpu tests/test_ops/test_backbone_through_op.py \
    tests/test_models/test_vmamba_gpu.py -p no:cacheprovider 2>&1 | tail -1 | tee -a $OUT/tests.txt
  for t in main im; do d=$(tree $t)
    (cd $d && PYTHONPATH=$SITE:$d python3 $REPO/.gpu/core_host.py /tmp 2>&1 | grep wall | sed "s/^/$t /" | tee -a $OUT/core_host.txt)
  done
else
  for i in 1 2; do for t in main im; do d=$(tree $t)
    (cd $d && PYTHONPATH=$SITE:$d python3 tools/analysis/benchmark.py --sections models --modes train \
      --models vmamba_tiny,vmamba_small,vmamba_base --out /tmp/train_${t}_$i 2>&1 | grep '"models"' \
      | python3 -c "import sys,json
for l in sys.stdin:
  r=json.loads(l); print('$t', r.get('model'), r.get('img_per_s'), r.get('ms'), r.get('gpu_ms'), r.get('peak_mib'))" \
      | tee -a $OUT/train.txt)
  done; done
  for t in main im; do d=$(tree $t)
    (cd $d && PYTHONPATH=$SITE:$d python3 tools/analysis/benchmark.py --sections core --out $OUT/core_$t 2>&1 | grep -c fwd)
  done
fi
