"""VMamba checkpoints: recognise the released formats, convert them, load them strictly.

mmvmamba's module names are the reference's (``patch_embed.{0,2,5,7}``, ``layers.i.blocks.j``,
``layers.i.downsample.{1,3}``, ``outnorm{i}``, classifier ``classifier.{norm,head}``), so
conversion is pure key renaming plus reshaping old 4-D 1x1 weights, and it is idempotent: a
converted state passes through unchanged.

Recognised checkpoints (a dict as ``torch.load`` returns it):

- ImageNet (reference ``classification/``): weights under ``model`` (and ``model_ema``),
  keys of the classifier ``VSSM`` (no ``outnorm*``; ``classifier.*``).
- mmdet / mmseg: ``state_dict`` with the backbone under ``backbone.`` (including ``outnorm*``).
- mmpretrain ``ImageClassifier`` (backbone ``VMamba(out_indices=(last,))``, GAP neck,
  ``LinearClsHead``): ``state_dict`` with ``backbone.*`` and ``head.fc.*``; the last out norm
  plays ``classifier.norm``.
- Files written by :func:`to_backbone_checkpoint` / :func:`to_mmpretrain_checkpoint` (they carry
  ``meta['mmvmamba']``), and bare state dicts of either reference model.
- Older key names (``patch_embed.proj``/``patch_embed.norm``, ``ln_1``, ``self_attention``, a
  top-level ``norm``/``head``) and 4-D ``(out, in, 1, 1)`` 1x1 weights, renamed/reshaped the way
  the reference's own loader does.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from mmengine.logging import MMLogger
from torch import nn

from .safe_load import load_third_party

#: Key of the meta entry that mmvmamba's converter writes.
META_KEY = 'mmvmamba'
CLASSIFIER_PREFIX = 'classifier.'
BACKBONE_PREFIXES = ('patch_embed.', 'layers.', 'outnorm')

# Older names, as the reference's ``VSSM._load_from_state_dict`` renames them.
_OLD_TOP_LEVEL = (('patch_embed.proj.', 'patch_embed.0.'), ('patch_embed.norm.', 'patch_embed.2.'),
                  ('norm.', 'classifier.norm.'), ('head.', 'classifier.head.'))
_OLD_BLOCK_NAMES = re.compile(r'^(layers\.\d+\.blocks\.\d+\.)(ln_1|self_attention)\.')
_NEW_BLOCK_NAMES = {'ln_1': 'norm', 'self_attention': 'op'}
# 1x1 "linears" stored as 2-D (out, in); older files hold 4-D (out, in, 1, 1).
_POINTWISE_WEIGHT = re.compile(
    r'^layers\.\d+\.blocks\.\d+\.(op\.in_proj|op\.out_proj|mlp\.fc1|mlp\.fc2)\.weight$')
_OUTNORM = re.compile(r'^outnorm(\d+)\.')
_STAGE = re.compile(r'^layers\.(\d+)\.')
# Truncate long key lists in error messages after this many entries.
_MAX_LISTED = 30


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the model (missing, unexpected or mis-shaped keys)."""


@dataclass
class ReferenceState:
    """A checkpoint's weights in the reference key layout.

    Attributes:
        state (OrderedDict[str, Tensor]): Backbone keys (``patch_embed.*``, ``layers.*``,
            ``outnorm*``) and, for a classifier, ``classifier.norm.*`` / ``classifier.head.*``.
        source (str): What it was recognised as, for messages.
        from_classifier (bool): It comes from a classifier, which has no backbone out norms
            (they start fresh when it loads into a backbone).
    """

    state: OrderedDict
    source: str
    from_classifier: bool

    def split(self) -> tuple[OrderedDict, OrderedDict]:
        """``(backbone, classifier)`` parts of :attr:`state`, key order kept."""
        backbone, classifier = OrderedDict(), OrderedDict()
        for key, value in self.state.items():
            (classifier if key.startswith(CLASSIFIER_PREFIX) else backbone)[key] = value
        return backbone, classifier


def _fmt_keys(keys: list[str]) -> str:
    shown = ', '.join(keys[:_MAX_LISTED])
    more = len(keys) - _MAX_LISTED
    return f'[{shown}{f", ... and {more} more" if more > 0 else ""}]'


def rename_reference_keys(state: Mapping[str, torch.Tensor]) -> OrderedDict:
    """Map older reference key names and 4-D 1x1 weights to the current layout (idempotent).

    Args:
        state (Mapping[str, Tensor]): A state dict in the reference layout, any vintage.

    Returns:
        OrderedDict: The same tensors under current names, 1x1 weights as ``(out, in)``.
    """
    out = OrderedDict()
    for key, value in state.items():
        for old, new in _OLD_TOP_LEVEL:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        key = _OLD_BLOCK_NAMES.sub(lambda m: m.group(1) + _NEW_BLOCK_NAMES[m.group(2)] + '.', key)
        if _POINTWISE_WEIGHT.match(key) and value.dim() == 4:
            if value.shape[2:] != (1, 1):
                raise CheckpointMismatchError(
                    f'{key}: expected a 1x1 weight (out, in) or (out, in, 1, 1), got '
                    f'{tuple(value.shape)}')
            value = value.flatten(1)
        if key in out:
            raise CheckpointMismatchError(f'Two checkpoint keys map to {key!r} (old and new '
                                          f'names of the same weight are both present)')
        out[key] = value
    unknown = [k for k in out if not k.startswith(BACKBONE_PREFIXES + (CLASSIFIER_PREFIX, ))]
    if unknown:
        raise CheckpointMismatchError(
            f'Keys that belong to no VMamba module: {_fmt_keys(unknown)}. Is this a VMamba '
            f'checkpoint? (Expected patch_embed.*, layers.*, outnorm*, classifier.*.)')
    return out


def _num_stages(state: Mapping[str, Any]) -> int:
    stages = {int(m.group(1)) for m in map(_STAGE.match, state) if m}
    if not stages:
        raise CheckpointMismatchError('The checkpoint has no layers.* keys: not a VMamba '
                                      'checkpoint')
    return max(stages) + 1


def _strip_prefix(state: Mapping[str, Any], prefix: str) -> OrderedDict:
    return OrderedDict((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix))


def _without_ddp_prefix(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """``state`` without the ``module.`` prefix a DDP-wrapped model saves, if every key has it."""
    if state and all(k.startswith('module.') for k in state):
        return _strip_prefix(state, 'module.')
    return state


def _from_mmpretrain(backbone: OrderedDict, head: OrderedDict) -> OrderedDict:
    """mmpretrain ``ImageClassifier`` keys -> reference classifier keys."""
    last = _num_stages(backbone) - 1
    norm_prefix = f'outnorm{last}.'
    state = OrderedDict((k, v) for k, v in backbone.items() if not k.startswith(norm_prefix))
    norm = _strip_prefix(backbone, norm_prefix)
    if not norm:
        raise CheckpointMismatchError(
            f'mmpretrain checkpoint without backbone.{norm_prefix}*: its classifier needs '
            f'VMamba(out_indices=({last},)) so that {norm_prefix[:-1]} is the final norm')
    for name, value in norm.items():
        state[f'{CLASSIFIER_PREFIX}norm.{name}'] = value
    for name, value in head.items():
        state[f'{CLASSIFIER_PREFIX}head.{name}'] = value
    return state


def extract_reference_state(checkpoint: Mapping[str, Any],
                            use_ema: bool = False,
                            prefix: str | None = None) -> ReferenceState:
    """Recognise a loaded checkpoint and return its weights in the reference layout.

    Args:
        checkpoint (Mapping): What ``torch.load`` returned.
        use_ema (bool): Take ``model_ema`` of an ImageNet checkpoint instead of ``model``.
        prefix (str, optional): Take only keys under this prefix of the state dict (stripped),
            e.g. ``'backbone.'``; None recognises the layout itself.

    Returns:
        ReferenceState: The weights, renamed, and where they came from.
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f'A checkpoint must be a dict, got {type(checkpoint).__name__}')
    meta = checkpoint.get('meta')
    layout = meta.get(META_KEY, {}).get('layout') if isinstance(meta, Mapping) else None
    if 'model' in checkpoint or 'model_ema' in checkpoint:
        name = 'model_ema' if use_ema else 'model'
        if name not in checkpoint:
            hint = (' (it holds only model_ema: pass use_ema=True / --ema)'
                    if name == 'model' else '')
            raise KeyError(f'ImageNet checkpoint without {name!r}{hint}; top-level keys: '
                           f'{sorted(checkpoint)}')
        state, source, from_classifier = checkpoint[name], f'ImageNet checkpoint [{name}]', True
    elif use_ema:
        raise KeyError(f'use_ema=True needs an ImageNet checkpoint with model_ema; this one has '
                       f'top-level keys {sorted(checkpoint)[:_MAX_LISTED]}')
    elif 'state_dict' in checkpoint:
        state, source, from_classifier = checkpoint['state_dict'], 'state_dict', False
    elif checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state, source, from_classifier = checkpoint, 'bare state dict', False
    else:
        raise KeyError(f'Unrecognised checkpoint: top-level keys {sorted(checkpoint)[:20]}; '
                       f'expected model/model_ema (ImageNet), state_dict (mmdet/mmseg/'
                       f'mmpretrain/mmvmamba) or a bare state dict')
    if not isinstance(state, Mapping):
        raise TypeError(f'{source} is a {type(state).__name__}, not a state dict')
    state = _without_ddp_prefix(state)

    if prefix is not None:
        state = _strip_prefix(state, prefix)
        if not state:
            raise KeyError(f'No key of the checkpoint starts with prefix {prefix!r}')
        source += f' [prefix {prefix!r}]'
    elif any(k.startswith('backbone.') for k in state):
        backbone = _strip_prefix(state, 'backbone.')
        head = _strip_prefix(state, 'head.fc.')
        if head:
            state = _from_mmpretrain(backbone, head)
            source, from_classifier = 'mmpretrain classifier', True
        else:
            others = len(state) - len(backbone)
            state = backbone
            source = f'mmdet/mmseg {source} (backbone.*; {others} other keys ignored)'
    if layout == 'backbone':
        from_classifier = bool(meta[META_KEY].get('from_classifier', False))
        source = 'mmvmamba backbone checkpoint'
    state = rename_reference_keys(state)
    if any(k.startswith(CLASSIFIER_PREFIX) for k in state):
        from_classifier = True
    return ReferenceState(state, source, from_classifier)


def to_backbone_checkpoint(ref: ReferenceState) -> dict:
    """The backbone-only file mmdet/mmseg configs load (classifier keys dropped).

    Returns:
        dict: ``{'state_dict': backbone keys, 'meta': {'mmvmamba': {...}}}``; tensors only.
    """
    backbone, _ = ref.split()
    return dict(state_dict=backbone,
                meta={META_KEY: dict(layout='backbone', from_classifier=ref.from_classifier)})


def to_mmpretrain_checkpoint(ref: ReferenceState) -> dict:
    """The file an mmpretrain ``ImageClassifier`` (VMamba(out_indices=(last,)) + GAP +
    LinearClsHead) loads: ``classifier.norm`` -> ``backbone.outnorm{last}``,
    ``classifier.head`` -> ``head.fc``.
    """
    backbone, classifier = ref.split()
    if not classifier:
        raise CheckpointMismatchError(
            f'{ref.source} has no classifier (classifier.norm / classifier.head): an '
            f'mmpretrain classifier needs an ImageNet checkpoint')
    last = _num_stages(backbone) - 1
    state = OrderedDict((f'backbone.{k}', v) for k, v in backbone.items())
    for key, value in classifier.items():
        part, name = key[len(CLASSIFIER_PREFIX):].split('.', 1)
        new = f'backbone.outnorm{last}.{name}' if part == 'norm' else f'head.fc.{name}'
        state[new] = value
    return dict(state_dict=state, meta={META_KEY: dict(layout='mmpretrain')})


def _plain_data(value: Any) -> bool:
    """True for values ``torch.load(weights_only=True)`` reads without an allowlist."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain_data(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_data(v) for k, v in value.items())
    return False


def to_whole_model_checkpoint(checkpoint: Mapping[str, Any]) -> dict:
    """A whole mmdet/mmseg model (backbone, neck, heads) as a tensors-only file for tools/test.py.

    The ``backbone.*`` keys are renamed as for a backbone checkpoint (older names, 4-D 1x1
    weights); every other key of the state dict is kept as it is. ``meta['dataset_meta']``
    (class names, palette) is kept when it is plain data; the optimizer, message hub, pickled
    configs and any other Runner state are dropped.

    Args:
        checkpoint (Mapping): What ``torch.load`` returned for a detector's or segmentor's file.

    Returns:
        dict: ``{'state_dict': ..., 'meta': {'mmvmamba': {'layout': 'model'}, ...}}``.

    Raises:
        CheckpointMismatchError: No ``state_dict`` with ``backbone.*`` keys beside other keys.
    """
    state = checkpoint.get('state_dict') if isinstance(checkpoint, Mapping) else None
    state = _without_ddp_prefix(state) if isinstance(state, Mapping) else {}
    backbone = _strip_prefix(state, 'backbone.')
    if not backbone or len(backbone) == len(state):
        keys = sorted(checkpoint)[:_MAX_LISTED] if isinstance(checkpoint, Mapping) else []
        raise CheckpointMismatchError(
            'A whole-model conversion needs an mmdet/mmseg checkpoint: a state_dict with '
            f'backbone.* keys and the neck/head keys beside them; top-level keys: {keys}. For '
            'ImageNet checkpoints use --to backbone or --to mmpretrain.')
    out = OrderedDict((f'backbone.{k}', v) for k, v in rename_reference_keys(backbone).items())
    out.update((k, v) for k, v in state.items() if not k.startswith('backbone.'))
    meta = {META_KEY: dict(layout='model')}
    old_meta = checkpoint.get('meta')
    if isinstance(old_meta, Mapping) and _plain_data(old_meta.get('dataset_meta')):
        meta['dataset_meta'] = old_meta.get('dataset_meta')
    return dict(state_dict=out, meta=meta)


def load_reference_state(model: nn.Module, ref: ReferenceState, origin: str = '') -> None:
    """Load reference-layout weights into a :class:`~mmvmamba.models.VMamba`, strictly.

    Allowed, and logged: classifier keys are dropped; out norms absent from a classifier
    checkpoint start fresh; out norms of stages not in ``model.out_indices`` are dropped. Any
    other missing or unexpected key, or a shape mismatch, raises
    :class:`CheckpointMismatchError` listing them.

    Args:
        model (nn.Module): The backbone (its ``state_dict`` keys are the reference's).
        ref (ReferenceState): The weights.
        origin (str): Where they come from (a path), for messages.
    """
    logger = MMLogger.get_current_instance()
    where = f'{origin} ({ref.source})' if origin else ref.source
    backbone, classifier = ref.split()
    expected = model.state_dict()
    out_indices = set(getattr(model, 'out_indices', ()))
    unused_norms = [k for k in backbone if (m := _OUTNORM.match(k)) and int(m.group(1))
                    not in out_indices]
    for key in unused_norms:
        del backbone[key]
    missing = [k for k in expected if k not in backbone]
    fresh = []
    if ref.from_classifier:
        fresh = [k for k in missing if _OUTNORM.match(k)]
        if fresh and any(_OUTNORM.match(k) for k in backbone):
            fresh = []  # some out norms present, others absent: a broken file, not a classifier
        missing = [k for k in missing if k not in fresh]
    unexpected = [k for k in backbone if k not in expected]
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}'
                  for k, v in backbone.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or mismatched:
        parts = [f'{name} ({len(keys)}): {_fmt_keys(keys)}' for name, keys in
                 (('missing', missing), ('unexpected', unexpected),
                  ('shape mismatch', mismatched)) if keys]
        raise CheckpointMismatchError(
            f'Checkpoint {where} does not fit VMamba(dims={getattr(model, "dims", "?")}, '
            f'depths={getattr(model, "depths", "?")}): ' + '; '.join(parts) +
            '. Check the arch (tiny/small/base) matches the checkpoint.')
    result = model.load_state_dict(backbone, strict=False)
    if sorted(result.missing_keys) != sorted(fresh) or result.unexpected_keys:
        raise RuntimeError(f'Internal error: load_state_dict reported missing '
                           f'{result.missing_keys} / unexpected {result.unexpected_keys} after '
                           f'the key check passed; please report this')
    logger.info(f'VMamba: loaded {len(backbone)} tensors from {where}')
    if classifier:
        logger.info(f'VMamba: dropped the classifier keys of {where} (the backbone has no '
                    f'classifier): {_fmt_keys(list(classifier))}')
    if fresh:
        logger.info(f'VMamba: {where} comes from a classifier, which has no backbone out norms; '
                    f'they start fresh (weight 1, bias 0): {_fmt_keys(fresh)}')
    if unused_norms:
        logger.info(f'VMamba: dropped out norms of stages not in out_indices '
                    f'{tuple(sorted(out_indices))}: {_fmt_keys(unused_norms)}')


def load_checkpoint_file(path: str,
                         use_ema: bool = False,
                         prefix: str | None = None,
                         map_location: str = 'cpu',
                         allow_pickle: bool = False) -> ReferenceState:
    """Read a third-party checkpoint file safely and recognise it.

    Args:
        path (str): The file.
        use_ema (bool): Take ``model_ema`` of an ImageNet checkpoint.
        prefix (str, optional): See :func:`extract_reference_state`.
        map_location (str): Passed to ``torch.load``.
        allow_pickle (bool): Allow pickled non-tensor objects (only for trusted files; the
            converter's ``--unsafe-allow-pickle``).

    Returns:
        ReferenceState: The weights in the reference layout.
    """
    checkpoint = load_third_party(path, map_location=map_location, allow_pickle=allow_pickle)
    return extract_reference_state(checkpoint, use_ema=use_ema, prefix=prefix)


def load_pretrained_backbone(model: nn.Module,
                             path: str,
                             prefix: str | None = None,
                             use_ema: bool = False,
                             map_location: str = 'cpu') -> None:
    """Load a checkpoint file of any recognised format into a VMamba backbone, strictly.

    Args:
        model (nn.Module): The backbone.
        path (str): The checkpoint file.
        prefix (str, optional): See :func:`extract_reference_state`.
        use_ema (bool): Take ``model_ema`` of an ImageNet checkpoint.
        map_location (str): Passed to ``torch.load``.
    """
    ref = load_checkpoint_file(path, use_ema=use_ema, prefix=prefix, map_location=map_location)
    load_reference_state(model, ref, origin=path)
