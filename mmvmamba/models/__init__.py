"""mmvmamba's models; importing this registers them in :data:`mmvmamba.registry.MODELS`."""
from .backbones import ARCH_SETTINGS, MM_VSSM, VMamba

__all__ = ['ARCH_SETTINGS', 'MM_VSSM', 'VMamba']
