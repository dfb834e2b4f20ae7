"""`import mmvmamba` registers into every installed downstream registry and prints nothing."""
import subprocess
import sys

import pytest

from mmvmamba.registry import DOWNSTREAM_PACKAGES, installed_downstream


def test_import_prints_nothing():
    proc = subprocess.run([sys.executable, '-c', 'import mmvmamba'],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ''
    assert proc.stderr == ''


@pytest.mark.parametrize('package', DOWNSTREAM_PACKAGES)
def test_backbone_registered_downstream(package):
    import importlib

    import mmvmamba  # noqa: F401
    if package not in installed_downstream():
        pytest.skip(f'{package} is not installed')
    registries = importlib.import_module(f'{package}.registry')
    assert registries.MODELS.module_dict.get('VMamba') is not None
    assert registries.MODELS.module_dict.get('MM_VSSM') is not None
    # The hook lives in mmengine's root registry; every downstream scope falls back to it.
    assert registries.HOOKS.get('RNGStateHook') is not None


def test_missing_downstream_is_not_an_error():
    # Hide mmseg and mmpretrain: the registration into mmdet still happens.
    code = """
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('mmseg', 'mmpretrain'):
            raise ModuleNotFoundError(name)
        return None
sys.meta_path.insert(0, Hide())
import importlib.util
importlib.util.find_spec = (lambda f: lambda name, *a: None if name.split('.')[0] in
                            ('mmseg', 'mmpretrain') else f(name, *a))(importlib.util.find_spec)
import mmvmamba
from mmdet.registry import MODELS
assert MODELS.module_dict.get('VMamba') is not None
assert 'mmseg' not in sys.modules and 'mmpretrain' not in sys.modules
"""
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
