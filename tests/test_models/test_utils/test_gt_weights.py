import pytest
import torch
from mmengine.structures import InstanceData

from mmdet_freebies.models.utils import get_gt_weights


def _gts(**fields):
    return InstanceData(bboxes=torch.zeros(2, 4), labels=torch.zeros(2).long(),
                        **fields)


def test_absent_weights_give_none():
    assert get_gt_weights(_gts()) is None


def test_weights_are_returned_as_is():
    weights = torch.tensor([0.3, 0.7])
    assert get_gt_weights(_gts(weights=weights)) is weights


@pytest.mark.parametrize('weights', [
    torch.tensor([1, 0]),  # integer dtype
    torch.ones(2, 1),  # one column too many
    [0.3, 0.7],  # not a tensor
])
def test_bad_weights_name_the_field(weights):
    with pytest.raises(TypeError, match=r'gt_instances\.weights'):
        get_gt_weights(_gts(weights=weights))


@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -1.0])
def test_weights_must_be_finite_and_non_negative(bad):
    """A negative weight turns the positives' loss negative, a NaN makes
    the whole loss NaN; 0 (the object's loss off) is allowed."""
    assert get_gt_weights(_gts(weights=torch.tensor([0.0, 2.0]))) is not None
    with pytest.raises(ValueError, match=r'gt_instances\.weights must be '
                       r'finite and >= 0, got \[0\.5, ' + str(bad)):
        get_gt_weights(_gts(weights=torch.tensor([0.5, bad])))
