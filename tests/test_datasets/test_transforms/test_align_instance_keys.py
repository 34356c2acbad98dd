"""AlignInstanceKeys: per-object keys follow their boxes through transforms
that drop objects, and the labels come back untouched."""
import numpy as np
import pytest

from mmdet.structures.bbox import HorizontalBoxes
from mmdet_freebies.datasets.transforms import AlignInstanceKeys


def results(n=6, weights=True):
    rng = np.random.RandomState(0)
    xy = rng.uniform(0, 60, (n, 2))
    res = dict(
        img=np.zeros((80, 80, 3), np.uint8),
        img_shape=(80, 80),
        gt_bboxes=HorizontalBoxes(
            np.concatenate([xy, xy + 15], 1).astype(np.float32)),
        gt_bboxes_labels=np.arange(n, dtype=np.int64) % 3 + 5,
        gt_ignore_flags=np.zeros(n, bool))
    if weights:
        res['gt_weights'] = np.arange(n, dtype=np.float32) / 10
    return res


def drop_first_and_reverse(res):
    keep = np.arange(len(res['gt_bboxes']))[1:][::-1].copy()
    res['gt_bboxes'] = res['gt_bboxes'][keep]
    res['gt_bboxes_labels'] = res['gt_bboxes_labels'][keep]
    res['gt_ignore_flags'] = res['gt_ignore_flags'][keep]
    return res


def test_keys_follow_dropped_and_reordered_boxes():
    src = results()
    out = AlignInstanceKeys([drop_first_and_reverse]).transform(results())
    np.testing.assert_array_equal(out['gt_weights'], src['gt_weights'][:0:-1])
    np.testing.assert_array_equal(out['gt_bboxes_labels'],
                                  src['gt_bboxes_labels'][:0:-1])


def test_with_mmdet_min_iou_random_crop():
    np.random.seed(3)
    src = results()
    t = AlignInstanceKeys([
        dict(type='MinIoURandomCrop', min_ious=(0.9, ), min_crop_size=0.3)
    ])
    kept = []
    for _ in range(20):
        out = t.transform(results())
        assert len(out['gt_weights']) == len(out['gt_bboxes'])
        # each weight is still the one of the object carrying that label
        idx = np.round(out['gt_weights'] * 10).astype(int)
        np.testing.assert_array_equal(out['gt_bboxes_labels'],
                                      src['gt_bboxes_labels'][idx])
        kept.append(len(idx))
    assert min(kept) < len(src['gt_bboxes'])  # some crops dropped boxes


def varied(seed, n=8):
    """``n`` boxes of 4 to 30 pixels inside the 80x80 image, one label per
    object (so that a misaligned weight cannot meet an equal label)."""
    rng = np.random.RandomState(seed)
    size = rng.uniform(4, 30, (n, 1))
    xy = rng.uniform(0, 1, (n, 2)) * (80 - size)
    res = results(n)
    res['gt_bboxes'] = HorizontalBoxes(
        np.concatenate([xy, xy + size], 1).astype(np.float32))
    res['gt_bboxes_labels'] = np.arange(n, dtype=np.int64) + 5
    return res


@pytest.mark.parametrize('transforms,same_boxes', [
    ([dict(type='RandomCrop', crop_size=(40, 40))], False),
    ([dict(type='FilterAnnotations', min_gt_bbox_wh=(12, 12))], True),
    ([dict(type='RandomFlip', prob=1.0),
      dict(type='RandomCrop', crop_size=(50, 50)),
      dict(type='FilterAnnotations', min_gt_bbox_wh=(6, 6))], False),
])
def test_weights_follow_their_objects_through_mmdet_transforms(
        transforms, same_boxes):
    """mmdet's RandomCrop and FilterAnnotations, alone and chained after a
    flip: each kept weight (object index / 10) is its object's, by label
    and by box (a crop shifts or clips a box but never widens it; the
    filter leaves the kept boxes as they were)."""
    np.random.seed(0)
    t = AlignInstanceKeys(transforms)
    dropped = 0
    for seed in range(20):
        src = varied(seed)
        out = t.transform(varied(seed))
        if out is None:  # a crop without objects: the dataset redraws
            continue
        idx = np.round(out['gt_weights'] * 10).astype(int)
        np.testing.assert_array_equal(out['gt_bboxes_labels'],
                                      src['gt_bboxes_labels'][idx])
        box, src_box = out['gt_bboxes'].tensor, src['gt_bboxes'].tensor[idx]
        if same_boxes:
            assert (box == src_box).all()
        else:
            size, src_size = box[:, 2:] - box[:, :2], \
                src_box[:, 2:] - src_box[:, :2]
            assert (size <= src_size + 1e-4).all()
        dropped += len(idx) < len(src['gt_weights'])
    assert dropped > 0


def test_without_keys_is_the_plain_transform():
    out = AlignInstanceKeys([drop_first_and_reverse]).transform(
        results(weights=False))
    np.testing.assert_array_equal(out['gt_bboxes_labels'], [7, 6, 5, 7, 6])


@pytest.mark.parametrize('shift', [100, 1, -1])
def test_label_changing_transform_is_rejected(shift):
    """Labels shifted past either end (-1 would wrap around and put the
    weights on other objects) are an error."""

    def relabel(res):
        res['gt_bboxes_labels'] = res['gt_bboxes_labels'] + shift
        return res

    with pytest.raises(RuntimeError, match='changed object labels'):
        AlignInstanceKeys([relabel]).transform(results())


def test_a_box_dropped_without_its_label_is_rejected():

    def drop_box_only(res):
        res['gt_bboxes'] = res['gt_bboxes'][1:]
        return res

    with pytest.raises(RuntimeError, match='changed object labels'):
        AlignInstanceKeys([drop_box_only]).transform(results())


def test_a_rejected_sample_stays_rejected():
    """A wrapped transform returning None (no valid crop) makes the dataset
    draw another sample, as without the wrapper."""
    assert AlignInstanceKeys([lambda res: None]).transform(results()) is None


def test_repr_and_bad_keys():
    assert repr(AlignInstanceKeys([dict(type='RandomFlip', prob=0.5)],
                                  keys=['gt_weights'])) == (
        'AlignInstanceKeys(transforms=Compose(\n'
        '    RandomFlip(prob=0.5, direction=horizontal)\n'
        "), keys=('gt_weights',))")
    with pytest.raises(TypeError, match="keys='gt_weights'"):
        AlignInstanceKeys([], keys='gt_weights')
    with pytest.raises(TypeError, match='keys must be a sequence of str, '
                       'got keys=None'):
        AlignInstanceKeys([], keys=None)
    # an empty list would build and align nothing
    with pytest.raises(ValueError, match=r'keys=\[\] aligns nothing'):
        AlignInstanceKeys([], keys=[])
    # one transform config instead of a list of them
    with pytest.raises(TypeError, match=r"AlignInstanceKeys: transforms must "
                       r"be a list .* transforms=\{'type': 'RandomFlip'"):
        AlignInstanceKeys(dict(type='RandomFlip', prob=0.5))


def test_a_key_of_the_wrong_length_is_an_error():
    res = results()
    res['gt_weights'] = res['gt_weights'][:4]
    with pytest.raises(ValueError, match='gt_weights has 4 entries, '
                       'gt_bboxes has 6'):
        AlignInstanceKeys([drop_first_and_reverse]).transform(res)


def test_results_without_labels_stay_without_labels():
    """The labels slot carries the object index through the transforms; it
    is removed again when the input had no labels."""
    res = results()
    del res['gt_bboxes_labels']
    out = AlignInstanceKeys([drop_first_and_reverse]).transform(res)
    assert 'gt_bboxes_labels' not in out
    np.testing.assert_allclose(out['gt_weights'],
                               [0.5, 0.4, 0.3, 0.2, 0.1])
