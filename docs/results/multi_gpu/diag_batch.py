"""Diagnostic: toy Mask R-CNN losses on the same 8 images, batch 8 vs 2 x 4, per core backend."""
import importlib.util
import json
import os
import sys

import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope

import mmvmamba  # noqa: F401
from mmvmamba.datasets.toy import ensure_toy_data_from_cfg

spec = importlib.util.spec_from_file_location('c', 'tools/analysis/check_ddp_loss.py')
chk = importlib.util.module_from_spec(spec)
spec.loader.exec_module(chk)
path = chk.deterministic_config('configs/toy/maskrcnn_vmamba_toy.py', 5, '/tmp/diag_cfg.py', True)
cfg = Config.fromfile(path)
ensure_toy_data_from_cfg(cfg)
out = {}
with DefaultScope.overwrite_default_scope('mmdet'):
    from mmdet.registry import DATASETS, MODELS
    from mmengine.runner import set_random_seed
    ds = DATASETS.build(cfg.train_dataloader.dataset)
    samples = [ds[i] for i in range(8)]
    runs = [('fused', 'cuda'), ('reference', 'cuda'), ('reference', 'cpu')]
    if not torch.cuda.is_available():
        runs = [('reference', 'cpu')]
    ref_state = None
    for backend, device in runs:
        if True:
            set_random_seed(0)
            cfg.model.backbone.core_backend = backend
            model = MODELS.build(cfg.model).to(device)
            model.init_weights()
            if ref_state is None:
                ref_state = {k: v.cpu() for k, v in model.state_dict().items()}
            else:
                model.load_state_dict(ref_state)
            model.train()
            res = {}
            for split in ((0, 8), (0, 4), (4, 8)):
                data = model.data_preprocessor(pseudo_collate(samples[split[0]:split[1]]), True)
                with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
                    torch.backends.cuda.matmul.allow_tf32 = False
                    feats = model.extract_feat(data['inputs'])
                    losses = model.loss(data['inputs'], data['data_samples'])
                    loss, log_vars = model.parse_losses(losses)
                res[f'{split}'] = {k: float(v) for k, v in log_vars.items()}
                res[f'{split}_feat0_sum'] = float(feats[0].double().abs().sum())
            halves = [res['(0, 4)'], res['(4, 8)']]
            res['mean_of_halves'] = {k: (halves[0][k] + halves[1][k]) / 2 for k in halves[0]}
            out[f'{backend}_{device}'] = res
            print(backend, device, json.dumps({k: res[k] for k in ('(0, 8)', 'mean_of_halves')}, indent=0), flush=True)
with open(os.path.join(os.environ.get('OUT', '/tmp'), 'diag_batch.json'), 'w') as f:
    json.dump(out, f, indent=1)
