"""Save and restore the random-number state, so ``--resume`` continues exactly.

mmengine's checkpoints hold the model, optimizer, schedulers and counters but not the state of
Python's ``random``, NumPy's global generator or torch's (CPU and CUDA) generators; a resumed run
therefore draws different DropPath masks, RoI samples and augmentations than the run it
continues. :class:`RNGStateHook` stores those states in every checkpoint and puts them back
when training starts from a resumed checkpoint. It also makes validation neutral: the states
are set back after each validation epoch, so a run that validates between two training epochs
draws the same numbers as one that resumes between them.

Exactness holds for epoch-based loops whose data are loaded in the main process
(``num_workers=0``) or by non-persistent workers (mmengine re-seeds those from the seed, the
rank and the worker id each epoch). Persistent workers keep their own generators, which no
checkpoint can capture; iteration-based loops re-run the pipeline over the skipped batches on
resume. The hook logs a warning in those cases.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.registry import HOOKS

#: Key under which the states live in an mmengine checkpoint.
RNG_STATE_KEY = 'rng_state'


def get_rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators.

    Everything is a tensor, int, float, tuple, list, str or None, so the checkpoint stays
    loadable with ``torch.load(weights_only=True)`` without further allowlisting.

    Returns:
        A dict with keys ``python``, ``numpy``, ``torch`` and ``cuda`` (a list, empty without CUDA).
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return dict(
        python=random.getstate(),
        numpy=dict(name=str(name), keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                   has_gauss=int(has_gauss), cached_gaussian=float(cached)),
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from a dict made by :func:`get_rng_state`.

    The state's tensors may sit on any device: mmengine's resume loads checkpoints onto the
    training device, and the generators take CPU byte tensors only.

    Raises:
        RuntimeError: The state holds CUDA generator states for a different number of devices.
    """
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    npy = state['numpy']
    np.random.set_state((npy['name'], npy['keys'].cpu().numpy().astype(np.uint32), npy['pos'],
                         npy['has_gauss'], npy['cached_gaussian']))
    torch.set_rng_state(state['torch'].cpu())
    cuda = state.get('cuda') or []
    if cuda and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            raise RuntimeError(
                f'the checkpoint holds CUDA generator states for {len(cuda)} devices but '
                f'{torch.cuda.device_count()} are visible; resume with the same devices (set '
                'CUDA_VISIBLE_DEVICES) or drop the RNGStateHook to resume non-exactly')
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Keep the random-number state in checkpoints and restore it on resume.

    Add it to a config with ``custom_hooks = [dict(type='RNGStateHook')]`` and
    ``custom_imports = dict(imports=['mmvmamba'], ...)`` (``import mmvmamba`` registers it).

    Args:
        neutral_validation: Set the generators back after every validation epoch, so that
            validating does not change the numbers training draws afterwards. Defaults to True.
    """

    priority = 'NORMAL'  # before CheckpointHook (VERY_LOW), so save_best sees restored states

    def __init__(self, neutral_validation: bool = True) -> None:
        self.neutral_validation = neutral_validation
        self._pending: dict[str, Any] | None = None
        self._before_val: dict[str, Any] | None = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store the current generator states in ``checkpoint['rng_state']``."""
        checkpoint[RNG_STATE_KEY] = get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Remember the states of a checkpoint being resumed; they are set in ``before_train``.

        Loading happens before mmengine may re-seed (when the checkpoint's seed differs from the
        config's), so the states are applied later, when training starts.
        """
        if not runner._resume:
            return  # load_from: weights only, a fresh run keeps its own seed
        state = checkpoint.get(RNG_STATE_KEY)
        if state is None:
            MMLogger.get_current_instance().warning(
                'the resumed checkpoint holds no random-number state (it was saved without '
                'RNGStateHook): training continues, but not bit-exactly like an uninterrupted run')
            return
        self._pending = state

    def before_train(self, runner) -> None:
        """Apply the resumed states, just before the first training epoch begins."""
        if self._pending is None:
            return
        logger = MMLogger.get_current_instance()
        loop = type(runner.train_loop).__name__
        if runner.iter > 0 and 'Iter' in loop:
            logger.warning(f'{loop} re-runs the data pipeline over the {runner.iter} skipped '
                           'batches after the states are restored: the resumed run is not '
                           'bit-exact when the pipeline draws random numbers')
        loader = getattr(runner.train_loop, 'dataloader', None)
        if getattr(loader, 'persistent_workers', False):
            logger.warning('persistent data-loader workers keep their own random states, which '
                           'checkpoints cannot hold: augmentations after resume differ from an '
                           'uninterrupted run (set persistent_workers=False or num_workers=0)')
        set_rng_state(self._pending)
        self._pending = None
        logger.info('restored the random-number state (python, numpy, torch) of the checkpoint')

    def before_val_epoch(self, runner) -> None:
        """Remember the states before validation."""
        if self.neutral_validation:
            self._before_val = get_rng_state()

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        """Set the states back to what they were before validation."""
        if self.neutral_validation and self._before_val is not None:
            set_rng_state(self._before_val)
            self._before_val = None
