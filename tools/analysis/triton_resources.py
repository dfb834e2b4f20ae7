"""Registers, spills and SASS instruction mix of the fused SS2D scan kernels, without a GPU.

Triton compiles for a named target (sm_90 by default) on any machine; the ptxas / cuobjdump it
ships report each kernel's registers and stack (spill) bytes and disassemble it. Use it to
check a kernel change before spending device time (``docs/benchmarks.md`` lists past results).

Example::

    python tools/analysis/triton_resources.py --block-d 4 --block-l 64 --rank 6 --warps 2
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mmvmamba.ops.triton.ss2d_scan import ss2d_scan_bwd_kernel, ss2d_scan_fwd_kernel

HALF_POINTERS = ('x_ptr', 'xt_ptr', 'proj_ptr', 'gz_ptr')  # in the activation's dtype


def inspect(kernel, constexprs: dict, args: argparse.Namespace) -> str:
    """Compile ``kernel`` for the target; its argument types come from its own parameter list:
    ``*_ptr`` are pointers (``HALF_POINTERS`` in ``--dtype``, the rest fp32), other
    non-constexpr parameters int32. Also reports the layout of the scans' tiles (see
    ``ss2d_scan``: consecutive steps per lane, a row within one warp, is the fast one)."""
    signature = {}
    for param in kernel.params:
        name = param.name
        if param.is_constexpr:
            signature[name] = 'constexpr'
        elif name.endswith('_ptr'):
            signature[name] = '*' + (args.dtype if name in HALF_POINTERS else 'fp32')
        else:
            signature[name] = 'i32'
    # As a launch specialises them: pointers from torch allocations and the row stride S (a
    # multiple of 16 by construction) are 16-divisible; L is left unspecialised (196, 49, ...).
    aligned = {(i, ): [['tt.divisibility', 16]] for i, param in enumerate(kernel.params)
               if param.name.endswith('_ptr') or param.name == 'S'}
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs,
                                        attrs=aligned),
                              target=GPUTarget('cuda', args.arch, 32),
                              options=dict(num_warps=args.warps))
    tools = os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin')
    with tempfile.NamedTemporaryFile(suffix='.cubin') as cubin:
        cubin.write(compiled.asm['cubin'])
        cubin.flush()
        usage = subprocess.run([os.path.join(tools, 'cuobjdump'), '--dump-resource-usage',
                                cubin.name], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([os.path.join(tools, 'cuobjdump'), '-sass', cubin.name],
                              capture_output=True, text=True, check=True).stdout
    resources = re.search(r'REG:(\d+) STACK:(\d+)', usage)
    ops = re.findall(r'^\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)', sass, re.M)
    mix = collections.Counter(ops).most_common(args.top)
    ttgir = compiled.asm['ttgir']
    layouts = dict(re.findall(r'^(#blocked\d*) = #ttg\.blocked<\{(sizePerThread = [^,]+, [^,]+, '
                              r'threadsPerWarp = [^,]+, [^,]+, warpsPerCTA = [^,]+, [^,]+),', ttgir,
                              re.M))
    scan = re.search(r'"tt\.scan".*?tensor<\d+x\d+xf32, (#blocked\d*)>', ttgir, re.S)
    converts = len(re.findall(r'ttg\.convert_layout %\S+ : tensor<\d+x\d+x', ttgir))
    return (f'registers {resources.group(1)}, stack {resources.group(2)} B, '
            f'{len(ops)} instructions: ' + ', '.join(f'{op} {n}' for op, n in mix)
            + f'; scan layout {layouts.get(scan.group(1)) if scan else "?"}, '
            f'{converts} tile layout conversions')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--block-d', type=int, default=4)
    parser.add_argument('--block-l', type=int, default=64)
    parser.add_argument('--rank', type=int, default=6, help='dt rank R')
    parser.add_argument('--warps', type=int, default=2)
    parser.add_argument('--dt-dot', action='store_true')
    parser.add_argument('--rank-block', type=int, default=0,
                        help='dt_low rows unrolled per step of the rank loop (0: all R)')
    parser.add_argument('--stages', type=int, default=1,
                        help='software pipelining depth of the chunk loops (1: none)')
    parser.add_argument('--dtype', default='bf16', choices=['bf16', 'fp16', 'fp32'])
    parser.add_argument('--arch', type=int, default=90)
    parser.add_argument('--top', type=int, default=10, help='instruction kinds shown')
    args = parser.parse_args()
    base = dict(R=args.rank, RP=max(16, triton.next_power_of_2(args.rank)), BD=args.block_d,
                BL=args.block_l, DT_DOT=args.dt_dot, RB=args.rank_block,
                NS=args.stages)
    variants = (('', dict(SUMMARY=False, PAIRED=False)),
                (' summary', dict(SUMMARY=True, PAIRED=False)),
                (' paired', dict(SUMMARY=False, PAIRED=True)))
    for name, kernel in (('fwd', ss2d_scan_fwd_kernel), ('bwd', ss2d_scan_bwd_kernel)):
        for label, flags in variants:
            report = inspect(kernel, dict(base, **flags), args)
            print(f'{name}{label}: {report}')  # noqa: T201 (CLI)


if __name__ == '__main__':
    main()
