"""mmengine extensions: hooks that OpenMMLab's runner needs for mmvmamba's guarantees.

Importing this package registers them in mmengine's root ``HOOKS`` registry, so configs of
mmdet, mmseg and mmpretrain find them by ``type`` once they list ``'mmvmamba.engine'`` in
``custom_imports``.
"""
from .hooks import RNGStateHook

__all__ = ['RNGStateHook']
