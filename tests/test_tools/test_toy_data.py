"""The synthetic toy data: seeded, well-formed, readable by the stock mmdet/mmseg datasets."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmvmamba.datasets import (
    TOY_DET_CLASSES,
    TOY_SEG_CLASSES,
    ensure_toy_data,
    ensure_toy_data_from_cfg,
    make_toy_data,
    toy_data_spec,
)


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.mark.parametrize('kind', ['coco', 'ade'])
def test_same_files_every_time_and_seed_matters(tmp_path, kind):
    a = make_toy_data(tmp_path / 'a', kind, num_train=3, num_val=2)
    b = make_toy_data(tmp_path / 'b', kind, num_train=3, num_val=2)
    c = make_toy_data(tmp_path / 'c', kind, num_train=3, num_val=2, seed=1)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    assert toy_data_spec(a)['kind'] == kind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temp folders left


def test_coco_layout_boxes_and_masks_agree(tmp_path):
    from pycocotools.coco import COCO
    root = make_toy_data(tmp_path / 'coco', 'coco', num_train=6, num_val=2)
    coco = COCO(str(root / 'annotations' / 'instances_train.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(TOY_DET_CLASSES)
    assert len(coco.getImgIds()) == 6
    assert len(coco.getAnnIds()) >= 6
    for ann in coco.loadAnns(coco.getAnnIds()):
        info = coco.loadImgs(ann['image_id'])[0]
        mask = coco.annToMask(ann)
        assert mask.shape == (info['height'], info['width'])
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann['bbox']
        assert 0 <= x and 0 <= y and x + w <= info['width'] and y + h <= info['height']
        # the mask fills its box: it spans the box up to rasterisation (2 px)
        assert abs(xs.min() - x) <= 2 and abs(xs.max() + 1 - (x + w)) <= 2
        assert abs(ys.min() - y) <= 2 and abs(ys.max() + 1 - (y + h)) <= 2
        assert abs(mask.sum() - ann['area']) <= 0.1 * ann['area'] + 20
    for split, num in (('train', 6), ('val', 2)):
        assert len(list((root / split).glob('*.jpg'))) == num


def test_ade_layout_labels_and_unlabelled_band(tmp_path):
    root = make_toy_data(tmp_path / 'ade', 'ade', num_train=4, num_val=2)
    labels = sorted((root / 'annotations' / 'training').glob('*.png'))
    images = sorted((root / 'images' / 'training').glob('*.jpg'))
    assert [p.stem for p in labels] == [p.stem for p in images] and len(labels) == 4
    seen = set()
    for path in labels:
        label = np.asarray(Image.open(path))
        assert label.dtype == np.uint8 and label.shape == (128, 160)
        values = set(np.unique(label).tolist())
        assert values <= set(range(len(TOY_SEG_CLASSES) + 1))
        assert 0 in values  # the unlabelled band that reduce_zero_label turns into 255
        seen |= values
    assert seen >= {1, 2, 3}


def test_stock_datasets_read_it(tmp_path):
    from mmdet.datasets import CocoDataset
    from mmseg.datasets import BaseSegDataset
    coco = make_toy_data(tmp_path / 'coco', 'coco', num_train=3, num_val=2)
    det = CocoDataset(data_root=str(coco), ann_file='annotations/instances_val.json',
                      data_prefix=dict(img='val/'), metainfo=dict(classes=TOY_DET_CLASSES),
                      pipeline=[], test_mode=True)
    assert len(det) == 2 and det.metainfo['classes'] == TOY_DET_CLASSES
    assert all(Path(d['img_path']).is_file() for d in det)
    ade = make_toy_data(tmp_path / 'ade', 'ade', num_train=3, num_val=2)
    seg = BaseSegDataset(data_root=str(ade), img_suffix='.jpg', seg_map_suffix='.png',
                         reduce_zero_label=True, metainfo=dict(classes=TOY_SEG_CLASSES),
                         data_prefix=dict(img_path='images/validation',
                                          seg_map_path='annotations/validation'), pipeline=[])
    assert len(seg) == 2 and seg[0]['reduce_zero_label'] is True


def test_ensure_creates_once_and_refuses_foreign_folders(tmp_path):
    root = tmp_path / 'toy'
    ensure_toy_data(root, 'coco', num_train=2, num_val=1)
    stamp = (root / 'toy_data.json').stat().st_mtime_ns
    ensure_toy_data(root, 'coco', num_train=2, num_val=1)  # already there: left alone
    assert (root / 'toy_data.json').stat().st_mtime_ns == stamp
    with pytest.raises(RuntimeError, match='other arguments'):
        ensure_toy_data(root, 'coco', num_train=3, num_val=1)
    with pytest.raises(RuntimeError, match="kind 'ade'"):
        ensure_toy_data(root, 'ade')
    with pytest.raises(FileExistsError):
        make_toy_data(root, 'coco')
    foreign = tmp_path / 'mine'
    foreign.mkdir()
    with pytest.raises(RuntimeError, match='make_toy_data.py'):
        ensure_toy_data(foreign, 'coco')
    assert ensure_toy_data_from_cfg(dict()) is None
    made = ensure_toy_data_from_cfg(
        dict(toy_data=dict(root=str(tmp_path / 'from_cfg'), kind='ade', num_train=2, num_val=1)))
    assert json.loads((made / 'toy_data.json').read_text())['num_train'] == 2


def test_bad_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match='coco'):
        make_toy_data(tmp_path / 'x', 'voc')
