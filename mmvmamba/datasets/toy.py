"""A small synthetic data set that needs no download, for the toy configs and the tests.

Two layouts are written, both from one seeded generator, so the same files come out every time:

- ``coco``: a COCO-format instance set (``annotations/instances_{train,val}.json`` plus
  ``train/`` and ``val/`` images). Each image holds 1-4 non-overlapping coloured shapes on a
  noisy background; every shape is one instance with a polygon mask. Read it with mmdet's stock
  ``CocoDataset`` and ``metainfo=dict(classes=TOY_DET_CLASSES)``.
- ``ade``: a semantic segmentation set in mmseg's ADE20K layout (``images/{training,validation}``
  as ``.jpg``, ``annotations/{training,validation}`` as ``.png``). Label 0 means "unlabelled"
  (a thin band around every object) and the classes are numbered from 1, so it is read with
  ``reduce_zero_label=True`` and ``metainfo=dict(classes=TOY_SEG_CLASSES)``.

Writing is atomic (a temporary folder renamed into place), so several processes that ask for the
same data at once (e.g. the ranks of a distributed run) are safe.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: Instance classes of the ``coco`` layout; shape and base colour go together.
TOY_DET_CLASSES = ('square', 'disk', 'triangle')
#: Palette (RGB) of the ``coco`` layout, also the shapes' base colours.
TOY_DET_PALETTE = [(220, 40, 40), (40, 200, 60), (50, 80, 230)]
#: Semantic classes of the ``ade`` layout (label value = index + 1; 0 = unlabelled).
TOY_SEG_CLASSES = ('sky', 'grass', 'road', 'disk', 'box')
#: Palette (RGB) of the ``ade`` layout, also the regions' base colours.
TOY_SEG_PALETTE = [(90, 150, 230), (60, 170, 60), (110, 110, 110), (230, 200, 40), (200, 60, 160)]

#: Bumped whenever the generator's output changes; stored in the marker file.
TOY_FORMAT_VERSION = 1
_MARKER = 'toy_data.json'
_KINDS = ('coco', 'ade')


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random grey-ish background with pixel noise, ``(H, W, 3)`` uint8."""
    base = rng.uniform(60, 190, size=3)
    gy = np.linspace(-1, 1, height)[:, None, None] * rng.uniform(-30, 30, size=3)
    gx = np.linspace(-1, 1, width)[None, :, None] * rng.uniform(-30, 30, size=3)
    noise = rng.normal(0, 8, size=(height, width, 3))
    return np.clip(base + gy + gx + noise, 0, 255).astype(np.uint8)


def _shape_polygon(kind: int, cx: float, cy: float, r: float,
                   rng: np.random.Generator) -> list[tuple[float, float]]:
    """Vertices of a square (0), disk (1, a 32-gon) or triangle (2) of radius ``r``."""
    if kind == 1:
        angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    else:
        corners = 4 if kind == 0 else 3
        angles = rng.uniform(0, 2 * np.pi) + np.arange(corners) * 2 * np.pi / corners
    return [(float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a in angles]


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: float) -> tuple:
    """The colour ``rgb`` moved by a uniform random offset of up to ``amount`` per channel."""
    return tuple(int(np.clip(c + rng.uniform(-amount, amount), 0, 255)) for c in rgb)


def _place_circles(rng: np.random.Generator, count: int, height: int, width: int,
                   r_min: float, r_max: float, gap: float) -> list[tuple[float, float, float]]:
    """Up to ``count`` circles ``(cx, cy, r)`` inside the image that keep ``gap`` pixels apart."""
    if min(height, width) < 2 * r_max + 4:
        raise ValueError(f'a {height} x {width} image is too small for shapes of radius {r_max}')
    placed: list[tuple[float, float, float]] = []
    for _ in range(50 * count):
        if len(placed) == count:
            break
        r = rng.uniform(r_min, r_max)
        cx, cy = rng.uniform(r + 1, width - r - 1), rng.uniform(r + 1, height - r - 1)
        if all(np.hypot(cx - x, cy - y) > r + q + gap for x, y, q in placed):
            placed.append((cx, cy, r))
    return placed


def _coco_image(rng: np.random.Generator, height: int, width: int):
    """One image of the ``coco`` layout and its instances ``[(class_index, polygon), ...]``."""
    img = Image.fromarray(_background(rng, height, width))
    draw = ImageDraw.Draw(img)
    instances = []
    side = min(height, width)  # shape radii scale with the image: 13-32 px at 128 x 160
    for cx, cy, r in _place_circles(rng, int(rng.integers(1, 5)), height, width, 0.1 * side,
                                    0.25 * side, 4):
        kind = int(rng.integers(len(TOY_DET_CLASSES)))
        poly = _shape_polygon(kind, cx, cy, r, rng)
        draw.polygon(poly, fill=_jitter(rng, TOY_DET_PALETTE[kind], 35))
        instances.append((kind, poly))
    return img, instances


def _write_coco_split(out: Path, split: str, num: int, rng: np.random.Generator,
                      height: int, width: int) -> None:
    """Write ``num`` images to ``out/split/`` and ``out/annotations/instances_{split}.json``."""
    (out / split).mkdir(parents=True)
    images, annotations = [], []
    for i in range(num):
        img, instances = _coco_image(rng, height, width)
        name = f'{split}_{i:04d}.jpg'
        img.save(out / split / name, quality=95)
        images.append(dict(id=i + 1, file_name=name, height=height, width=width))
        for kind, poly in instances:
            xs, ys = [p[0] for p in poly], [p[1] for p in poly]
            x0, y0 = min(xs), min(ys)
            area = 0.5 * abs(sum(xs[j] * ys[j - 1] - xs[j - 1] * ys[j] for j in range(len(xs))))
            annotations.append(dict(
                id=len(annotations) + 1, image_id=i + 1, category_id=kind + 1, iscrowd=0,
                bbox=[round(x0, 2), round(y0, 2), round(max(xs) - x0, 2), round(max(ys) - y0, 2)],
                area=round(area, 2),
                segmentation=[[round(v, 2) for p in poly for v in p]]))
    categories = [dict(id=k + 1, name=n) for k, n in enumerate(TOY_DET_CLASSES)]
    (out / 'annotations').mkdir(exist_ok=True)
    with open(out / 'annotations' / f'instances_{split}.json', 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)


def _ade_image(rng: np.random.Generator, height: int, width: int):
    """One image of the ``ade`` layout and its label map ``(H, W)`` uint8 (0 = unlabelled)."""
    rgb = np.zeros((height, width, 3), np.float64)
    label = np.zeros((height, width), np.uint8)
    rows = np.arange(height)[:, None]
    horizon = int(rng.uniform(0.3, 0.6) * height)
    road_top = horizon + int(rng.uniform(0.3, 0.6) * (height - horizon))
    for cls, (top, bottom) in ((1, (0, horizon)), (2, (horizon, road_top)),
                               (3, (road_top, height))):
        band = (rows >= top) & (rows < bottom) & np.ones((1, width), bool)
        rgb[band] = _jitter(rng, TOY_SEG_PALETTE[cls - 1], 25)
        label[band] = cls
    canvas = Image.fromarray(np.zeros((height, width), np.uint8))
    side = min(height, width)  # object radii scale with the image: 10-28 px at 128 x 160
    for cx, cy, r in _place_circles(rng, int(rng.integers(1, 4)), height, width, 0.08 * side,
                                    0.22 * side, 6):
        cls = int(rng.integers(4, 6))
        if cls == 4:
            box = [cx - r, cy - r, cx + r, cy + r]
        else:
            box = [cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r]
        canvas.paste(0, (0, 0, width, height))
        draw = ImageDraw.Draw(canvas)
        (draw.ellipse if cls == 4 else draw.rectangle)(box, fill=1, outline=2, width=2)
        mask = np.asarray(canvas)
        rgb[mask == 1] = _jitter(rng, TOY_SEG_PALETTE[cls - 1], 25)
        label[mask == 1] = cls
        label[mask == 2] = 0
        rgb[mask == 2] = rgb[mask == 2] * 0.5
    rgb += rng.normal(0, 6, size=rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)), label


def _write_ade_split(out: Path, split: str, num: int, rng: np.random.Generator,
                     height: int, width: int) -> None:
    """Write ``num`` image/label pairs to ``out/{images,annotations}/split/``."""
    (out / 'images' / split).mkdir(parents=True)
    (out / 'annotations' / split).mkdir(parents=True)
    for i in range(num):
        img, label = _ade_image(rng, height, width)
        name = f'toy_{split}_{i:04d}'
        img.save(out / 'images' / split / f'{name}.jpg', quality=95)
        Image.fromarray(label).save(out / 'annotations' / split / f'{name}.png')


def make_toy_data(root: str | os.PathLike, kind: str, num_train: int = 64, num_val: int = 16,
                  height: int = 128, width: int = 160, seed: int = 0,
                  overwrite: bool = False) -> Path:
    """Write the toy data set ``kind`` into ``root`` (see the module docstring for the layouts).

    Args:
        root: Folder to create, e.g. ``data/toy/coco``. It must not exist unless ``overwrite``.
        kind: ``'coco'`` (instances) or ``'ade'`` (semantic segmentation, ADE20K layout).
        num_train: Number of training images.
        num_val: Number of validation images.
        height: Image height H in pixels.
        width: Image width W in pixels.
        seed: Seed of the generator; the same arguments always give the same files.
        overwrite: Replace ``root`` if it exists.

    Returns:
        The path of the written folder.
    """
    if kind not in _KINDS:
        raise ValueError(f'unknown toy data kind {kind!r}; choose one of {_KINDS}')
    root = Path(root)
    if root.exists() and not overwrite:
        raise FileExistsError(f'{root} exists; pass overwrite=True (--overwrite) to replace it')
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{root.name}.tmp-', dir=root.parent))
    try:
        rng = np.random.default_rng(seed)
        if kind == 'coco':
            _write_coco_split(tmp, 'train', num_train, rng, height, width)
            _write_coco_split(tmp, 'val', num_val, rng, height, width)
        else:
            _write_ade_split(tmp, 'training', num_train, rng, height, width)
            _write_ade_split(tmp, 'validation', num_val, rng, height, width)
        spec = dict(version=TOY_FORMAT_VERSION, kind=kind, num_train=num_train, num_val=num_val,
                    height=height, width=width, seed=seed)
        (tmp / _MARKER).write_text(json.dumps(spec, indent=1))
        if overwrite and root.exists():
            shutil.rmtree(root)
        os.rename(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if toy_data_spec(root) is None:
            raise
        # Another process renamed the same data into place first: theirs is identical.
    return root


def toy_data_spec(root: str | os.PathLike) -> dict | None:
    """The generator arguments recorded in ``root``, or None if ``root`` holds no toy data."""
    marker = Path(root) / _MARKER
    if not marker.is_file():
        return None
    return json.loads(marker.read_text())


def ensure_toy_data(root: str | os.PathLike, kind: str, **kwargs) -> Path:
    """Create the toy data set in ``root`` unless it is there already (same arguments).

    Args:
        root: Folder of the data set.
        kind: ``'coco'`` or ``'ade'``.
        **kwargs: Further arguments of :func:`make_toy_data` (sizes, seed).

    Returns:
        The path of the folder.

    Raises:
        RuntimeError: ``root`` exists but is not toy data of this kind and version (the message
            says how to regenerate it).
    """
    root = Path(root)
    if not root.exists():
        return make_toy_data(root, kind, **kwargs)
    spec = toy_data_spec(root)
    if spec is None or spec.get('kind') != kind or spec.get('version') != TOY_FORMAT_VERSION:
        raise RuntimeError(
            f'{root} exists but is not toy data of kind {kind!r}, version {TOY_FORMAT_VERSION} '
            f'(found {spec}); delete it, or regenerate it with '
            f'`python tools/misc/make_toy_data.py --kind {kind} --root {root} --overwrite`')
    wanted = {k: v for k, v in kwargs.items() if k != 'overwrite'}
    stale = {k: (spec.get(k), v) for k, v in wanted.items() if spec.get(k) != v}
    if stale:
        raise RuntimeError(f'{root} holds toy data made with other arguments {stale} '
                           '(recorded, wanted); delete it or pick another root')
    return root


def ensure_toy_data_from_cfg(cfg) -> Path | None:
    """Create the toy data a config asks for through its top-level ``toy_data`` field.

    Configs on the toy data set carry ``toy_data = dict(root=data_root, kind='coco', ...)``;
    the tools call this before they build the Runner. Configs without the field are left alone.

    Args:
        cfg: An :class:`mmengine.config.Config` (or a dict-like with ``get``).

    Returns:
        The data folder, or None when the config has no ``toy_data`` field.
    """
    spec = cfg.get('toy_data', None)
    if spec is None:
        return None
    spec = dict(spec)
    return ensure_toy_data(spec.pop('root'), spec.pop('kind'), **spec)
