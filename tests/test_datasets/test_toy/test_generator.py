import hashlib
import json
import os
import os.path as osp

import numpy as np
import pytest

from mmdet_freebies.datasets.toy import SHAPES, make_toy_dataset
from mmdet_freebies.datasets.toy.generator import _mask


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = osp.join(dirpath, name)
            h.update(osp.relpath(path, root).encode())
            with open(path, 'rb') as f:
                h.update(f.read())
    return h.hexdigest()


def _make(root, **kw):
    kw = dict(dict(num_train=6, num_val=2, img_size=(96, 80)), **kw)
    return make_toy_dataset(str(root), **kw)


def test_same_seed_gives_byte_identical_files(tmp_path):
    _make(tmp_path / 'a', seed=3)
    _make(tmp_path / 'b', seed=3)
    _make(tmp_path / 'c', seed=4)
    assert _digest(tmp_path / 'a') == _digest(tmp_path / 'b')
    assert _digest(tmp_path / 'a') != _digest(tmp_path / 'c')


def test_options_and_coco_format(tmp_path):
    paths = _make(tmp_path, num_classes=3, num_train=5, num_val=3)
    train = json.load(open(paths['train']))
    val = json.load(open(paths['val']))
    assert len(train['images']) == 5 and len(val['images']) == 3
    assert [c['name'] for c in train['categories']] == list(SHAPES[:3])
    for img in train['images']:
        assert (img['width'], img['height']) == (96, 80)
        assert osp.isfile(tmp_path / 'train' / img['file_name'])
    for ann in train['annotations']:
        x, y, w, h = ann['bbox']
        assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 80
        assert 1 <= ann['category_id'] <= 3
        assert ann['area'] == pytest.approx(w * h, abs=0.01)


def test_defaults_are_not_trivial(tmp_path):
    """Several objects per image, all COCO size buckets, every class, and a
    textured (not flat) background."""
    paths = make_toy_dataset(str(tmp_path), num_train=60, num_val=1)
    coco = json.load(open(paths['train']))
    per_image = np.bincount([a['image_id'] for a in coco['annotations']])[1:]
    assert per_image.mean() > 3 and per_image.min() >= 1
    sides = np.sqrt([a['area'] for a in coco['annotations']])
    assert (sides < 32).mean() > 0.3          # small
    assert ((sides >= 32) & (sides < 96)).any()  # medium
    assert (sides >= 96).any()  # large
    assert len({a['category_id'] for a in coco['annotations']}) == 4
    import cv2
    img = cv2.imread(str(tmp_path / 'train' / '000000.png'))
    assert img.shape == (128, 128, 3)
    assert img.std() > 15


@pytest.mark.parametrize('min_visible', [0.5, 0.8])
def test_every_object_keeps_min_visible_of_its_pixels(tmp_path, min_visible):
    """Redraw each annotation's shape in drawing order (the annotation
    order): the later shapes together may cover at most 1 - min_visible of
    an earlier one (an IoU limit alone let 3.5 % of the objects vanish)."""
    paths = make_toy_dataset(str(tmp_path), num_train=60, num_val=1,
                             min_visible=min_visible)
    coco = json.load(open(paths['train']))
    shown = []
    for image in coco['images']:
        masks = [
            _mask(SHAPES[a['category_id'] - 1], np.array(a['bbox']),
                  (image['height'], image['width']))
            for a in coco['annotations'] if a['image_id'] == image['id']
        ]
        for i, mask in enumerate(masks):
            covered = np.any(masks[i + 1:], axis=0) if i + 1 < len(masks) \
                else np.zeros_like(mask)
            shown.append((mask & ~covered).sum() / mask.sum())
    assert len(shown) > 200
    # the boxes are stored rounded to 0.01 px; redrawn from the rounded box,
    # a small shape can gain or lose an edge row of pixels
    assert min(shown) >= min_visible - 0.01


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_classes=0), 'num_classes=0'),
    (dict(num_classes=9), 'num_classes=9'),
    (dict(img_size=(8, 8)), 'img_size'),
    (dict(num_train=0), 'num_train=0'),
    (dict(min_visible=1.5), 'min_visible=1.5'),
    (dict(min_visible=-0.1), 'min_visible=-0.1'),
])
def test_bad_options(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _make(tmp_path, **kwargs)
