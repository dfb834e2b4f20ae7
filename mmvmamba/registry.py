"""The one place that knows about the downstream registries.

mmvmamba keeps its own :class:`mmengine.registry.Registry` of models. Importing :mod:`mmvmamba`
copies every class registered here into the ``MODELS`` registry of each of mmdet, mmsegmentation
and mmpretrain that is installed, so a config of any of them can say ``type='VMamba'`` once it has
``custom_imports = dict(imports=['mmvmamba'], allow_failed_imports=False)``.
"""
from __future__ import annotations

import importlib
import importlib.util

from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

#: mmvmamba's own model registry; decorate public model classes with ``@MODELS.register_module()``.
MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmvmamba', locations=['mmvmamba.models'])

#: The downstream libraries whose ``<package>.registry.MODELS`` receive mmvmamba's models.
DOWNSTREAM_PACKAGES = ('mmdet', 'mmseg', 'mmpretrain')


def installed_downstream() -> list[str]:
    """Names of the downstream packages that are installed (found on the path, not imported)."""
    return [name for name in DOWNSTREAM_PACKAGES if importlib.util.find_spec(name) is not None]


def register_into_downstream() -> list[str]:
    """Register every mmvmamba model into the installed downstream ``MODELS`` registries.

    Importing ``<package>.registry`` is light: it does not import the package's models, so an
    unrelated breakage there (e.g. mmpretrain's BLIP module under transformers >= 5) cannot stop it.

    Returns:
        The downstream packages that now know mmvmamba's models.
    """
    import mmvmamba.models  # noqa: F401  (runs the @MODELS.register_module() decorators)

    done = []
    for name in installed_downstream():
        registry = importlib.import_module(f'{name}.registry').MODELS
        for model_name, cls in MODELS.module_dict.items():
            if registry.module_dict.get(model_name) is not cls:
                registry.register_module(name=model_name, module=cls, force=True)
        done.append(name)
    return done
