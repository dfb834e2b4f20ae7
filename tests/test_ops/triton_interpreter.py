"""Run a Triton test module as a script under Triton's CPU interpreter and read its results.

The module's ``__main__`` part prints one line ``RESULTS <json>``; running it in a fresh process
with ``TRITON_INTERPRET=1`` keeps the interpreter out of the pytest process.
"""
import json
import os
import subprocess
import sys


def run_interpreted(script: str, timeout: int) -> dict:
    """Run ``script`` with ``TRITON_INTERPRET=1``; return the JSON of its ``RESULTS`` line."""
    env = dict(os.environ, TRITON_INTERPRET='1')
    proc = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True,
                          timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('RESULTS ')]
    assert proc.returncode == 0 and lines, f'interpreter worker failed:\n{proc.stderr[-4000:]}'
    return json.loads(lines[-1][len('RESULTS '):])
