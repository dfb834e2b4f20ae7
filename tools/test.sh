#!/usr/bin/env bash
# Run mmvmamba's checks: ruff, then the whole pytest suite on CPU (GPU tests skip without CUDA).
#
#   bash tools/test.sh              # everything
#   bash tools/test.sh -m gpu       # extra arguments go to pytest
#
# Uses the environment made by tools/install.sh (<repo>/.venv, or MMVMAMBA_VENV), or the active
# Python when MMVMAMBA_USE_ACTIVE_ENV=1.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "${MMVMAMBA_USE_ACTIVE_ENV:-0}" = 1 ]; then PY=$(command -v python); else PY=${MMVMAMBA_VENV:-$ROOT/.venv}/bin/python; fi
[ -x "$PY" ] || { echo "[test] no Python at $PY: run 'bash tools/install.sh' first" >&2; exit 1; }
cd "$ROOT" || exit 1

"$PY" -m ruff check mmvmamba tools tests configs || { echo "[test] ruff found problems" >&2; exit 1; }
"$PY" -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "[test] pytest collected no tests: treating that as a failure" >&2
  exit 1
fi
exit $rc
