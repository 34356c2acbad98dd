"""PackDetInputsWithWeights: the mixup weights reach gt_instances, split
with the ignored objects like the labels; without them the output is
PackDetInputs'."""
import numpy as np
import pytest
import torch

from mmdet.datasets.transforms import PackDetInputs
from mmdet.structures.bbox import HorizontalBoxes
from mmdet_freebies.datasets.transforms import (PackDetInputsWithWeights,
                                                VisuallyCoherentMixup)


def results(with_weights=True):
    res = dict(
        img=np.zeros((4, 5, 3), np.uint8),
        img_id=1,
        img_shape=(4, 5),
        gt_bboxes=HorizontalBoxes(
            torch.tensor([[0., 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]])),
        gt_bboxes_labels=np.array([0, 1, 2], np.int64),
        gt_ignore_flags=np.array([False, True, False]))
    if with_weights:
        res['gt_weights'] = np.array([0.25, 0.5, 0.75], np.float64)
    return res


def test_weights_packed_and_split_like_labels():
    out = PackDetInputsWithWeights().transform(results())
    gt = out['data_samples'].gt_instances
    ignored = out['data_samples'].ignored_instances
    assert gt.weights.dtype == torch.float32
    assert gt.weights.tolist() == [0.25, 0.75]
    assert gt.labels.tolist() == [0, 2]
    assert ignored.weights.tolist() == [0.5]
    assert ignored.labels.tolist() == [1]


def test_without_weights_same_as_pack_det_inputs():
    ours = PackDetInputsWithWeights().transform(results(False))
    ref = PackDetInputs().transform(results(False))
    assert torch.equal(ours['inputs'], ref['inputs'])
    for field in ('gt_instances', 'ignored_instances'):
        a, b = ours['data_samples'].get(field), ref['data_samples'].get(field)
        assert set(a.keys()) == set(b.keys()) == {'bboxes', 'labels'}
        assert torch.equal(a.labels, b.labels)
        assert torch.equal(a.bboxes.tensor, b.bboxes.tensor)
    assert ours['data_samples'].metainfo == ref['data_samples'].metainfo


def test_misaligned_weights_raise():
    res = results()
    res['gt_weights'] = res['gt_weights'][:2]
    with pytest.raises(ValueError, match="wrap it in AlignInstanceKeys, "
                       "with 'gt_weights' in its keys"):
        PackDetInputsWithWeights().transform(res)


@pytest.mark.parametrize('bad', [np.nan, -np.inf, -2.0])
def test_invalid_weights_raise(bad):
    res = results()
    res['gt_weights'] = np.array([0.25, bad, 0.75])  # also an ignored one
    with pytest.raises(ValueError, match=r'gt_weights must be finite and '
                       r'>= 0, got \[0\.25, ' + str(float(bad))):
        PackDetInputsWithWeights().transform(res)


def test_after_mixup():
    a = results(False)
    b = results(False)
    a['mix_results'] = [b]
    mixed = VisuallyCoherentMixup(ratio=0.375).transform(a)
    out = PackDetInputsWithWeights().transform(mixed)
    gt = out['data_samples'].gt_instances
    assert gt.weights.tolist() == [0.375, 0.375, 0.625, 0.625]
    assert gt.labels.tolist() == [0, 2, 0, 2]
    assert out['data_samples'].ignored_instances.weights.tolist() == [
        0.375, 0.625
    ]


def test_repr():
    assert repr(PackDetInputsWithWeights(meta_keys=('img_id', ))) == (
        "PackDetInputsWithWeights(meta_keys=('img_id',))")
