"""IoU-balanced sampling of Libra R-CNN, vectorised on the inputs' device.

Pang et al., "Libra R-CNN: Towards Balanced Learning for Object Detection",
CVPR 2019, Sec. 3.1, Eq. (2)-(3). The sampling semantics are those of mmdet's
``IoUBalancedNegSampler`` (negatives) and ``InstanceBalancedPosSampler``
(positives); the implementation is new and fixes their defects:

* no numpy, Python sets or loops: every draw sorts (or takes the top-k of)
  random keys within groups (IoU bins, gt instances, "taken / eligible /
  rest" tiers), so the only host synchronisation is the final ``nonzero``
  that every mmdet sampler pays;
* ``floor_thr`` is never mutated (mmdet's sets it from -1 to 0 on its first
  call, which changes the bins of all later calls);
* the positive top-up cannot return duplicates (mmdet's takes a set
  difference of 0-d tensors, which compares by identity), so the counts are
  exact;
* the top IoU bin is closed and includes the maximum IoU.
"""
from typing import Union

import torch
from torch import Tensor

from mmdet.models.task_modules.assigners import AssignResult
from mmdet.models.task_modules.samplers import BaseSampler
from mmdet.registry import TASK_UTILS


def _random_keys(groups: Tensor) -> Tensor:
    """Sort keys that order elements by group, uniformly at random inside a
    group (float64: ties between the random parts are negligible)."""
    return groups + torch.rand(
        groups.shape, dtype=torch.float64, device=groups.device)


def _group_sizes(groups: Tensor, num_groups: int) -> Tensor:
    """Number of elements in each of ``num_groups`` groups (no host sync,
    unlike ``bincount`` on CUDA)."""
    return torch.zeros(
        num_groups, dtype=torch.long, device=groups.device).scatter_add_(
            0, groups, torch.ones_like(groups))


def _take_per_group(groups: Tensor, sizes: Tensor,
                    quota: Union[int, Tensor]) -> Tensor:
    """Mask of ``quota`` elements drawn uniformly at random from each group
    (the whole group when it is smaller).

    Args:
        groups (Tensor): Group of each element, int64 in [0, len(sizes)).
        sizes (Tensor): Number of elements in each group.
        quota (int | Tensor): Elements wanted per group.
    """
    order = _random_keys(groups).argsort()
    start = sizes.cumsum(0) - sizes
    rank = torch.arange(groups.numel(), device=groups.device) - \
        start.index_select(0, groups.index_select(0, order))
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(
        0, order, rank < quota)


def _take_first(tiers: Tensor, num: int) -> Tensor:
    """Mask of the first ``num`` elements ordered by tier, uniformly at random
    inside a tier: all of tier 0, then a random part of tier 1, and so on."""
    mask = torch.zeros_like(tiers, dtype=torch.bool)
    num = max(0, min(num, tiers.numel()))
    mask[_random_keys(tiers).topk(num, largest=False, sorted=False)[1]] = True
    return mask


@TASK_UTILS.register_module()
class IoUBalancedSampler(BaseSampler):
    """IoU-balanced negatives, optionally instance-balanced positives.

    Libra R-CNN (CVPR 2019), Sec. 3.1: hard negatives are rare under random
    sampling, so negatives are drawn evenly from ``num_bins`` IoU intervals
    (Eq. (3)). With ``floor_thr >= 0`` the negatives below it are drawn at
    random for a ``floor_fraction`` share. A shortfall in any bin is filled
    at random from the negatives left. The bins split
    ``[max(floor_thr, 0), max IoU]`` evenly, the maximum being taken over all
    proposals as mmdet does.

    A drop-in replacement for mmdet's ``RandomSampler``,
    ``IoUBalancedNegSampler`` and ``CombinedSampler(InstanceBalancedPosSampler,
    IoUBalancedNegSampler)``; randomness comes from torch's generator of the
    inputs' device, so ``torch.manual_seed`` makes a run repeatable.

    Args:
        num (int): Number of samples per image.
        pos_fraction (float): Fraction of positives.
        neg_pos_ub (int): Upper bound of negatives per positive, -1 for
            none. Defaults to -1.
        add_gt_as_proposals (bool): Add the gt boxes as proposals.
            Defaults to True.
        floor_thr (float): IoU below which negatives are sampled at random,
            -1 to balance all negatives. Defaults to -1.
        floor_fraction (float): Share of the negatives drawn below
            ``floor_thr``. Defaults to 0.
        num_bins (int): Number of IoU bins. Defaults to 3.
        instance_balanced_pos (bool): Draw about the same number of
            positives per gt instance (``round(wanted / gts) + 1``,
            then trim or top up at random), as mmdet's
            ``InstanceBalancedPosSampler``. Defaults to False.
    """

    def __init__(self,
                 num: int,
                 pos_fraction: float,
                 neg_pos_ub: int = -1,
                 add_gt_as_proposals: bool = True,
                 floor_thr: float = -1,
                 floor_fraction: float = 0,
                 num_bins: int = 3,
                 instance_balanced_pos: bool = False,
                 **kwargs) -> None:
        unknown = set(kwargs) - {'context'}  # heads pass context=self
        if unknown:
            raise TypeError(f'IoUBalancedSampler got unexpected arguments '
                            f'{sorted(unknown)}')
        checks = (
            ('num', num, isinstance(num, int) and num >= 0),
            ('pos_fraction', pos_fraction, 0 <= pos_fraction <= 1),
            ('floor_thr', floor_thr, floor_thr >= 0 or floor_thr == -1),
            ('floor_fraction', floor_fraction, 0 <= floor_fraction <= 1),
            ('num_bins', num_bins, isinstance(num_bins, int)
             and num_bins >= 1),
        )
        for key, value, ok in checks:
            if not ok:
                raise ValueError(f'IoUBalancedSampler: invalid {key}='
                                 f'{value!r}; expected num an int >= 0, '
                                 'pos_fraction and floor_fraction in [0, 1], '
                                 'floor_thr >= 0 or -1, num_bins an int >= 1')
        super().__init__(
            num=num,
            pos_fraction=pos_fraction,
            neg_pos_ub=neg_pos_ub,
            add_gt_as_proposals=add_gt_as_proposals)
        self.floor_thr = floor_thr
        self.floor_fraction = floor_fraction
        self.num_bins = num_bins
        self.instance_balanced_pos = instance_balanced_pos

    def _sample_pos(self, assign_result: AssignResult, num_expected: int,
                    **kwargs) -> Tensor:
        """Sorted indices of ``min(num_pos, num_expected)`` positives."""
        return self.pos_mask(assign_result, num_expected).nonzero()[:, 0]

    def _sample_neg(self, assign_result: AssignResult, num_expected: int,
                    **kwargs) -> Tensor:
        """Sorted indices of ``min(num_neg, num_expected)`` negatives."""
        return self.neg_mask(assign_result, num_expected).nonzero()[:, 0]

    def pos_mask(self, assign_result: AssignResult,
                 num_expected: int) -> Tensor:
        """Boolean mask of the sampled positives, without host sync."""
        gt_inds = assign_result.gt_inds
        pos = gt_inds > 0
        if not self.instance_balanced_pos or assign_result.num_gts == 0:
            return pos & _take_first((~pos).long(), num_expected)
        # 1. a random round(num_expected / num_instances) + 1 per instance
        num_gts = assign_result.num_gts
        groups = torch.where(pos, gt_inds - 1, num_gts)
        sizes = _group_sizes(groups, num_gts + 1)
        num_instances = (sizes[:num_gts] > 0).sum().clamp(min=1)
        per_gt = torch.round(num_expected / num_instances) + 1
        taken = pos & _take_per_group(groups, sizes, per_gt)
        # 2. trim to num_expected at random, or top up from the rest at random
        # (tiers: 0 taken, 1 other positives, 2 the rest)
        return pos & _take_first(2 - pos.long() - taken.long(), num_expected)

    def neg_mask(self, assign_result: AssignResult,
                 num_expected: int) -> Tensor:
        """Boolean mask of the sampled negatives, without host sync."""
        iou = assign_result.max_overlaps
        neg = assign_result.gt_inds == 0
        if iou.numel() == 0:
            return neg
        if self.floor_thr > 0:
            floor = neg & (iou >= 0) & (iou < self.floor_thr)
            balanced = neg & (iou >= self.floor_thr)
        elif self.floor_thr == 0:
            floor = neg & (iou == 0)
            balanced = neg & (iou > 0)
        else:
            floor = torch.zeros_like(neg)
            balanced = neg
        num_balanced = int(num_expected * (1 - self.floor_fraction))
        # 1. up to num_balanced // num_bins at random from each IoU bin,
        # bins closed at the top so that the maximum IoU is in the last one
        low = max(self.floor_thr, 0)
        steps = torch.arange(1, self.num_bins, device=iou.device,
                             dtype=iou.dtype)
        edges = low + steps * ((iou.max() - low) / self.num_bins)
        bins = (iou[:, None] >= edges).sum(1)  # (bucketize is slow on CPU)
        groups = torch.where(balanced, bins, self.num_bins)
        taken = balanced & _take_per_group(
            groups, _group_sizes(groups, self.num_bins + 1),
            num_balanced // self.num_bins)
        neg_ = neg.long()
        if num_balanced == num_expected:
            # 2. fill the shortfall at random from the balanced rest, then
            # from negatives under floor_thr, then from any negative
            # (tiers: 0 taken, 1 balanced, 2 floor, 3 other negatives)
            tiers = 4 - neg_ - 2 * balanced.long() - floor.long() - taken.long()
            return neg & _take_first(tiers, num_expected)
        # 2. fill the bins' shortfall at random from the balanced rest ...
        taken = balanced & _take_first(
            2 - balanced.long() - taken.long(), num_balanced)
        # 3. ... and the floor_fraction share from negatives under floor_thr,
        # then from any negative, at random
        tiers = 3 - neg_ - floor.long() - 2 * taken.long()
        return neg & _take_first(tiers, num_expected)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num={self.num}, '
                f'pos_fraction={self.pos_fraction}, '
                f'neg_pos_ub={self.neg_pos_ub}, '
                f'add_gt_as_proposals={self.add_gt_as_proposals}, '
                f'floor_thr={self.floor_thr}, '
                f'floor_fraction={self.floor_fraction}, '
                f'num_bins={self.num_bins}, '
                f'instance_balanced_pos={self.instance_balanced_pos})')
