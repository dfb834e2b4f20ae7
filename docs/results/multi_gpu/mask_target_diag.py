"""mmdet mask targets (BitmapMasks.crop_and_resize -> mmcv roi_align) on CPU vs CUDA."""
import numpy as np
import torch
from mmdet.structures.mask import BitmapMasks

rng = np.random.default_rng(0)
masks = np.zeros((3, 128, 160), np.uint8)
masks[0, 20:60, 30:90] = 1
masks[1, 70:120, 10:50] = 1
masks[2, 5:40, 100:150] = 1
bm = BitmapMasks(masks, 128, 160)
boxes = np.array([[25, 15, 95, 65], [5, 60, 55, 125], [95, 0, 155, 45], [30, 20, 80, 50]], np.float32)
inds = np.array([0, 1, 2, 0])
for device in ('cpu', 'cuda'):
    t = bm.crop_and_resize(torch.from_numpy(boxes).to(device), (28, 28), inds,
                           device=device).to_ndarray()
    print(device, t.shape, t.sum(axis=(1, 2)).tolist())
from mmcv.ops import roi_align
feat = torch.randn(1, 4, 32, 40)
rois = torch.tensor([[0, 3.3, 4.1, 20.7, 17.2], [0, 0.5, 0.5, 39.0, 31.0]])
a = roi_align(feat, rois, (7, 7), 1.0, 2, 'avg', True)
b = roi_align(feat.cuda(), rois.cuda(), (7, 7), 1.0, 2, 'avg', True).cpu()
print('roi_align cpu vs cuda max abs diff', (a - b).abs().max().item())
