"""A sampler that keeps every assigned prior: the non-sampling RoI head.

Chen et al., "Is Heuristic Sampling Necessary in Training Deep Object
Detectors?" (IEEE TIP 2021), Sec. III: the sampling-free RoI head is trained
on all proposals that the matcher does not ignore. mmdet's ``PseudoSampler``
keeps them too, but it cannot add the ground-truth boxes to the proposals,
which the official code (maskrcnn-benchmark) and mmdet's ``RandomSampler``
do in training. This sampler is ``BaseSampler.sample`` (gt boxes added when
``add_gt_as_proposals``) with no subsampling.
"""
from mmdet.models.task_modules.assigners import AssignResult
from mmdet.models.task_modules.samplers import BaseSampler
from mmdet.registry import TASK_UTILS
from torch import Tensor


@TASK_UTILS.register_module()
class KeepAllSampler(BaseSampler):
    """Keep every positive (``gt_inds > 0``) and negative (``gt_inds == 0``)
    prior; priors the assigner ignores (``gt_inds == -1``) are dropped.

    Args:
        add_gt_as_proposals (bool): Prepend the gt boxes to the proposals as
            positives. Defaults to True.
    """

    def __init__(self, add_gt_as_proposals: bool = True, **kwargs) -> None:
        unknown = set(kwargs) - {'context'}  # heads pass context=self
        if unknown:
            # e.g. RandomSampler's num/pos_fraction merged in by a child
            # config: a budget this sampler would silently not apply
            raise TypeError(
                f'KeepAllSampler got unexpected arguments {sorted(unknown)}: '
                'it keeps every RoI the assigner does not ignore (replace '
                "the base sampler with dict(_delete_=True, type="
                "'KeepAllSampler'))")
        if not isinstance(add_gt_as_proposals, bool):
            raise ValueError('KeepAllSampler: add_gt_as_proposals must be '
                             'True or False, got add_gt_as_proposals='
                             f'{add_gt_as_proposals!r}')
        # num and pos_fraction only set the per-image budget that
        # _sample_pos/_sample_neg ignore here.
        super().__init__(
            num=0, pos_fraction=1.0, neg_pos_ub=-1,
            add_gt_as_proposals=add_gt_as_proposals)

    def _sample_pos(self, assign_result: AssignResult, num_expected: int,
                    **kwargs) -> Tensor:
        """All positive indices."""
        return assign_result.gt_inds.gt(0).nonzero(as_tuple=False).view(-1)

    def _sample_neg(self, assign_result: AssignResult, num_expected: int,
                    **kwargs) -> Tensor:
        """All negative indices."""
        return assign_result.gt_inds.eq(0).nonzero(as_tuple=False).view(-1)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}('
                f'add_gt_as_proposals={self.add_gt_as_proposals})')
