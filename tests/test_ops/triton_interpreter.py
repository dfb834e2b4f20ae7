"""Run a Triton test module as a script under Triton's CPU interpreter and read its results.

The module's ``__main__`` part prints one line ``RESULTS <json>``; running it in a fresh process
with ``TRITON_INTERPRET=1`` keeps the interpreter out of the pytest process. The Triton tests
also share how they score a kernel against the reference (:func:`relative_error`) and how they
judge the scores (:func:`check_errors`).
"""
import json
import os
import subprocess
import sys

import torch


def run_interpreted(script: str, timeout: int) -> dict:
    """Run ``script`` with ``TRITON_INTERPRET=1``; return the JSON of its ``RESULTS`` line."""
    env = dict(os.environ, TRITON_INTERPRET='1')
    proc = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True,
                          timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('RESULTS ')]
    assert proc.returncode == 0 and lines, f'interpreter worker failed:\n{proc.stderr[-4000:]}'
    return json.loads(lines[-1][len('RESULTS '):])


def relative_error(a, b) -> float:
    """Relative L2 error of ``a`` against ``b`` (inf if ``a`` is not finite). Two Nones (a
    gradient both sides lack) score 0, one None inf."""
    if a is None or b is None:
        return 0.0 if a is None and b is None else float('inf')
    if not torch.isfinite(a).all():
        return float('inf')
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-6)).item()


def check_errors(errors: dict, tolerance: float, flags=(), ignore=()) -> None:
    """Assert every boolean in ``flags`` holds and every other score (but ``ignore``) is at most
    ``tolerance``."""
    errors = dict(errors)
    for flag in flags:
        assert errors.pop(flag), f'{flag} is False'
    for key in ignore:
        errors.pop(key, None)
    bad = {k: v for k, v in errors.items() if not v <= tolerance}
    assert not bad, f'relative errors above {tolerance}: {bad}'
