"""Paths and builders for the model tests' data (tests/data); imported by tests and conftest."""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[1] / 'data'
FIXTURES = DATA / 'official_small'
KEYS = DATA / 'official_keys'


def fixture_meta() -> dict:
    """How the reference fixtures were made (tests/data/official_small/fixture_meta.json)."""
    return json.loads((FIXTURES / 'fixture_meta.json').read_text())


def fixture_arch() -> dict:
    """The arch dict of the scaled-down reference model behind tests/data/official_small."""
    config = fixture_meta()['config']
    return {name: config[name] for name in (
        'dims', 'depths', 'ssm_ratio', 'ssm_d_state', 'ssm_dt_rank', 'ssm_conv', 'ssm_conv_bias',
        'mlp_ratio')}


def reference_keys(arch: str) -> dict:
    """The reference key lists of a released model (``VSSM`` classifier, ``Backbone_VSSM``)."""
    return json.loads((KEYS / f'keys_{arch}.json').read_text())


def random_state(key_shapes: list, seed: int) -> OrderedDict:
    """A state dict with the given ``[[key, shape], ...]``, filled with seeded random values."""
    gen = torch.Generator().manual_seed(seed)
    return OrderedDict((key, torch.randn(shape, generator=gen)) for key, shape in key_shapes)



def load_converter():
    """The converter script (tools/model_converters/vmamba2mmvmamba.py) as a module."""
    import importlib.util
    path = DATA.parents[1] / 'tools' / 'model_converters' / 'vmamba2mmvmamba.py'
    spec = importlib.util.spec_from_file_location('vmamba2mmvmamba', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class captured_log:  # noqa: N801  (used as a context manager)
    """Collect the messages that mmengine's current MMLogger emits inside a ``with`` block."""

    def __enter__(self) -> list:
        import logging

        from mmengine.logging import MMLogger
        self.records: list = []
        self.logger = MMLogger.get_current_instance()
        self.handler = logging.Handler(level=logging.DEBUG)
        self.handler.emit = self.records.append
        self.logger.addHandler(self.handler)
        return self.records

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self.handler)


def build_classifier(cfg: dict):
    """Build an mmpretrain model under mmpretrain's scope, whatever default scope is current.

    mmengine's ``Registry.build`` searches the registry of the current default scope; a test that
    ran before (e.g. a config test's ``init_default_scope('mmdet')``) would otherwise leave
    ``ImageClassifier`` unresolvable.
    """
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(cfg)
