"""Data helpers: the synthetic toy data set used by ``configs/toy`` and the tests."""
from .toy import (
                  TOY_DET_CLASSES,
                  TOY_DET_PALETTE,
                  TOY_SEG_CLASSES,
                  TOY_SEG_PALETTE,
                  ensure_toy_data,
                  ensure_toy_data_from_cfg,
                  make_toy_data,
                  toy_data_spec,
)

__all__ = [
    'TOY_DET_CLASSES', 'TOY_DET_PALETTE', 'TOY_SEG_CLASSES', 'TOY_SEG_PALETTE', 'make_toy_data',
    'ensure_toy_data', 'ensure_toy_data_from_cfg', 'toy_data_spec'
]
