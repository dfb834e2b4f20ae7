"""Print the environment mmvmamba runs in: ``python -m mmvmamba.collect_env``.

Lists Python, torch and CUDA, the OpenMMLab packages, and for the ops which backends are
available on each device, the path of the loaded ``mmvmamba._C`` library, the CUDA
architectures it was built for and which Triton ops issue their eager CUDA passes from C++.
"""
# ruff: noqa: T201  (a command-line report: it prints)
import importlib
import importlib.metadata
import platform
import sys
from typing import Dict, List, Tuple

import torch


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return 'not installed'


def collect_env() -> List[Tuple[str, str]]:
    """Return ``(name, value)`` rows describing the environment."""
    rows = [('Python', sys.version.replace('\n', ' ')), ('Platform', platform.platform()),
            ('PyTorch', torch.__version__), ('PyTorch CUDA', str(torch.version.cuda)),
            ('CUDA available', str(torch.cuda.is_available()))]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(index)
            name = torch.cuda.get_device_name(index)
            rows.append((f'GPU {index}', f'{name} (sm_{major}{minor})'))
    for dist in ('torchvision', 'triton', 'mmengine', 'mmcv', 'mmdet', 'mmsegmentation',
                 'mmpretrain', 'mmvmamba'):
        rows.append((dist, _version(dist)))
    rows.extend(_op_rows())
    return rows


def _op_rows() -> List[Tuple[str, str]]:
    from mmvmamba import ops
    from mmvmamba.ops import compiled

    rows = []
    try:
        rows.append(('mmvmamba._C library', compiled.library_path()))
        archs = compiled.built_cuda_archs()
        rows.append(('mmvmamba._C CUDA archs', archs or 'none (CPU-only build)'))
        rows.append(('Triton ops\' eager CUDA passes', _cpp_passes_text()))
    except ImportError as exc:
        rows.append(('mmvmamba._C library', f'MISSING: {exc}'))
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    for op in ('selective_scan', 'ss2d_core', 'layer_norm_2d'):
        for device in devices:
            status: Dict[str, Tuple[bool, str]] = ops.dispatch.available_backends(op, device)
            text = ', '.join(name if ok else f'{name} (unavailable: {reason})'
                             for name, (ok, reason) in status.items())
            rows.append((f'{op} backends on {device}', text))
    return rows


def _cpp_passes_text() -> str:
    """Which Triton ops issue their eager CUDA passes from C++ (mmvmamba.ops.triton.host)."""
    from mmvmamba.ops.triton import host

    why = host.why_python_passes()
    if why is not None:
        return f'Python ({why[0]})'
    ops = [op for op, on in host.CPP_PASSES.items() if on]
    return f'C++ for {", ".join(ops) or "none"}, Python for the rest'


def main() -> None:
    for name, value in collect_env():
        print(f'{name}: {value}')


if __name__ == '__main__':
    main()
