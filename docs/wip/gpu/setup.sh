# Source me on the device machine from the repository root: installs the OpenMMLab wheels into a
# side dir and (BUILD_C=1) builds mmvmamba._C for sm_90 in place.
export SITE=/tmp/mmv_site
if [ ! -d "$SITE/mmdet" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .gpu/wheels/*.whl 2>&1 | tail -3
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MMVMAMBA_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
build_in() {  # build_in DIR LOG: build DIR's _C in place
  (cd "$1" && PYTHONPATH="$SITE:$1" python3 setup.py -q build_ext --inplace > "$2" 2>&1) \
    || { echo "build failed in $1"; tail -30 "$2"; return 1; }
}
if [ "${BUILD_C:-0}" = 1 ]; then
  t0=$(date +%s); build_in "$PWD" /tmp/build_main.log && echo "built _C in $(( $(date +%s) - t0 )) s"
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
