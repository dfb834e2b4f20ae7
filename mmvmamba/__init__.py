"""mmvmamba: the VMamba backbone (Liu et al., NeurIPS 2024) for mmdet, mmsegmentation, mmpretrain.

``import mmvmamba`` (or ``custom_imports = dict(imports=['mmvmamba'], allow_failed_imports=False)``
in a config) does three things and prints nothing:

1. registers mmvmamba's models (``VMamba``, ``MM_VSSM``, ...) into the ``MODELS`` registry of each
   of mmdet, mmsegmentation and mmpretrain that is installed (see :mod:`mmvmamba.registry`);
2. registers mmvmamba's runner hooks (``RNGStateHook``, for exact ``--resume``) into mmengine's
   root ``HOOKS`` registry, which every downstream scope falls back to;
3. makes mmengine load local Runner checkpoints with torch's safe unpickler plus the few data
   types such checkpoints hold (see :mod:`mmvmamba.utils.safe_load`).
"""
from . import engine  # noqa: F401  (registers the hooks)
from .registry import register_into_downstream
from .utils.safe_load import install_runner_checkpoint_loader
from .version import __version__

install_runner_checkpoint_loader()
register_into_downstream()

__all__ = ['__version__']
