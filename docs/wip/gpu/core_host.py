"""Where the fused core's fwd+bwd host time goes, per T stage shape (diagnosis, not committed)."""
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, "tools/analysis")
from benchmark import CORE_SHAPES, kernel_ms, profiled, time_cuda  # noqa: E402

from mmvmamba import ops  # noqa: E402

out = sys.argv[1]
for batch, inner, height, width, rank in CORE_SHAPES:
    gen = torch.Generator(device='cuda').manual_seed(0)

    def randn(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, device='cuda', generator=gen) * scale + shift

    x = F.silu(randn(batch, inner, height, width)).to(torch.bfloat16)
    params = [randn(4, rank + 2, inner, scale=inner**-0.5), randn(4, inner, rank, scale=rank**-0.5),
              randn(4, inner, scale=0.5, shift=-4), torch.zeros(4 * inner, 1, device='cuda'),
              torch.ones(4 * inner, device='cuda'), torch.ones(inner, device='cuda'),
              torch.zeros(inner, device='cuda')]
    grad = randn(batch, inner, height, width).to(torch.bfloat16)
    leaves = [x.clone().requires_grad_(True)] + [p.clone().requires_grad_(True) for p in params]

    def fb():
        for leaf in leaves:
            leaf.grad = None
        ops.ss2d_core(*leaves, backend='fused').backward(grad)

    ms, _ = time_cuda(fb, 10, 30)
    gpu = kernel_ms(fb)
    # host split: time of each part's call, GPU not synchronised in between
    fw, bw, zg = [], [], []
    for _ in range(40):
        t0 = time.perf_counter()
        for leaf in leaves:
            leaf.grad = None
        t1 = time.perf_counter()
        y = ops.ss2d_core(*leaves, backend='fused')
        t2 = time.perf_counter()
        y.backward(grad)
        t3 = time.perf_counter()
        zg.append(t1 - t0); fw.append(t2 - t1); bw.append(t3 - t2)
        if _ % 4 == 3:
            torch.cuda.synchronize()
    med = lambda v: statistics.median(v) * 1e3  # noqa: E731
    line = (f'{batch}x{inner}x{height}x{width}: wall {ms:.3f} gpu {gpu:.3f} | host zero_grad '
            f'{med(zg):.3f} fwd {med(fw):.3f} bwd {med(bw):.3f} ms')
    print(line, flush=True)
    prof = profiled(fb, 20, activity='cpu')
    with open(f'{out}/core_host_ops.txt', 'a') as f:
        f.write(line + '\n')
        f.write(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=30) + '\n')
