#!/usr/bin/env bash
# Install mmvmamba and its pinned OpenMMLab 2.x stack from nothing.
#
#   bash tools/install.sh            # creates ./.venv and installs everything into it
#
# Environment knobs:
#   MMVMAMBA_VENV=PATH        virtual environment to create/use (default: <repo>/.venv)
#   MMVMAMBA_USE_ACTIVE_ENV=1 install into the Python that is active now (keeps your own CUDA torch;
#                             torch >= 2.6 and a matching torchvision must already be installed)
#   MMVMAMBA_CACHE=PATH       where built mmcv wheels are kept (default: ~/.cache/mmvmamba)
#   MAX_JOBS=N                parallel compile jobs (default: number of cores)
#   MMVMAMBA_CUDA_ARCH_LIST   e.g. "9.0": force building the CUDA op for these architectures
#                             (default: build it only when a GPU is visible, for that GPU)
#
# Idempotent: a second run reuses the venv and the cached mmcv wheel and finishes in about a minute.
# Fails loudly: any step that does not leave a working package stops the script.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MMVMAMBA_CACHE:-$HOME/.cache/mmvmamba}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
OPENMMLAB_SPEC="mmengine==0.10.7 mmdet==3.3.0 mmsegmentation==1.2.2 mmpretrain==1.2.0"
MMCV_VERSION=2.1.0

log() { echo "[install] $*"; }
die() { echo "[install] ERROR: $*" >&2; exit 1; }

if [ "${MMVMAMBA_USE_ACTIVE_ENV:-0}" = 1 ]; then
  PY=$(command -v python) || die "MMVMAMBA_USE_ACTIVE_ENV=1 but no python on PATH"
  log "installing into the active environment: $PY"
else
  VENV=${MMVMAMBA_VENV:-$ROOT/.venv}
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV"
    python3 -m venv "$VENV"
  fi
  PY=$VENV/bin/python
fi
pip() { "$PY" -m pip "$@"; }

# Build tooling. setuptools < 81 keeps pkg_resources (mmcv's setup.py and mmengine's
# `mmdet::`/`mmseg::` config scopes import it); >= 77.0.3 is what torch asks for.
pip install -q --upgrade "pip>=24" "setuptools>=77.0.3,<81" wheel ninja

# torch + torchvision. A user's own torch is kept when MMVMAMBA_USE_ACTIVE_ENV=1.
if [ "${MMVMAMBA_USE_ACTIVE_ENV:-0}" = 1 ]; then
  "$PY" -c "import torch, torchvision" || die "the active environment needs torch>=2.6 and torchvision"
else
  "$PY" -c "import torch, torchvision" 2>/dev/null || { log "installing $TORCH_SPEC"; pip install -q $TORCH_SPEC; }
fi
"$PY" - <<'PY' || exit 1
import sys
import torch, torchvision  # noqa: F401  (a torchvision that does not import breaks mmpretrain)
from packaging.version import Version
if Version(torch.__version__.split('+')[0]) < Version('2.6'):
    sys.exit(f'[install] ERROR: torch {torch.__version__} is too old; mmvmamba needs torch>=2.6')
print(f'[install] torch {torch.__version__}, torchvision {torchvision.__version__}')
PY

# mmcv 2.1.0 from source, with its compiled ops. PyPI has only the source release. pip's wheel
# cache is keyed by URL alone, so we keep our own, keyed by what the binary depends on.
TORCH_INC=$("$PY" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'include'))")
# torch >= 2.14's headers refuse C++17 while mmcv's setup.py hard-codes it.
if grep -rqs 'C++20 or later compatible compiler is required' "$TORCH_INC"; then CXX_STD=c++20; else CXX_STD=c++17; fi
read -r TORCH_TAG CUDA_TAG PY_TAG < <("$PY" - <<'PY'
import sys, torch
from torch.utils import cpp_extension
cuda = 'cpu'
if torch.cuda.is_available() and cpp_extension.CUDA_HOME:
    major, minor = torch.cuda.get_device_capability()
    cuda = f'cu{torch.version.cuda.replace(".", "")}-sm{major}{minor}'
print(torch.__version__.replace('+', '_'), cuda, f'cp{sys.version_info[0]}{sys.version_info[1]}')
PY
)
MMCV_KEY="mmcv-$MMCV_VERSION-torch$TORCH_TAG-$CXX_STD-$CUDA_TAG-$PY_TAG"
MMCV_DIR=$CACHE/$MMCV_KEY
if ! "$PY" -c "import mmcv, mmcv._ext; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
  if ! ls "$MMCV_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    log "building mmcv $MMCV_VERSION with ops ($MMCV_KEY, MAX_JOBS=$MAX_JOBS); this takes about 15 minutes on 2 cores"
    BUILD=$(mktemp -d)
    pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$BUILD" "mmcv==$MMCV_VERSION"
    tar -xzf "$BUILD"/mmcv-$MMCV_VERSION.tar.gz -C "$BUILD"
    SRC=$BUILD/mmcv-$MMCV_VERSION
    if [ "$CXX_STD" = c++20 ]; then
      sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
      grep -q -- '-std=c++20' "$SRC/setup.py" || die "could not switch mmcv's build to C++20"
    fi
    if [ "$CUDA_TAG" = cpu ]; then export FORCE_CUDA=0; else export FORCE_CUDA=1; fi
    (cd "$SRC" && MMCV_WITH_OPS=1 "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$BUILD/dist" .)
    mkdir -p "$MMCV_DIR"
    cp "$BUILD"/dist/mmcv-*.whl "$MMCV_DIR"/
    rm -rf "$BUILD"
  else
    log "using cached mmcv wheel $MMCV_DIR"
  fi
  pip install -q --no-deps --force-reinstall "$MMCV_DIR"/mmcv-*.whl
fi

# The rest of the stack, then mmvmamba (editable; builds its C++/CUDA op).
# ftfy and regex: mmseg 1.2.2 imports its CLIP tokenizer (mmseg.utils) unconditionally.
pip install -q "mmcv==$MMCV_VERSION" $OPENMMLAB_SPEC pycocotools ftfy regex triton pytest ruff matplotlib
pip install -q --no-build-isolation --no-deps -e "$ROOT"

"$PY" - <<'PY' || die "the installed stack does not work (see the error above)"
import mmcv, mmengine, mmdet, mmseg
try:
    import mmcv._ext  # noqa: F401
except ImportError as e:
    raise SystemExit(f'mmcv {mmcv.__version__} has no compiled ops (mmcv._ext): {e}')
import mmvmamba
print(f'[install] ok: mmcv {mmcv.__version__} (ops), mmengine {mmengine.__version__}, '
      f'mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, mmvmamba {mmvmamba.__version__}')
PY
log "done in ${SECONDS}s. Activate with: source ${VENV:-<your env>}/bin/activate"
