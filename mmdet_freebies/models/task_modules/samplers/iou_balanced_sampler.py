"""IoU-balanced sampling of Libra R-CNN, vectorised on the inputs' device.

Pang et al., "Libra R-CNN: Towards Balanced Learning for Object Detection",
CVPR 2019, Sec. 3.1, Eq. (1)-(2). The sampling semantics are those of mmdet's
``IoUBalancedNegSampler`` (negatives) and ``InstanceBalancedPosSampler``
(positives); the implementation is new and fixes their defects:

* no numpy, Python sets or loops over elements: the candidates are put in
  a random order (``randperm``), the first k of each group (IoU bin, gt
  instance) are taken by a running count, and a shortfall or surplus is
  settled by the top-k of random keys per tier ("taken / eligible / rest").
  The only host synchronisation is the ``nonzero`` that gathers the
  candidates, whose number sets the output size. The small constants (the
  one-hot's rows, the bins' fractions and edges, the tiers and the per-gt
  quotas as tables) are made once per device, not per image. The drawing
  runs in inference mode, and only the indices it selects leave it, as
  normal tensors;
* ``floor_thr`` is never mutated (mmdet's sets it from -1 to 0 on its first
  call, so that from the second image on the negatives at IoU 0 leave the
  bins and only fill a shortfall);
* the positive top-up cannot return duplicates (mmdet's takes a set
  difference of 0-d tensors, which compares by identity), so the counts are
  exact;
* the top IoU bin is closed and includes the maximum IoU;
* ``sample()`` does not call ``unique()`` on the indices, as mmdet's
  ``BaseSampler.sample`` does to hide its samplers' duplicates: it sorts
  both index sets and, on a GPU, synchronises the host twice more per image.
"""
import math
from typing import Tuple

import torch
from torch import Tensor

from mmdet.models.task_modules.assigners import AssignResult
from mmdet.models.task_modules.samplers import BaseSampler, SamplingResult
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import BaseBoxes, cat_boxes
from mmengine.structures import InstanceData

from ....utils.checks import is_int, is_real

# The drawing runs in inference mode: without autograd's and view tracking's
# dispatch, each of its ~20 small ops per side costs less (measured in
# docs/libra.md). Only the indices made from it leave, outside the mode, as
# normal tensors. ``torch.inference_mode()``'s Python wrapper costs most of
# that gain at this size, hence the class it wraps.
_InferenceMode = torch._C._InferenceMode


def _counts(groups: Tensor, rows: Tensor) -> Tensor:
    """Running count of each group, shape ``(len(rows), len(groups))``: row
    r, column i counts the ``groups[:i + 1]`` equal to r; ``groups`` (int64)
    in ``[0, len(rows))``, ``rows`` the column ``arange(len(rows))``.

    A running count of the one-hot membership, not a sort: sorting a few
    thousand random keys costs several times this on a CPU. The comparison
    writes int64 directly: a bool result takes a slower mixed-type kernel on
    a CPU, then a cast for the cumsum. ``shape[0]``, not ``len()``: a
    tensor's ``__len__`` is Python, ~2.5 us a call here.
    """
    counts = groups.new_empty((rows.shape[0], groups.numel()))
    return torch.eq(groups, rows, out=counts).cumsum_(1)


def _ranks(groups: Tensor, rows: Tensor) -> Tensor:
    """Rank (from 1) of each element within its group, counted in the order
    given (see :func:`_counts`). In a random order, the elements of rank <= k
    are a uniform random draw of k from their group."""
    return _counts(groups, rows).gather(0, groups.view(1, -1)).view(-1)


def _draw_from(candidates: Tensor, num: int, draw, context) -> Tensor:
    """Indices of the ``candidates`` (a mask), all of them when there are
    ``num`` or fewer, else the ``num`` that ``draw(context, indices, num)``
    picks: it runs in inference mode and returns the indices reordered and
    the positions drawn. The gathers either side run outside the mode, so
    that what is returned is a normal tensor, which autograd may save."""
    inds = torch.nonzero(candidates).view(-1)
    if inds.numel() <= num:
        return inds
    with _InferenceMode(True):
        inds, chosen = draw(context, inds, num)
    return inds.index_select(0, chosen)


def _first_by_tier(tiers: Tensor, num: int) -> Tensor:
    """Indices of the first ``num`` elements ordered by tier (0, 1, ...),
    uniformly at random inside a tier: all of tier 0, then a random part of
    tier 1, and so on. Keys are ``2 * tier + u``, u ~ U[0, 1), so that float
    rounding cannot lift a key into the next tier."""
    keys = torch.rand(
        tiers.numel(), device=tiers.device).add_(tiers, alpha=2)
    return keys.topk(min(num, keys.numel()), largest=False, sorted=False)[1]


@TASK_UTILS.register_module()
class IoUBalancedSampler(BaseSampler):
    """IoU-balanced negatives, optionally instance-balanced positives.

    Libra R-CNN (CVPR 2019), Sec. 3.1: hard negatives are rare under random
    sampling, so negatives are drawn evenly from ``num_bins`` IoU intervals
    (Eq. (2)). With ``floor_thr >= 0`` the negatives below it are drawn at
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
        floor_thr (float): IoU in [0, 1) below which negatives are
            sampled at random, 0 for the negatives at IoU exactly 0, -1 to
            balance all negatives. Defaults to -1.
        floor_fraction (float): Share of the negatives drawn below
            ``floor_thr``. Defaults to 0.
        num_bins (int): Number of IoU bins; the running count holds up to
            ``num_bins + 1`` int64 per negative, so hundreds of bins cost
            memory mmdet's loop does not. Defaults to 3.
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
            ('num', num, is_int(num) and num >= 1, 'an int >= 1'),
            ('pos_fraction', pos_fraction,
             is_real(pos_fraction) and 0 <= pos_fraction <= 1, 'in [0, 1]'),
            ('neg_pos_ub', neg_pos_ub, is_real(neg_pos_ub)
             and (0 <= neg_pos_ub < math.inf or neg_pos_ub == -1),
             'finite and >= 0, or -1'),
            # an IoU: at 1 or above every negative is under it, and the
            # sampling silently becomes random
            ('floor_thr', floor_thr, is_real(floor_thr)
             and (0 <= floor_thr < 1 or floor_thr == -1), 'in [0, 1) or -1'),
            ('floor_fraction', floor_fraction,
             is_real(floor_fraction) and 0 <= floor_fraction <= 1,
             'in [0, 1]'),
            ('num_bins', num_bins, is_int(num_bins) and num_bins >= 1,
             'an int >= 1'),
            ('add_gt_as_proposals', add_gt_as_proposals,
             isinstance(add_gt_as_proposals, bool), 'a bool'),
            ('instance_balanced_pos', instance_balanced_pos,
             isinstance(instance_balanced_pos, bool), 'a bool'),
        )
        for key, value, ok, expected in checks:
            if not ok:
                raise ValueError(f'IoUBalancedSampler: invalid {key}='
                                 f'{value!r}; expected {expected}')
        super().__init__(
            num=num,
            pos_fraction=pos_fraction,
            neg_pos_ub=neg_pos_ub,
            add_gt_as_proposals=add_gt_as_proposals)
        self.floor_thr = floor_thr
        self.floor_fraction = floor_fraction
        self.num_bins = num_bins
        self.instance_balanced_pos = instance_balanced_pos
        self._constants = {}

    def _constant(self, key, device: torch.device, make) -> Tensor:
        """``make(device)``, made once per device: an ``arange`` per image
        is one more kernel on the hot path. Made on the device, not
        copied there, because a copy from the host waits for the device."""
        value = self._constants.get((key, device))
        if value is None:
            value = self._constants[(key, device)] = make(device)
        return value

    def _rows(self, num: int, device: torch.device) -> Tensor:
        """The column ``arange(num)`` that :func:`_ranks` compares with, one
        per ``num`` (slicing a longer one costs about as much as making
        it)."""
        return self._constant(
            ('rows', num), device,
            lambda dev: torch.arange(num, device=dev).view(-1, 1))

    def _per_gt(self, num_expected: int, num_gts: int,
                device: torch.device) -> Tensor:
        """At index n = 1..num_gts, ``round(num_expected / n) + 1``: the
        positives kept per gt when n gts have any, as mmdet's
        ``InstanceBalancedPosSampler`` computes it. A table, so that the
        lookup is one ``take`` and no host synchronisation."""
        key = (('per_gt', num_expected), device)
        table = self._constants.get(key)
        if table is None or table.shape[0] <= num_gts:  # more gts than before
            n = torch.arange(num_gts + 1, device=device).clamp_(min=1)
            expected = torch.full_like(n, num_expected)
            quotient = expected.div(n, rounding_mode='floor')
            twice_rest = expected.remainder(n).mul_(2)
            # Python's round: half to even, here in integers (exact, and
            # no float64, which MPS lacks)
            up = (twice_rest > n) | ((twice_rest == n) & (quotient % 2 == 1))
            table = self._constants[key] = quotient + up + 1
        return table

    def sample(self, assign_result: AssignResult, pred_instances: InstanceData,
               gt_instances: InstanceData, **kwargs) -> SamplingResult:
        """Sample positives and negatives, as ``BaseSampler.sample``.

        mmdet's version passes both index sets through ``unique()``, which
        sorts them and, on a GPU, waits for the device twice per image. Ours
        are unique by construction, so this keeps everything else (gts added
        as proposals, ``neg_pos_ub``) and leaves ``unique()`` out; the
        indices come in random order, which the RoI head does not use.

        Args:
            assign_result (AssignResult): Assignment of the priors; the gts
                are added to it when ``add_gt_as_proposals``.
            pred_instances (InstanceData): Has ``priors``, shape (n, 4).
            gt_instances (InstanceData): Has ``bboxes`` and ``labels``.

        Returns:
            SamplingResult: The sampled positives and negatives.
        """
        gt_bboxes = gt_instances.bboxes
        priors = pred_instances.priors
        if len(priors.shape) < 2:
            priors = priors[None, :]
        gt_flags = priors.new_zeros((priors.shape[0], ), dtype=torch.uint8)
        if self.add_gt_as_proposals and len(gt_bboxes) > 0:
            gt_priors = gt_bboxes
            if isinstance(gt_bboxes, BaseBoxes) and isinstance(
                    priors, BaseBoxes):
                gt_priors = gt_bboxes.convert_to(type(priors))
            priors = cat_boxes([gt_priors, priors], dim=0)
            assign_result.add_gt_(gt_instances.labels)
            gt_flags = torch.cat([
                priors.new_ones(len(gt_priors), dtype=torch.uint8), gt_flags
            ])
        pos_inds = self._sample_pos(assign_result,
                                    int(self.num * self.pos_fraction))
        num_expected_neg = self.num - pos_inds.numel()
        if self.neg_pos_ub >= 0:
            num_expected_neg = min(
                num_expected_neg,
                int(self.neg_pos_ub * max(1, pos_inds.numel())))
        neg_inds = self._sample_neg(assign_result, num_expected_neg)
        return SamplingResult(
            pos_inds=pos_inds,
            neg_inds=neg_inds,
            priors=priors,
            gt_bboxes=gt_bboxes,
            assign_result=assign_result,
            gt_flags=gt_flags)

    def _sample_pos(self, assign_result: AssignResult, num_expected: int,
                    **kwargs) -> Tensor:
        """Unique indices of ``min(num_pos, num_expected)`` positives."""
        return _draw_from(assign_result.gt_inds > 0, num_expected,
                          self._draw_pos, assign_result)

    def _sample_neg(self, assign_result: AssignResult, num_expected: int,
                    **kwargs) -> Tensor:
        """Unique indices of ``min(num_neg, num_expected)`` negatives."""
        return _draw_from(assign_result.gt_inds == 0, num_expected,
                          self._draw_neg, assign_result.max_overlaps)

    def _draw_pos(self, assign_result: AssignResult, pos_inds: Tensor,
                  num_expected: int) -> Tuple[Tensor, Tensor]:
        """The positives ``pos_inds`` (more than ``num_expected``) in a
        random order, and the positions of the ``num_expected`` drawn."""
        gt_inds = assign_result.gt_inds
        device = gt_inds.device
        order = torch.randperm(pos_inds.numel(), device=device)
        if not self.instance_balanced_pos:
            return pos_inds, order[:num_expected]
        # in a random order, the first round(num_expected / instances) + 1
        # of each gt are a random draw of that many
        pos_inds = pos_inds.index_select(0, order)
        pos_gts = gt_inds.index_select(0, pos_inds)
        # rows 0..num_gts, row 0 (no gt) empty: gt_inds index them as they are
        counts = _counts(pos_gts,
                         self._rows(assign_result.num_gts + 1, device))
        try:
            ranks = counts.gather(0, pos_gts.view(1, -1)).view(-1)
        # caught, not checked: a check would cost a reduction per image (a
        # sync on a GPU, where the bad index is a device-side assert instead)
        except (IndexError, RuntimeError) as error:
            raise ValueError(
                'IoUBalancedSampler: assign_result.gt_inds holds gt index '
                f'{int(pos_gts.max())} but num_gts={assign_result.num_gts}'
            ) from error
        per_gt = self._per_gt(num_expected, assign_result.num_gts,
                              device).take(
                                  counts.select(1, -1).count_nonzero())
        over = ranks > per_gt
        # trim to num_expected at random, or top up from the rest at random
        return pos_inds, _first_by_tier(over, num_expected)

    def _draw_neg(self, iou: Tensor, neg_inds: Tensor,
                  num_expected: int) -> Tuple[Tensor, Tensor]:
        """The negatives ``neg_inds`` (more than ``num_expected``) in a
        random order, and the positions of the ``num_expected`` drawn;
        ``iou`` the max IoU of every proposal."""
        device = iou.device
        neg_inds = neg_inds.index_select(
            0, torch.randperm(neg_inds.numel(), device=device))
        neg_iou = iou.index_select(0, neg_inds)
        num_balanced = int(num_expected * (1 - self.floor_fraction))
        quota = num_balanced // self.num_bins
        if self.floor_thr < 0:  # every negative is balanced
            # bins split [0, max IoU] evenly, the maximum over all proposals
            # as in mmdet, closed at the top so that it is in the last bin
            fractions = self._constant(
                ('fractions', self.num_bins), device,
                lambda dev: torch.arange(1, self.num_bins, device=dev) /
                self.num_bins)
            bins = torch.bucketize(neg_iou, fractions * iou.max(), right=True)
            # 1. up to `quota` from each bin: the first in the random order;
            # 2. the shortfall at random from the rest
            over = _ranks(bins, self._rows(self.num_bins, device)) > quota
            return neg_inds, _first_by_tier(over, num_expected)
        # one bucketize gives every negative its group: 0 IoU < 0, 1 the
        # floor (under floor_thr, or at IoU 0 when it is 0), 2.. the bins
        bins = torch.bucketize(neg_iou, self._floor_edges(iou), right=True)
        # 1. up to `quota` from each bin, as above (groups 0 and 1 as well,
        # whose ranks are not used)
        over = _ranks(bins, self._rows(self.num_bins + 2, device)) > quota
        group_over = torch.add(over, bins, alpha=2)  # 2 * group + over
        if num_balanced == num_expected:
            # 2. the shortfall at random from the balanced rest, then from
            # negatives under floor_thr, then from any negative
            return neg_inds, _first_by_tier(
                self._tiers(3, 2, device).take(group_over), num_expected)
        # 2. the bins' shortfall at random from the balanced rest ...
        first = _first_by_tier(
            self._tiers(2, 2, device).take(group_over),
            num_balanced)
        taken = (bins > 1) & torch.zeros_like(over).index_fill_(
            0, first, True)
        # 3. ... and the floor_fraction share from negatives under floor_thr,
        # then from any negative, at random
        tiers = torch.where(taken, 0, 2 - (bins == 1).long())
        return neg_inds, _first_by_tier(tiers, num_expected)

    def _floor_edges(self, iou: Tensor) -> Tensor:
        """Bucket edges for ``floor_thr >= 0``: ``[0, floor, e_1, ...,
        e_{num_bins - 1}]``, the e_i splitting ``[floor_thr, max IoU]``
        evenly. ``floor`` is ``floor_thr``, or when it is 0 the smallest
        positive float, so that IoU 0 is the floor and any IoU above it is
        in a bin. A clamp keeps them sorted, as ``bucketize`` needs, when no
        negative can be in a bin: the maximum IoU under ``floor_thr``, or 0
        with ``floor_thr=0``."""
        low = self.floor_thr
        # in the IoUs' dtype, as comparing them with floor_thr would be
        dtype = iou.dtype

        def make(dev):
            zero = torch.zeros((), dtype=dtype)
            floor = low or torch.nextafter(zero, zero + 1).item()
            # [0, floor, low, ...] and [0, floor, floor, ...]
            offsets, least = (torch.full(
                (self.num_bins + 1, ), rest, dtype=dtype, device=dev)
                for rest in (low, floor))
            offsets[:2] = least[:2] = floor
            offsets[0] = least[0] = 0
            fractions = torch.arange(
                -1, self.num_bins, dtype=dtype, device=dev).clamp_(min=0)
            return offsets, fractions / self.num_bins, least

        offsets, fractions, least = self._constant(
            ('floor_edges', low, self.num_bins, dtype), iou.device, make)
        span = iou.max() - low if low else iou.max()
        return torch.addcmul(offsets, fractions, span).clamp_(min=least)

    def _tiers(self, other: int, floor: int,
               device: torch.device) -> Tensor:
        """Tier (a float, for :func:`_first_by_tier`'s keys) at index
        ``2 * group + over``: ``other`` for group 0 (IoU < 0), ``floor`` for
        group 1, then for each bin 0 in its quota and 1 over it."""
        def make(dev):
            table = torch.arange(2 * self.num_bins + 4, device=dev) % 2
            table = table.float()
            table[:2], table[2:4] = other, floor
            return table

        return self._constant(('tiers', other, floor, self.num_bins),
                              device, make)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num={self.num}, '
                f'pos_fraction={self.pos_fraction}, '
                f'neg_pos_ub={self.neg_pos_ub}, '
                f'add_gt_as_proposals={self.add_gt_as_proposals}, '
                f'floor_thr={self.floor_thr}, '
                f'floor_fraction={self.floor_fraction}, '
                f'num_bins={self.num_bins}, '
                f'instance_balanced_pos={self.instance_balanced_pos})')
