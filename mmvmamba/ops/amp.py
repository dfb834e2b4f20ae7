"""Autocast switched off for a few ops, at a fraction of ``torch.autocast``'s host cost."""
from __future__ import annotations

import torch

__all__ = ['autocast_off']


class autocast_off:  # noqa: N801 (used like torch.autocast)
    """Run a block with autocast disabled for ``device_type`` if it is on, restoring it after.

    Equivalent to ``torch.autocast(device_type, enabled=False)`` inside an autocast region,
    but it only flips the thread's autocast flag (two torch calls; ``torch.autocast`` makes
    about a dozen, and the eager step, bound by host time, enters it once per block and pass).
    Autocast's cast cache and nesting are left alone: the outer region still owns them. Not for
    code that ``torch.compile`` traces (use ``torch.autocast`` there).

    Args:
        device_type (str): ``'cuda'``, ``'cpu'``, ...
    """

    __slots__ = ('device_type', 'was_enabled')

    def __init__(self, device_type: str) -> None:
        self.device_type = device_type
        self.was_enabled = False

    def __enter__(self) -> autocast_off:
        self.was_enabled = torch.is_autocast_enabled(self.device_type)
        if self.was_enabled:
            torch.set_autocast_enabled(self.device_type, False)
        return self

    def __exit__(self, *exc_info) -> bool:
        if self.was_enabled:
            torch.set_autocast_enabled(self.device_type, True)
        return False
