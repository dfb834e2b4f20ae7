"""Prototype for issue 6's compiled inference (session 20): the MLP's ``fc1`` and its exact
GELU as one Triton GEMM with the GELU in the epilogue, against cuBLAS ``fc1`` followed by a
separate GELU kernel (what eager mode and inductor's default mode run), at VMamba-T's four MLP
shapes at batch 128 in bf16 (``M = 128 * side**2`` positions, ``K = dim``, ``N = 4 * dim``).

The same kernel with ``GRAD`` gives the backward's ``d loss / d (fc1's output)`` by
recomputing ``fc1`` and applying GELU's derivative in the epilogue (so a training forward need
not keep the pre-activation: one ``(M, 4*dim)`` map less per block), against today's
``gelu_backward`` kernel on the kept pre-activation.

On the GPU machine, from the repository root: ``python3 docs/wip/gpu/linear_gelu.py`` prints
one line per shape (median ms of eager linear + gelu, of the two under ``torch.compile``'s
default mode, of ``gelu_backward`` alone, and of the fused forward / gradient at each launch
shape, with their largest errors against the fp32 reference).
``TRITON_INTERPRET=1 python3 docs/wip/gpu/linear_gelu.py --check`` compares both forms with
the reference on small odd shapes under Triton's interpreter (no GPU).
"""
import argparse
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

sys.path.insert(0, 'tools/analysis')  # run from the repository root
from benchmark import time_cuda  # noqa: E402

#: (BM, BN, BK, warps, stages) tried per shape on the GPU.
LAUNCH_SHAPES = ((128, 128, 32, 4, 4), (128, 128, 64, 4, 3), (128, 256, 64, 8, 3),
                 (256, 128, 64, 8, 3), (64, 128, 32, 4, 4), (128, 64, 64, 4, 4))
#: VMamba-T's (dim, side) per stage at 224.
STAGES = ((96, 56), (192, 28), (384, 14), (768, 7))


@triton.jit
def linear_gelu_kernel(x_ptr, w_ptr, b_ptr, g_ptr, out_ptr, M, N, K, BM: tl.constexpr,
                       BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
                       GRAD: tl.constexpr):
    """``out (M, N) = gelu(a)``, ``a = x (M, K) @ w (N, K)^T + b (N)``, all row-major, fp32
    accumulation, the exact (erf) GELU; ``GRAD``: instead ``out = g (M, N) * gelu'(a)``, the
    gradient at ``a`` recomputed from x (so a training forward need not keep ``a``). Programs
    are grouped ``GROUP_M`` row blocks at a time so that neighbouring programs share x's
    rows."""
    pid = tl.program_id(0)
    row_blocks = tl.cdiv(M, BM)
    col_blocks = tl.cdiv(N, BN)
    per_group = GROUP_M * col_blocks
    first_row = (pid // per_group) * GROUP_M
    group_rows = tl.minimum(row_blocks - first_row, GROUP_M)
    row_block = first_row + (pid % per_group) % group_rows
    col_block = (pid % per_group) // group_rows
    rows = row_block * BM + tl.arange(0, BM)
    cols = col_block * BN + tl.arange(0, BN)
    ks = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        k_ok = (k0 + ks) < K
        a = tl.load(x_ptr + rows[:, None].to(tl.int64) * K + (k0 + ks)[None, :],
                    mask=(rows < M)[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptr + cols[None, :] * K + (k0 + ks)[:, None],
                    mask=(cols < N)[None, :] & k_ok[:, None], other=0.0)
        acc = tl.dot(a, w, acc)
    acc += tl.load(b_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    cdf = 0.5 * (1.0 + tl.math.erf(acc * 0.7071067811865476))
    offs = rows[:, None].to(tl.int64) * N + cols[None, :]
    ok = (rows < M)[:, None] & (cols < N)[None, :]
    if GRAD:
        pdf = tl.exp(-0.5 * acc * acc) * 0.3989422804014327  # 1 / sqrt(2 pi)
        out = tl.load(g_ptr + offs, mask=ok, other=0.0).to(tl.float32) * (cdf + acc * pdf)
    else:
        out = acc * cdf
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=ok)


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                shape: tuple = LAUNCH_SHAPES[0], grad: torch.Tensor | None = None) -> torch.Tensor:
    """``gelu(F.linear(x, weight, bias))`` for a row-major ``x (M, K)``, in ``x.dtype``; with
    ``grad (M, N)``, the gradient of that at the linear's output instead."""
    bm, bn, bk, warps, stages = shape
    m, k = x.shape
    n = weight.shape[0]
    out = x.new_empty(m, n)
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn), )
    linear_gelu_kernel[grid](x, weight.contiguous(), bias, out if grad is None else grad, out, m,
                             n, k, BM=bm, BN=bn, BK=bk, GROUP_M=8, GRAD=grad is not None,
                             num_warps=warps, num_stages=stages)
    return out


def reference(x, weight, bias):
    return F.gelu(F.linear(x.float(), weight.float(), bias.float()))


def reference_grad(x, weight, bias, grad):
    """d loss / d (the linear's output), fp32, through autograd."""
    pre = F.linear(x.float(), weight.float(), bias.float()).requires_grad_(True)
    F.gelu(pre).backward(grad.float())
    return pre.grad


def check() -> None:
    """Odd shapes (masked edges in every dimension) under the interpreter, fp32 and fp16:
    its ``tl.dot`` of two bf16 tiles returns garbage (Triton 3.8's, on the CPU machine, on a
    16 x 16 product), so bf16 is checked on the GPU (the error column of :func:`bench`)."""
    torch.manual_seed(0)
    for m, k, n, dtype in ((37, 20, 44, torch.float32), (70, 33, 17, torch.float16)):
        x = torch.randn(m, k, dtype=dtype)
        w = torch.randn(n, k, dtype=dtype) / k**0.5
        b = torch.randn(n, dtype=dtype)
        g = torch.randn(m, n, dtype=dtype)
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        for name, got, want in (
                ('forward', linear_gelu(x, w, b, (32, 32, 16, 4, 1)), reference(x, w, b)),
                ('gradient', linear_gelu(x, w, b, (32, 32, 16, 4, 1), grad=g),
                 reference_grad(x, w, b, g))):
            err = ((got.float() - want).norm() / want.norm()).item()
            assert err < tol, (name, m, k, n, dtype, err)
            print(f'{m}x{k}x{n} {dtype} {name}: relative error {err:.2e}')  # noqa: T201


def median_ms(fn) -> float:
    """Median CUDA-event milliseconds per call, as tools/analysis/benchmark.py times."""
    return time_cuda(fn, 10, 30)[0]


def bench() -> None:
    torch.manual_seed(0)
    eager = lambda x, w, b: F.gelu(F.linear(x, w, b))  # noqa: E731
    compiled = torch.compile(eager)
    for dim, side in STAGES:
        m, k, n = 128 * side * side, dim, 4 * dim
        x = torch.randn(m, k, device='cuda', dtype=torch.bfloat16)
        w = torch.randn(n, k, device='cuda', dtype=torch.bfloat16) / k**0.5
        b = torch.randn(n, device='cuda', dtype=torch.bfloat16)
        want = reference(x, w, b)
        g = torch.randn(m, n, device='cuda', dtype=torch.bfloat16)
        pre = F.linear(x, w, b)  # what autograd keeps for GELU's backward today
        want_grad = reference_grad(x, w, b, g)
        eager_ms = median_ms(lambda: eager(x, w, b))  # noqa: B023 (used at once)
        compiled_ms = median_ms(lambda: compiled(x, w, b))  # noqa: B023
        gelu_bwd_ms = median_ms(lambda: torch.ops.aten.gelu_backward(g, pre))  # noqa: B023
        line = (f'M={m} K={k} N={n}: eager {eager_ms:.3f} ms, compiled {compiled_ms:.3f} ms, '
                f'gelu backward alone {gelu_bwd_ms:.3f} ms; fused forward / gradient')
        for shape in LAUNCH_SHAPES:
            err = (linear_gelu(x, w, b, shape).float() - want).abs().max().item()
            grad_err = (linear_gelu(x, w, b, shape, grad=g).float() - want_grad).abs().max().item()
            ms = median_ms(lambda: linear_gelu(x, w, b, shape))  # noqa: B023 (used at once)
            grad_ms = median_ms(lambda: linear_gelu(x, w, b, shape, grad=g))  # noqa: B023
            line += (f' | {"x".join(map(str, shape))} {ms:.3f} / {grad_ms:.3f} '
                     f'(err {err:.1e} / {grad_err:.1e})')
        print(line, flush=True)  # noqa: T201 (CLI output)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--check', action='store_true')
    args = parser.parse_args()
    check() if args.check else bench()
