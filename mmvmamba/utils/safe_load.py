"""How mmvmamba reads checkpoint files: always through torch's safe (``weights_only``) unpickler.

Since torch 2.6 ``torch.load`` refuses pickled Python objects by default, which is what keeps a
downloaded checkpoint from running code. mmvmamba never switches that off globally
(``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``) and never passes a blanket ``weights_only=False``. It tells
two kinds of files apart:

(a) **Your own Runner checkpoints** (``--resume``, ``load_from``, ``tools/test.py``): mmengine saves
    its message hub (``HistoryBuffer`` objects holding numpy arrays) and numpy scalars next to the
    weights, which the safe unpickler refuses. :func:`install_runner_checkpoint_loader` (called by
    ``import mmvmamba``) replaces mmengine's loader of local files by one that still loads with
    ``weights_only=True`` but allows exactly those data types (:data:`RUNNER_SAFE_GLOBALS`) for the
    duration of that one load. Nothing that can call a function or import a module is allowed.
(b) **Third-party weights** (released VMamba checkpoints, the backbone's
    ``init_cfg=dict(type='Pretrained')``, ``tools/model_converters``): :func:`load_third_party`
    loads with ``weights_only=True`` and torch's own allowlist only (tensors, containers,
    numbers, strings). A file holding any other pickled object is refused with an
    :class:`UnsafeCheckpointError` that says what it holds and what to do. The one documented
    way to read such a file (for example a released ImageNet checkpoint that embeds its yacs
    training config) is ``tools/model_converters/vmamba2mmvmamba.py SRC DST
    --unsafe-allow-pickle``, for files you trust: it writes a tensors-only copy that loads
    safely from then on.
"""
from __future__ import annotations

import os
import os.path as osp
import pickle
from typing import Any, Callable

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, MMLogger


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file holds pickled objects that the safe unpickler does not allow."""


def _numpy_data_types() -> list[Any]:
    """The numpy globals a pickled ndarray or numpy scalar needs, nothing callable beyond them."""
    core = np._core if hasattr(np, '_core') else np.core  # numpy 2.x / 1.x
    types: list[Any] = [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype]
    # Concrete dtype classes (numpy >= 1.25 pickles dtypes as instances of these).
    types += [type(np.dtype(name)) for name in (
        'bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64',
        'float16', 'float32', 'float64')]
    return types


#: The globals that mmengine's Runner checkpoints need beyond torch's default allowlist.
#: ``getattr`` is there because a pickled ``HistoryBuffer`` refers to its statistics methods as
#: ``getattr(HistoryBuffer, 'min')``. It only looks attributes up: the safe unpickler still calls
#: nothing that is not itself on the allowlist, so what it returns can never be invoked.
RUNNER_SAFE_GLOBALS: list[Any] = [HistoryBuffer, getattr, *_numpy_data_types()]


def _describe_refusal(path: str, err: Exception) -> str:
    """List the globals a refused file asks for, for the error message."""
    try:
        wanted = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as scan_err:  # an unreadable file: say so instead of guessing
        wanted = [f'<could not list them: {scan_err}>']
    return ', '.join(wanted) if wanted else str(err)


def load_third_party(path: str,
                     map_location: str | torch.device | Callable | None = 'cpu',
                     allow_pickle: bool = False) -> Any:
    """Load a checkpoint someone else made (rule (b) of the module docstring).

    Args:
        path: Local file path.
        map_location: Passed to :func:`torch.load`. Defaults to ``'cpu'``.
        allow_pickle: Unpickle arbitrary Python objects (``weights_only=False``). Only for a file
            you trust: unpickling can run code. Logged as a warning every time.

    Returns:
        Whatever the file holds (usually a dict of tensors or of such dicts).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        UnsafeCheckpointError: the file holds pickled objects and ``allow_pickle`` is False.
    """
    path = osp.expanduser(os.fspath(path))
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path!r}')
    if allow_pickle:
        MMLogger.get_current_instance().warning(
            f'loading {path} with weights_only=False: any code pickled in it runs now. '
            'Do this only for files you trust.')
        return torch.load(path, map_location=map_location, weights_only=False)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f'{path} holds pickled Python objects that a weights-only load refuses '
            f'({_describe_refusal(path, err)}). Unpickling them could run code. If you trust the '
            'file, convert it once into a tensors-only checkpoint with\n'
            f'    python tools/model_converters/vmamba2mmvmamba.py {path} OUT.pth '
            '--unsafe-allow-pickle\nand load OUT.pth instead.') from err


def load_runner_checkpoint(filename: str,
                           map_location: str | torch.device | Callable | None = None) -> Any:
    """Load a local mmengine Runner checkpoint (rule (a) of the module docstring).

    Same signature as mmengine's ``CheckpointLoader`` local loader, which this replaces.

    Raises:
        FileNotFoundError: ``filename`` is not a file.
        UnsafeCheckpointError: the file holds objects outside :data:`RUNNER_SAFE_GLOBALS`.
    """
    filename = osp.expanduser(os.fspath(filename))
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename!r}')
    try:
        with torch.serialization.safe_globals(RUNNER_SAFE_GLOBALS):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f'{filename} holds pickled objects beyond the tensors, numpy arrays and mmengine '
            f'history buffers of a Runner checkpoint ({_describe_refusal(filename, err)}); '
            'mmvmamba refuses to unpickle them because that could run code. If the file comes '
            'from someone else and you trust it, convert it once with '
            'tools/model_converters/vmamba2mmvmamba.py SRC DST --unsafe-allow-pickle (add '
            '--to model to keep a whole detector or segmentor, e.g. for tools/test.py).') from err


def install_runner_checkpoint_loader() -> None:
    """Make mmengine load local checkpoint files with :func:`load_runner_checkpoint`."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', force=True)(load_runner_checkpoint)
