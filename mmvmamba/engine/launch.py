"""What ``tools/train.py`` and ``tools/test.py`` do to a config before they build the Runner.

Kept in the package (not in the scripts) so both tools share one spelling and the tests can
call it. Nothing here is specific to mmdet, mmseg or mmpretrain: the config's ``default_scope``
decides which library builds the model.
"""
from __future__ import annotations

import gc
import logging
import os
import os.path as osp

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import print_log


def default_work_dir(config_path: str) -> str:
    """``./work_dirs/<config file name without .py>``, mmdet's and mmseg's convention."""
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def apply_common(cfg: Config, config_path: str, work_dir: str | None, launcher: str) -> Config:
    """Set ``launcher`` and ``work_dir`` (command line > config > default), in place.

    Args:
        cfg: The loaded config (``--cfg-options`` already merged).
        config_path: Path of the config file, for the default work dir.
        work_dir: ``--work-dir`` or None.
        launcher: ``none``, ``pytorch``, ``slurm`` or ``mpi``.

    Returns:
        ``cfg``.
    """
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = default_work_dir(config_path)
    return cfg


def apply_amp(cfg: Config, device: str | None = None) -> Config:
    """Switch the config's optimizer wrapper to mixed precision with dynamic loss scaling.

    Args:
        cfg: The config, changed in place.
        device: The device training will use; None asks mmengine (``get_device()``).

    Raises:
        ValueError: The config has no ``optim_wrapper`` (nothing to train), or no accelerator is
            visible (mmengine's AmpOptimWrapper supports CUDA/NPU/MLU/MUSA, not CPU).
    """
    from mmengine.device import get_device
    if (device or get_device()) == 'cpu':
        raise ValueError('--amp needs an accelerator (CUDA, NPU, MLU or MUSA): mmengine\'s '
                         'AmpOptimWrapper does not train on CPU; drop --amp to train in fp32')
    wrapper = cfg.get('optim_wrapper', None)
    if wrapper is None:
        raise ValueError('--amp needs a config with an optim_wrapper (a training config)')
    wrapper_type = wrapper.get('type', 'OptimWrapper')
    if wrapper_type == 'AmpOptimWrapper':
        print_log('the config already uses AmpOptimWrapper; --amp changes nothing',
                  logger='current')
        return cfg
    if wrapper_type != 'OptimWrapper':
        raise ValueError(f'--amp works with OptimWrapper configs; this one uses {wrapper_type}: '
                         'set optim_wrapper.type=AmpOptimWrapper in the config instead')
    wrapper.type = 'AmpOptimWrapper'
    wrapper.setdefault('loss_scale', 'dynamic')
    return cfg


def apply_resume(cfg: Config, resume: str | None) -> Config:
    """Apply ``--resume``: ``'auto'`` = latest checkpoint in the work dir, else a file path.

    Raises:
        FileNotFoundError: ``resume`` names a file that does not exist.
    """
    if resume is None:
        return cfg
    cfg.resume = True
    if resume == 'auto':
        cfg.load_from = None
    else:
        if '://' not in resume and not osp.isfile(resume):
            raise FileNotFoundError(f'--resume {resume}: no such checkpoint file')
        cfg.load_from = resume
    return cfg


def apply_tta(cfg: Config) -> Config:
    """Test with the config's test-time augmentation (``tta_model`` + ``tta_pipeline``).

    Raises:
        ValueError: The config defines no ``tta_model`` or ``tta_pipeline``.
    """
    missing = [k for k in ('tta_model', 'tta_pipeline') if cfg.get(k, None) is None]
    if missing:
        raise ValueError(f'--tta needs {" and ".join(missing)} in the config (mmseg\'s dataset '
                         'bases define both; add them for other configs)')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model
    return cfg


def setup_cpu_distributed(cfg: Config) -> bool:
    """Make a ``--launcher pytorch`` run work on CPU-only machines (gloo, no device ids).

    mmengine's launcher calls ``torch.cuda.set_device`` and its DDP wrapper passes
    ``device_ids=[LOCAL_RANK]``, both of which fail without CUDA. When no CUDA device is visible
    this initialises the process group with the gloo backend itself (mmengine then skips its
    own initialisation) and asks for a DDP wrapper without device ids. SyncBN norm configs
    become BN (PyTorch's SyncBatchNorm runs on CUDA only), with a warning.

    Returns:
        True if it set up CPU distributed training, False if nothing was needed.
    """
    if cfg.launcher != 'pytorch' or torch.cuda.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    replaced = _sync_bn_to_bn(cfg.model)
    if replaced:
        print_log(f'no CUDA device: {replaced} SyncBN norm config(s) of the model use BN instead '
                  '(SyncBatchNorm needs CUDA; batch statistics are per rank)',
                  logger='current', level=logging.WARNING)
    wrapper = cfg.get('model_wrapper_cfg', None) or dict(type='MMDistributedDataParallel')
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    print_log(f'no CUDA device: rank {dist.get_rank()}/{dist.get_world_size()} uses gloo on CPU',
              logger='current')
    return True


def close_process_group() -> None:
    """Destroy the process groups, if set up, and free them before the process exits.

    ``destroy_process_group`` only unregisters them: the Runner's reference cycles (its DDP
    wrapper's reducer holds the group) kept a gloo group and its threads alive into the
    interpreter's teardown, where a worker thread freeing a tensor could not take the GIL and
    the rank aborted ("terminate called without an active exception"; 1-2 of 30 runs of the
    two-process ``tools/dist_test.sh`` test, core dump: a ``ProcessGroupGloo::runLoop`` thread
    in ``PyThread_exit_thread`` during ``Py_FinalizeEx``). A garbage collection right after
    frees the groups, joining their threads, while the interpreter is whole.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        gc.collect()


def _sync_bn_to_bn(node) -> int:
    """Turn every ``type='SyncBN'`` dict inside ``node`` (a config subtree) into ``'BN'``.

    Returns:
        How many were changed.
    """
    count = 0
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _sync_bn_to_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _sync_bn_to_bn(value)
    return count


def local_rank_to_env(local_rank: int | None) -> None:
    """Export ``--local_rank`` (old ``torch.distributed.launch``) as ``LOCAL_RANK``."""
    if local_rank is not None and 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(local_rank)


def load_config(config_path: str, cfg_options: dict | None, work_dir: str | None,
                launcher: str) -> Config:
    """Read a config, merge ``--cfg-options``, then :func:`apply_common`."""
    cfg = Config.fromfile(config_path)
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    return apply_common(cfg, config_path, work_dir, launcher)


def build_runner(cfg: Config):
    """Set up CPU distributed runs and the toy data if needed, then build the config's Runner."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from mmvmamba.datasets.toy import ensure_toy_data_from_cfg

    setup_cpu_distributed(cfg)
    ensure_toy_data_from_cfg(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
