"""Shared fixtures of the model tests: the reference fixtures under tests/data."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from model_testdata import FIXTURES, fixture_arch


@pytest.fixture(scope='session')
def small_arch() -> dict:
    return fixture_arch()


@pytest.fixture(scope='session')
def fixture_state() -> OrderedDict:
    """Reference-format ``Backbone_VSSM`` state of the small model, in fp32."""
    state = torch.load(FIXTURES / 'fixture_small_state.pt', weights_only=True)
    return OrderedDict((k, v.float()) for k, v in state.items())


@pytest.fixture(scope='session')
def fixture_outputs() -> dict:
    return torch.load(FIXTURES / 'fixture_outputs.pt', weights_only=True)


@pytest.fixture(scope='session')
def fixture_inputs() -> dict:
    return {
        'even': torch.load(FIXTURES / 'fixture_input.pt', weights_only=True),
        'odd': torch.load(FIXTURES / 'fixture_input_odd.pt', weights_only=True),
    }
