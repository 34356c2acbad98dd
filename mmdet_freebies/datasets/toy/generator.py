"""A deterministic synthetic COCO-format detection dataset (the embedded
default that every config can train on, on a CPU, with nothing downloaded).

Each image is a textured background (a colour gradient, low-frequency blobs,
stripes and pixel noise) carrying several filled shapes, one shape per class.
Object sizes (the geometric mean of the sides) are log-uniform from
``min_size`` to ``max_frac`` of the image side, with aspect ratios from 1:2
to 2:1, so COCO's small (< 32 px), medium and large buckets are all
populated. Objects overlap at IoU < 0.2, and the later shapes together may
paint over at most ``1 - min_visible`` of an earlier one's pixels: an IoU
limit alone lets a small object vanish inside a later, larger one (in the
first version of this generator 73 of 2079 training and 12 of 502
validation objects were completely hidden, yet annotated).
"""
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

SHAPES = ('rectangle', 'ellipse', 'triangle', 'cross', 'ring', 'diamond',
          'hexagon', 'star')

# Stored in the annotation files' ``info``; raise it whenever the same
# arguments start to give different data, so that stale data is noticed.
# 2: later shapes may not hide earlier objects (``min_visible``).
GENERATOR_VERSION = 2

# Every class has its own base hue (OpenCV hue, 0-179), so the task is
# learnable in minutes on a CPU but still needs the shape for near hues.
_HUES = (0, 60, 120, 25, 150, 90, 10, 40)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Textured clutter: gradient + blurred blobs + stripes + noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(40, 200, size=(2, 3))
    t = (x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1)) / max(h, w)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    blobs = rng.normal(0, 1, size=(max(h // 8, 1), max(w // 8, 1), 3))
    blobs = cv2.resize(blobs.astype(np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    img += 25 * blobs
    period = rng.uniform(4, 16)
    angle = rng.uniform(0, np.pi)
    stripes = np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi /
                     period)
    img += rng.uniform(5, 20) * stripes[..., None]
    img += rng.normal(0, 8, size=img.shape)
    return img


def _colour(rng: np.random.Generator, label: int) -> Tuple[int, int, int]:
    hue = (_HUES[label % len(_HUES)] + int(rng.integers(-6, 7))) % 180
    hsv = np.array([[[hue, rng.integers(170, 256), rng.integers(150, 256)]]],
                   dtype=np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _polygon(cx: float, cy: float, rx: float, ry: float, n: int,
             phase: float, inner: Optional[float] = None) -> np.ndarray:
    k = 2 * n if inner else n
    angles = phase + np.arange(k) * 2 * np.pi / k
    radius = np.ones(k)
    if inner:
        radius[1::2] = inner
    pts = np.stack([cx + rx * radius * np.cos(angles),
                    cy + ry * radius * np.sin(angles)], axis=1)
    return np.round(pts).astype(np.int32)


def _draw(img: np.ndarray, shape: str, box: Sequence[float],
          colour: Tuple[int, int, int]) -> None:
    x0, y0, w, h = box
    cx, cy, rx, ry = x0 + w / 2, y0 + h / 2, w / 2, h / 2
    x1, y1 = int(round(x0 + w - 1)), int(round(y0 + h - 1))
    p0 = (int(round(x0)), int(round(y0)))
    if shape == 'rectangle':
        cv2.rectangle(img, p0, (x1, y1), colour, -1)
    elif shape == 'ellipse':
        cv2.ellipse(img, (int(round(cx)), int(round(cy))),
                    (max(int(rx), 1), max(int(ry), 1)), 0, 0, 360, colour, -1)
    elif shape == 'triangle':
        pts = np.array([[cx, y0], [x0, y0 + h - 1], [x0 + w - 1, y0 + h - 1]])
        cv2.fillPoly(img, [np.round(pts).astype(np.int32)], colour)
    elif shape == 'cross':
        t = max(w, h) / 6
        cv2.rectangle(img, (p0[0], int(cy - t)), (x1, int(cy + t)), colour, -1)
        cv2.rectangle(img, (int(cx - t), p0[1]), (int(cx + t), y1), colour, -1)
    elif shape == 'ring':
        thickness = max(int(min(rx, ry) / 2.5), 1)
        cv2.ellipse(img, (int(round(cx)), int(round(cy))),
                    (max(int(rx - thickness / 2), 1),
                     max(int(ry - thickness / 2), 1)), 0, 0, 360, colour,
                    thickness)
    elif shape == 'diamond':
        cv2.fillPoly(img, [_polygon(cx, cy, rx, ry, 4, 0)], colour)
    elif shape == 'hexagon':
        cv2.fillPoly(img, [_polygon(cx, cy, rx, ry, 6, 0)], colour)
    elif shape == 'star':
        cv2.fillPoly(img, [_polygon(cx, cy, rx, ry, 5, -np.pi / 2, 0.45)],
                     colour)
    else:
        raise ValueError(f'unknown shape {shape!r}')


def _iou_matrix(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xywh box against many (for the overlap limit)."""
    if len(boxes) == 0:
        return np.zeros(0)
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y1 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter
    return inter / union


def _mask(shape: str, box: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """The pixels ``_draw`` paints for ``shape`` in ``box``."""
    mask = np.zeros(hw, np.uint8)
    _draw(mask, shape, box, (1, ))
    return mask > 0


def make_image(rng: np.random.Generator,
               img_size: Tuple[int, int],
               num_classes: int,
               objects: Tuple[int, int],
               min_size: float,
               max_frac: float,
               min_visible: float = 0.5) -> Tuple[np.ndarray, List[Dict]]:
    """One image and its annotations.

    Args:
        rng (np.random.Generator): The split's random generator.
        img_size (tuple[int, int]): (width, height).
        num_classes (int): Number of classes (shapes) to draw from.
        objects (tuple[int, int]): Min and max number of placements; a
            placement that fails 20 tries is left out.
        min_size (float): Smallest object size in pixels.
        max_frac (float): Largest object size as a fraction of the side.
        min_visible (float): Share of its pixels every object keeps
            visible. Defaults to 0.5.

    Returns:
        tuple: The image (uint8, HxWx3) and its annotations (xywh boxes,
        0-based labels), in drawing order.
    """
    w, h = img_size
    img = _background(rng, h, w)
    owner = np.zeros((h, w), np.int64)  # which object (1, 2, ...) shows
    pixels: List[int] = []  # each object's own pixel count
    boxes: List[np.ndarray] = []
    anns = []
    n = int(rng.integers(objects[0], objects[1] + 1))
    for _ in range(n):
        # the label comes first: the shape decides what a placement covers
        label = int(rng.integers(0, num_classes))
        for _try in range(20):
            side = float(np.exp(rng.uniform(np.log(min_size),
                                             np.log(max_frac * min(w, h)))))
            aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
            bw = min(side * np.sqrt(aspect), w - 1.0)
            bh = min(side / np.sqrt(aspect), h - 1.0)
            bx = float(rng.uniform(0, w - bw))
            by = float(rng.uniform(0, h - bh))
            box = np.array([bx, by, bw, bh])
            if not (_iou_matrix(box, np.array(boxes).reshape(-1, 4)) <
                    0.2).all():
                continue
            # every earlier object must keep min_visible of its pixels
            mask = _mask(SHAPES[label], box, (h, w))
            left = np.bincount(owner[~mask], minlength=len(pixels) + 1)[1:]
            if (left >= min_visible * np.array(pixels)).all():
                break
        else:
            continue
        _draw(img, SHAPES[label], box, _colour(rng, label))
        owner[mask] = len(pixels) + 1
        pixels.append(int(mask.sum()))
        # The placement's box, to 0.01 px, not the painted pixels' box: the
        # shapes are drawn on whole pixels (an ellipse's half-axes
        # truncated), and a hexagon or star does not reach every side, so
        # the paint can fall short of the box by a pixel or more (median
        # IoU of the two boxes 0.92-0.96 for the default four shapes).
        # Storing the painted box would change every toy figure in docs/.
        box = np.round(box, 2)
        boxes.append(box)
        anns.append(dict(bbox=[float(v) for v in box], label=label))
    return np.clip(img, 0, 255).astype(np.uint8), anns


def make_toy_dataset(out_dir: str,
                     seed: int = 0,
                     num_train: int = 512,
                     num_val: int = 128,
                     num_classes: int = 4,
                     img_size: Tuple[int, int] = (128, 128),
                     objects: Tuple[int, int] = (2, 6),
                     min_size: float = 8.0,
                     max_frac: float = 0.8,
                     min_visible: float = 0.5) -> Dict[str, str]:
    """Write ``train/``, ``val/`` and ``annotations/{train,val}.json``.

    The same arguments give byte-identical files: one ``numpy`` generator
    per split, PNG images and JSON written with sorted keys.

    Args:
        out_dir (str): Output root, e.g. ``data/toy``.
        seed (int): Random seed. Defaults to 0.
        num_train (int): Training images. Defaults to 512.
        num_val (int): Validation images. Defaults to 128.
        num_classes (int): Number of classes, 1 to 8. Defaults to 4.
        img_size (tuple[int, int]): (width, height). Defaults to (128, 128).
        objects (tuple[int, int]): Min and max placements per image; a
            placement that fails 20 tries is left out. Defaults to (2, 6).
        min_size (float): Smallest object size (geometric mean of the
            sides) in pixels. Defaults to 8.
        max_frac (float): Largest object size as a fraction of the image
            side. Defaults to 0.8.
        min_visible (float): Share of its pixels every object keeps visible
            after the later shapes are painted, in [0, 1]; a placement that
            would cover more is redrawn (up to 20 tries, then the object is
            left out). Defaults to 0.5.

    Returns:
        dict: paths of the two annotation files.
    """
    # numpy's own message would name neither the argument nor its value
    if not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
            and seed >= 0):
        raise ValueError(f'seed={seed!r} must be an int >= 0')
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f'num_classes={num_classes} must be in '
                         f'[1, {len(SHAPES)}]')
    if min(img_size) < 16:
        raise ValueError(f'img_size={img_size} must be at least 16 px')
    if not 0 < min_size <= max_frac * min(img_size):
        raise ValueError(f'min_size={min_size} must be in (0, '
                         f'{max_frac * min(img_size):g}], max_frac times '
                         'the image side')
    if not 0 <= min_visible <= 1:
        raise ValueError(f'min_visible={min_visible} must be in [0, 1]')
    if num_train < 1 or num_val < 1:
        raise ValueError(f'num_train={num_train} and num_val={num_val} '
                         'must be positive')
    categories = [dict(id=i + 1, name=SHAPES[i], supercategory='shape')
                  for i in range(num_classes)]
    paths = {}
    for split_id, (split, num) in enumerate((('train', num_train),
                                             ('val', num_val))):
        rng = np.random.default_rng([seed, split_id])
        os.makedirs(osp.join(out_dir, split), exist_ok=True)
        images, annotations = [], []
        for i in range(num):
            img, anns = make_image(rng, img_size, num_classes, objects,
                                   min_size, max_frac, min_visible)
            name = f'{i:06d}.png'
            cv2.imwrite(osp.join(out_dir, split, name), img,
                        [cv2.IMWRITE_PNG_COMPRESSION, 3])
            images.append(dict(id=i + 1, file_name=name, width=img_size[0],
                               height=img_size[1]))
            for ann in anns:
                x, y, w, h = ann['bbox']
                annotations.append(
                    dict(id=len(annotations) + 1, image_id=i + 1,
                         category_id=ann['label'] + 1, bbox=ann['bbox'],
                         area=round(w * h, 2), iscrowd=0))
        coco = dict(images=images, annotations=annotations,
                    categories=categories,
                    info=dict(description='mmdet_freebies toy dataset',
                              seed=seed,
                              generator_version=GENERATOR_VERSION))
        os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
        paths[split] = osp.join(out_dir, 'annotations', f'{split}.json')
        with open(paths[split], 'w') as f:
            json.dump(coco, f, sort_keys=True)
    return paths
