"""Count a config's parameters and FLOPs the way the VMamba paper counts them (no data needed).

    python tools/analysis/get_flops.py configs/maskrcnn_vmamba_t.py --shape 1280 800
    python tools/analysis/get_flops.py configs/upernet_vmamba_t_ade20k.py --shape 512 2048
    python tools/analysis/get_flops.py configs/cls_vmamba_t_in1k.py --shape 224 224

Conventions (spec "FLOPs, as the paper counts them"): mmengine's ``FlopAnalyzer`` (jit trace,
fvcore rules: one multiply-add = one FLOP; convolutions, layer norms, pooling, linear layers
and upsampling counted; GELU, SiLU, neg, exp, flip, add, mul and the cross-scan/merge count
zero), on the model's ``tensor`` mode with a single random input ``(1, 3, H, W)``:

- mmdet: backbone, FPN, RPN proposals, RoI heads on the proposals, mask head on the first 100
  RoIs (mmdet's ``_forward``, with one image's meta data);
- mmseg: backbone and decode head, no auxiliary head;
- mmpretrain: backbone, neck and head.

``Linear2d`` layers (1x1 maps over the channels) run as GEMMs and are counted in the ``conv``
bucket, as the paper's channel-first model runs them as 1x1 convolutions.

Each selective scan is one traced node (the compiled op ``mmvmamba::selective_scan_fwd``; the
count switches the backbone to ``scan_backend='compiled'``, ``core_backend='reference'``) and
counts ``9 * B * L * Dk * N + B * L * Dk`` (A. Gu's count; the last term is the D skip), with
u ``(B, Dk, L)`` and A ``(Dk, N)``. Parameters are those of the whole model as built (the
auxiliary head included).
"""
from __future__ import annotations

import argparse
import json
from functools import partial

import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.config import Config, DictAction
from mmengine.registry import MODELS, init_default_scope

#: Traced name of the selective-scan op that carries the scan's FLOPs.
SCAN_OP = 'mmvmamba::selective_scan_fwd'
#: Ops the paper counts as zero, silenced explicitly (all other uncounted ops are reported).
ZERO_OPS = ('aten::gelu', 'aten::silu', 'aten::neg', 'aten::exp', 'aten::flip')


def scan_flop_jit(inputs: list, outputs: list) -> int:
    """FLOPs of one ``selective_scan_fwd`` node: ``9 * B * L * Dk * N`` plus ``B * L * Dk``
    when D is given. Inputs in order: u ``(B, Dk, L)``, delta, A ``(Dk, N)``, B, C, D, ..."""
    u_shape = inputs[0].type().sizes()
    a_shape = inputs[2].type().sizes()
    if u_shape is None or a_shape is None or len(u_shape) != 3 or len(a_shape) != 2:
        raise ValueError(f'{SCAN_OP}: expected u (B, Dk, L) and A (Dk, N), got shapes '
                         f'{u_shape} and {a_shape}')
    batch, channels, length = u_shape
    state = a_shape[1]
    flops = 9 * batch * length * channels * state
    has_d = len(inputs) > 5 and inputs[5].type().kind() != 'NoneType'
    if has_d:
        flops += batch * length * channels
    return flops


def _set_backbone_backends(model_cfg: Config, scan_backend: str, core_backend: str) -> None:
    """Make every VMamba backbone in the model config trace its scan as one node, no weights."""
    backbone = model_cfg.get('backbone')
    if backbone is None:
        raise ValueError('the config has no model.backbone: this tool counts VMamba models')
    if backbone.get('type') in ('VMamba', 'MM_VSSM', 'mmvmamba.VMamba'):
        backbone['scan_backend'] = scan_backend
        backbone['core_backend'] = core_backend
    backbone['init_cfg'] = None  # counting needs no checkpoint


def _data_samples(scope: str, height: int, width: int):
    """The meta data the ``tensor`` mode of a detector/segmentor reads, or None."""
    meta = dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width),
                batch_input_shape=(height, width), scale_factor=(1.0, 1.0))
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        return [DetDataSample(metainfo=meta)]
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample
        return [SegDataSample(metainfo=meta)]
    return None


def _count_linear_2d_as_conv(model: torch.nn.Module, by_module: dict, by_operator: dict) -> None:
    """Move the FLOPs of every ``Linear2d`` from the ``linear`` bucket to ``conv``.

    ``Linear2d`` runs as a GEMM (``aten::linear``) but the paper's channel-first model runs it as
    a 1x1 convolution and counts it so; the FLOPs are the same, only the bucket differs.
    """
    from mmvmamba.models.layers import Linear2d

    moved = sum(by_module.get(name, {}).get('linear', 0)
                for name, module in model.named_modules() if isinstance(module, Linear2d))
    if moved:
        by_operator['linear'] -= moved
        by_operator['conv'] = by_operator.get('conv', 0) + moved
        if by_operator['linear'] == 0:
            del by_operator['linear']


def count(cfg: Config, height: int, width: int, scan_backend: str = 'compiled',
          core_backend: str = 'reference') -> dict:
    """Parameters and FLOPs of ``cfg.model`` on a ``(1, 3, height, width)`` random input.

    Args:
        cfg: A loaded config (``custom_imports`` done).
        height: Input height H.
        width: Input width W.
        scan_backend: Selective-scan backend for the count ('compiled' traces one node).
        core_backend: SS2D core backend ('reference' traces the projections as convs).

    Returns:
        dict with ``params``, ``flops``, ``by_operator`` (name -> FLOPs), ``unsupported``
        (op -> occurrences of ops that were traced but not counted), ``scope`` and ``shape``.
    """
    scope = cfg.get('default_scope', 'mmengine')
    init_default_scope(scope)
    model_cfg = cfg.model.copy()
    _set_backbone_backends(model_cfg, scan_backend, core_backend)
    # Seeded: a detector's proposal count (hence its RoI-head FLOPs) depends on the weights.
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.eval()
    params = sum(p.numel() for p in model.parameters())

    inputs = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    model.forward = partial(model.forward, data_samples=_data_samples(scope, height, width),
                            mode='tensor')
    with torch.no_grad():
        analyzer = FlopAnalyzer(model, (inputs, ))
        analyzer.set_op_handle(SCAN_OP, scan_flop_jit, **{op: None for op in ZERO_OPS})
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        flops = analyzer.total()
        by_operator = dict(analyzer.by_operator())
        by_module = analyzer.by_module_and_operator()
        unsupported = dict(analyzer.unsupported_ops())
    _count_linear_2d_as_conv(model, by_module, by_operator)
    scan_name = SCAN_OP.split('::', 1)[1]
    if by_operator.get(scan_name, 0) == 0 and 'VMamba' in str(model_cfg.backbone.get('type')):
        raise RuntimeError(f'no {SCAN_OP} node was traced: the scan was not counted (is the '
                           f'compiled op built? `python setup.py build_ext --inplace`)')
    return dict(params=params, flops=flops, by_operator=by_operator, unsupported=unsupported,
                scope=scope, shape=(1, 3, height, width))


def format_report(config: str, result: dict) -> str:
    """A small table: parameters, total FLOPs and FLOPs per operator."""
    lines = [f'config: {config}',
             f'scope: {result["scope"]}, mode: tensor, input: {tuple(result["shape"])}',
             f'params: {result["params"] / 1e6:.2f} M ({result["params"]:,})',
             f'flops:  {result["flops"] / 1e9:.2f} G ({result["flops"]:,})',
             'per operator (G):']
    for name, value in sorted(result['by_operator'].items(), key=lambda kv: -kv[1]):
        lines.append(f'  {name:<32s} {value / 1e9:.9f}')
    if result['unsupported']:
        ops = ', '.join(f'{k} x{v}' for k, v in sorted(result['unsupported'].items()))
        lines.append(f'not counted (zero by convention): {ops}')
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Parameters and FLOPs of a VMamba config')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), required=True,
                        help='input height and width')
    parser.add_argument('--scan-backend', default='compiled',
                        help="selective-scan backend while tracing (default 'compiled')")
    parser.add_argument('--json', help='also write the result to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. model.backbone.arch=small')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    height, width = args.shape
    result = count(cfg, height, width, scan_backend=args.scan_backend)
    print(format_report(args.config, result))  # noqa: T201  (CLI output)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(config=args.config, **result), f, indent=1)
    return result


if __name__ == '__main__':
    main()
