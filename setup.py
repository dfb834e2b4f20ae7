"""Builds mmvmamba's compiled ops (kernels/*: the selective scan, the C++ issue of the Triton ops'
eager passes); all metadata lives in setup.cfg.

The CPU part is always built. The CUDA part is built when a GPU is visible at build time (for
that GPU's architecture), or when ``MMVMAMBA_CUDA_ARCH_LIST`` (e.g. ``"9.0"`` or ``"8.0;9.0"``)
forces it; ``MMVMAMBA_CUDA_ARCH_LIST=none`` forbids it.
"""
import glob
import os

from setuptools import setup


def extensions():
    """Return (ext_modules, cmdclass) for the ops in kernels/."""
    sources = sorted(glob.glob('kernels/*/*.cpp'))
    if not sources:
        return [], {}
    import torch
    from torch.utils import cpp_extension

    arch = os.environ.get('MMVMAMBA_CUDA_ARCH_LIST', '').strip()
    if arch.lower() == 'none':
        with_cuda = False
    elif arch:
        with_cuda = True
    else:
        with_cuda = torch.cuda.is_available()
        if with_cuda:
            major, minor = torch.cuda.get_device_capability()
            arch = f'{major}.{minor}'
    if with_cuda and cpp_extension.CUDA_HOME is None:
        raise RuntimeError('building the CUDA op needs the CUDA toolkit (nvcc); set CUDA_HOME, '
                           'or MMVMAMBA_CUDA_ARCH_LIST=none for a CPU-only build')
    # -fno-trapping-math lets the compiler if-convert and vectorise the branch-free math loops.
    cxx = ['-O3', '-std=c++20', '-fopenmp', '-fno-trapping-math', '-fno-math-errno']
    if with_cuda:
        os.environ['TORCH_CUDA_ARCH_LIST'] = arch
        ext = cpp_extension.CUDAExtension(
            'mmvmamba._C',
            sources + sorted(glob.glob('kernels/*/*.cu')),
            define_macros=[('MMVMAMBA_WITH_CUDA', None),
                           ('MMVMAMBA_CUDA_ARCHS', f'"{arch}"')],
            extra_compile_args={'cxx': cxx,
                                'nvcc': ['-O3', '-std=c++20', '--use_fast_math',
                                         '--expt-relaxed-constexpr', '-lineinfo']},
            extra_link_args=['-fopenmp'])
    else:
        ext = cpp_extension.CppExtension(
            'mmvmamba._C', sources, define_macros=[('MMVMAMBA_CUDA_ARCHS', '""')],
            extra_compile_args={'cxx': cxx}, extra_link_args=['-fopenmp'])
    return [ext], {'build_ext': cpp_extension.BuildExtension}


ext_modules, cmdclass = extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
