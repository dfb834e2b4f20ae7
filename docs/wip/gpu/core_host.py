"""Where the fused core's forward + backward host time goes, per core shape of
tools/analysis/benchmark.py (run from the repository root on the GPU machine):
``python3 core_host.py OUT_DIR`` prints one line per shape (CUDA-event wall, profiler kernel
time, and the host time of clearing the gradients, the forward call and the backward call) and
appends a CPU-activity op table per shape to ``OUT_DIR/core_host_ops.txt``."""
import statistics
import sys
import time

import torch

from mmvmamba import ops

sys.path.insert(0, 'tools/analysis')
from benchmark import CORE_SHAPES, core_inputs, kernel_ms, profiled, time_cuda  # noqa: E402


def median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1e3


out = sys.argv[1]
for batch, inner, height, width, rank in CORE_SHAPES:
    x, params, grad = core_inputs(batch, inner, height, width, rank)
    leaves = [x.clone().requires_grad_(True)] + [p.clone().requires_grad_(True) for p in params]

    def forward_backward(leaves=leaves, grad=grad):
        for leaf in leaves:
            leaf.grad = None
        ops.ss2d_core(*leaves, backend='fused').backward(grad)

    ms, _ = time_cuda(forward_backward, 10, 30)
    gpu = kernel_ms(forward_backward)
    # Host time of each part of the call, the GPU not synchronised in between (every 4 calls).
    clear, forward, backward = [], [], []
    for i in range(40):
        t0 = time.perf_counter()
        for leaf in leaves:
            leaf.grad = None
        t1 = time.perf_counter()
        y = ops.ss2d_core(*leaves, backend='fused')
        t2 = time.perf_counter()
        y.backward(grad)
        t3 = time.perf_counter()
        clear.append(t1 - t0)
        forward.append(t2 - t1)
        backward.append(t3 - t2)
        if i % 4 == 3:
            torch.cuda.synchronize()
    line = (f'{batch}x{inner}x{height}x{width}: wall {ms:.3f} gpu {gpu:.3f} | host zero_grad '
            f'{median_ms(clear):.3f} fwd {median_ms(forward):.3f} '
            f'bwd {median_ms(backward):.3f} ms')
    print(line, flush=True)  # noqa: T201 (CLI output)
    prof = profiled(forward_backward, 20, activity='cpu')
    with open(f'{out}/core_host_ops.txt', 'a') as f:
        f.write(line + '\n')
        f.write(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=30) + '\n')
