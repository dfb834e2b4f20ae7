"""mmengine extensions: hooks that OpenMMLab's runner needs for mmvmamba's guarantees.

Importing this package (``import mmvmamba`` does) registers them in mmengine's root ``HOOKS``
registry, so configs of mmdet, mmseg and mmpretrain find them by ``type``.
"""
from .hooks import LossTraceHook, RNGStateHook

__all__ = ['LossTraceHook', 'RNGStateHook']
