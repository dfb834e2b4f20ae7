"""mmvmamba: the VMamba backbone for OpenMMLab (mmdet, mmsegmentation, mmpretrain)."""
from .version import __version__

__all__ = ['__version__']
