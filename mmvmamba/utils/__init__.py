"""Utilities: safe checkpoint loading and (in checkpoint.py) reference-format key mapping."""
from .safe_load import (
                        RUNNER_SAFE_GLOBALS,
                        UnsafeCheckpointError,
                        install_runner_checkpoint_loader,
                        load_runner_checkpoint,
                        load_third_party,
)

__all__ = ['RUNNER_SAFE_GLOBALS', 'UnsafeCheckpointError', 'install_runner_checkpoint_loader',
           'load_runner_checkpoint', 'load_third_party']
