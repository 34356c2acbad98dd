"""KeepAllSampler: the non-sampling RoI head's sampler keeps every proposal
the assigner does not ignore (plus the gts when asked)."""
import re

import pytest
import torch
from mmengine.structures import InstanceData

from mmdet.models.task_modules.assigners import AssignResult
from mmdet.registry import TASK_UTILS
from mmdet.utils import register_all_modules

register_all_modules()


@pytest.mark.parametrize('add_gt', [True, False])
def test_keep_all_sampler_keeps_every_non_ignored_proposal(add_gt):
    sampler = TASK_UTILS.build(dict(type='KeepAllSampler',
                                    add_gt_as_proposals=add_gt),
                               default_args=dict(context=None))
    assign = AssignResult(num_gts=2, gt_inds=torch.tensor([1, 0, -1, 2, 0]),
                          max_overlaps=torch.rand(5),
                          labels=torch.tensor([1, -1, -1, 0, -1]))
    priors = torch.rand(5, 4) * 10
    gts = InstanceData(bboxes=torch.rand(2, 4) * 10,
                       labels=torch.tensor([1, 0]))
    res = sampler.sample(assign, InstanceData(priors=priors), gts)
    offset = 2 if add_gt else 0
    pos = ([0, 1] if add_gt else []) + [0 + offset, 3 + offset]
    assert sorted(res.pos_inds.tolist()) == pos
    assert sorted(res.neg_inds.tolist()) == [1 + offset, 4 + offset]
    assert repr(sampler) == (
        f'KeepAllSampler(add_gt_as_proposals={add_gt})')


def test_keep_all_sampler_rejects_a_budget():
    # a misspelt key, or RandomSampler's budget merged in without _delete_
    for extra in (dict(add_gt_as_proposal=False), dict(num=512)):
        with pytest.raises(TypeError, match=re.escape(repr(sorted(extra)))):
            TASK_UTILS.build(dict(type='KeepAllSampler', **extra))
    # a string would be truthy: gts silently added
    with pytest.raises(ValueError, match="add_gt_as_proposals='False'"):
        TASK_UTILS.build(dict(type='KeepAllSampler',
                              add_gt_as_proposals='False'))
