"""Backbones: :class:`VMamba` and the reference-config drop-in :class:`MM_VSSM`."""
from .compat import MM_VSSM
from .vmamba import ARCH_SETTINGS, VMamba

__all__ = ['ARCH_SETTINGS', 'MM_VSSM', 'VMamba']
