"""tools/analysis/count_host_ops.py on CPU (its kernels under Triton's interpreter).

The counts are the host's work per call of the fused core, the Triton LayerNorm and a VSS
block. Triton launches are exact and independent of the torch version, so they are pinned here:
each launch costs ~30 us of host time on the H100 machine's host (docs/benchmarks.md, session
11), and the eager training step is bound by host time. An added launch must update this test
and say why; torch calls and ATen ops depend on the torch version and are only checked to be
counted.
"""
from __future__ import annotations

import json
import sys

from tool_helpers import REPO, run, tool_env

# part: (forward launches, backward launches) at the tool's shapes (one scan segment: the
# paired scan kernel). Core forward: scan-order copy, scan, transposed merge, output norm;
# backward: output norm, transpose of its gradient, scan, merge of the input gradient (the
# scan-order copy is the forward's, saved). The block adds its two LayerNorms.
LAUNCHES = {
    'ss2d_core': (4, 4),
    'ss2d_core (C++)': (4, 4),
    'layer_norm_2d': (1, 1),
    'layer_norm_2d (C++)': (1, 1),
    'VSS block (training)': (6, 6),
}


def test_count_host_ops_reports_every_part_with_the_pinned_launches(tmp_path):
    proc = run([sys.executable, str(REPO / 'tools/analysis/count_host_ops.py'), '--json'],
               cwd=tmp_path, env=tool_env(threads=2))
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    for part, (forward, backward) in LAUNCHES.items():
        fwd, bwd = counts[f'{part} forward'], counts[f'{part} backward']
        assert (fwd['launches'], bwd['launches']) == (forward, backward), part
        for row in (fwd, bwd):
            assert row['aten ops'] > 0, (part, row)
            if part.endswith('(C++)'):
                # Issued from C++: the Python-level calls left are those of the call itself and
                # of the test's backward() (6 with torch 2.14), against 11-99 in Python.
                assert row.get('torch calls', 0) <= 8, (part, row)
            else:
                assert row['torch calls'] > 0, (part, row)
