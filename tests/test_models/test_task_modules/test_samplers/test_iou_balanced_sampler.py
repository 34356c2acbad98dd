"""IoUBalancedSampler: exact counts, no duplicates, the reference's
distribution, and the defects of mmdet's samplers that it fixes."""
import copy
import re
import warnings

import pytest
import torch
from mmengine.config import Config
from mmengine.structures import InstanceData
from mmdet.models.losses import BalancedL1Loss
from mmdet.models.task_modules import AssignResult
from mmdet.models.task_modules.samplers import BaseSampler
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.testing import demo_mm_inputs

from mmdet_freebies.models.losses import FusedBalancedL1Loss
from mmdet_freebies.models.task_modules.samplers import IoUBalancedSampler
from mmdet_freebies.utils.toy import apply_toy


class Case:
    """A fixed assignment of proposals to gts (1-based, 0 negative, -1
    ignored) with their max IoUs, and placeholder boxes."""

    def __init__(self, gt_inds, ious, num_gts, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.gt_inds, self.ious, self.num_gts = gt_inds, ious, num_gts
        self.labels = torch.where(gt_inds > 0, gt_inds % 3, -1)
        xy = torch.rand(gt_inds.numel(), 2, generator=g) * 50
        self.pred = InstanceData(priors=torch.cat([xy, xy + 10], 1))
        self.gt = InstanceData(
            bboxes=torch.tensor([[0., 0., 10., 10.]]).repeat(num_gts, 1),
            labels=torch.arange(num_gts) % 3)

    @classmethod
    def make(cls, pos_per_gt, neg_ious, num_ignored=0, seed=0):
        """Positives per gt at IoU in [0.5, 0.95), then negatives at
        ``neg_ious``, then ignored proposals."""
        g = torch.Generator().manual_seed(seed)
        gt_inds = [i + 1 for i, n in enumerate(pos_per_gt) for _ in range(n)]
        num_pos = len(gt_inds)
        neg_ious = torch.as_tensor(neg_ious, dtype=torch.float32)
        gt_inds = torch.tensor(
            gt_inds + [0] * len(neg_ious) + [-1] * num_ignored,
            dtype=torch.long)
        ious = torch.cat([
            0.5 + 0.45 * torch.rand(num_pos, generator=g), neg_ious,
            0.45 * torch.rand(num_ignored, generator=g)])
        return cls(gt_inds, ious, len(pos_per_gt), seed)

    def assign_result(self):
        return AssignResult(self.num_gts, self.gt_inds.clone(),
                            self.ious.clone(), self.labels.clone())

    def draw(self, sampler, seed):
        """Sample once; returns the result and the (gt-augmented) IoUs."""
        torch.manual_seed(seed)
        result = self.assign_result()
        sampling = sampler.sample(result, self.pred, self.gt)
        return sampling, result.max_overlaps


def _neg_ious(seed=0):
    """560 negatives skewed to low IoU, as behind an RPN: 150 at exactly 0,
    250 below 0.05, 100 in [0.05, 0.3), 60 in [0.3, 0.5)."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([
        torch.zeros(150), 0.05 * torch.rand(250, generator=g),
        0.05 + 0.25 * torch.rand(100, generator=g),
        0.3 + 0.2 * torch.rand(60, generator=g)])


def _ours(**kwargs):
    return TASK_UTILS.build(dict(type='IoUBalancedSampler', **kwargs))


def _reference(num, pos_fraction, floor_thr=-1, floor_fraction=0,
               num_bins=3, **kwargs):
    return TASK_UTILS.build(
        dict(
            type='CombinedSampler',
            num=num,
            pos_fraction=pos_fraction,
            pos_sampler=dict(type='InstanceBalancedPosSampler'),
            neg_sampler=dict(
                type='IoUBalancedNegSampler',
                floor_thr=floor_thr,
                floor_fraction=floor_fraction,
                num_bins=num_bins),
            **kwargs))


def _neg_histogram(sampler, case, draws, reset_floor_thr=None):
    hist = torch.zeros(10)
    for seed in range(draws):
        if reset_floor_thr is not None:  # undo mmdet's mutation per draw
            sampler.neg_sampler.floor_thr = reset_floor_thr
        sampling, ious = case.draw(sampler, seed)
        hist += torch.histc(ious[sampling.neg_inds], bins=10, min=0, max=0.5)
    return hist / hist.sum()


# Over 80 draws of 213 negatives the largest bin difference between ours and
# mmdet's is ~0.002 (sampling noise); random sampling differs by 0.1-0.2.
HIST_TOL = 0.02
DRAWS = 80


@pytest.mark.parametrize('floor_thr,floor_fraction,num_bins', [
    (-1, 0, 3),  # Libra's config: mmdet's first call, the paper's code
    (0, 0, 3),
    (0.05, 0.5, 2),
    (0.05, 0.25, 2),  # unequal shares: a swapped floor_fraction shows
    (-1, 0, 1),  # one bin: plain random sampling of negatives
])
def test_negative_iou_histogram_matches_reference(floor_thr, floor_fraction,
                                                  num_bins):
    case = Case.make([30, 8, 2], _neg_ious(), num_ignored=10)
    cfg = dict(num=256, pos_fraction=0.25, floor_thr=floor_thr,
               floor_fraction=floor_fraction, num_bins=num_bins)
    ours = _neg_histogram(_ours(**cfg), case, DRAWS)
    ref = _neg_histogram(_reference(**cfg), case, DRAWS,
                         reset_floor_thr=floor_thr)
    assert (ours - ref).abs().max() < HIST_TOL, (ours, ref)
    if num_bins > 1:  # the test tells balanced from random sampling
        random = _neg_histogram(_ours(num=256, pos_fraction=0.25,
                                      num_bins=1), case, 20)
        assert (random - ref).abs().max() > 2.5 * HIST_TOL


def test_floor_thr_zero_reproduces_mmdet_after_its_first_image():
    """mmdet's sampler built with floor_thr=-1 (the Libra config) runs its
    floor_thr=0 branch from the second image on: the negatives at IoU 0
    leave the bins. Ours with floor_thr=0 draws as that; ours with -1 keeps
    them in the bottom bin, and samples them, as -1 is documented."""
    case = Case.make([30, 8, 2], _neg_ious(), num_ignored=10)
    cfg = dict(num=256, pos_fraction=0.25, floor_fraction=0, num_bins=3)
    ref = _reference(floor_thr=-1, **cfg)
    case.draw(ref, 0)  # its first image turns floor_thr into 0
    assert ref.neg_sampler.floor_thr == 0
    ref_hist = _neg_histogram(ref, case, DRAWS)
    zero = _neg_histogram(_ours(floor_thr=0, **cfg), case, DRAWS)
    assert (zero - ref_hist).abs().max() < HIST_TOL, (zero, ref_hist)
    minus_one = _neg_histogram(_ours(floor_thr=-1, **cfg), case, DRAWS)
    # the first histogram bin, IoU [0, 0.05), holds the 150 at IoU 0
    assert minus_one[0] > ref_hist[0] + 2.5 * HIST_TOL, (minus_one, ref_hist)


# 4 IoU bins over [0.05, 0.44] with floor_thr=0.05: the edges of the
# floor and of each bin, for torch.histogram
FOUR_BIN_EDGES = torch.tensor([0, 0.05, 0.1475, 0.245, 0.3425, 0.45])


def _four_bin_case(per_bin):
    """300 negatives under 0.05, then ``per_bin`` negatives inside each of
    the 4 bins, then one at the maximum IoU 0.44 (the top bin)."""
    g = torch.Generator().manual_seed(0)
    spans = ((0.06, 0.14), (0.16, 0.24), (0.26, 0.33), (0.35, 0.43))
    ious = [0.05 * torch.rand(300, generator=g)]
    ious += [low + (high - low) * torch.rand(n, generator=g)
             for n, (low, high) in zip(per_bin, spans)]
    return Case.make([], torch.cat(ious + [torch.tensor([0.44])]))


def _neg_counts(sampling, ious):
    """Sampled negatives under floor_thr and in each of the 4 bins."""
    return torch.histogram(ious[sampling.neg_inds], FOUR_BIN_EDGES)[0]


def test_floor_share_and_bin_quotas_are_exact():
    """floor_thr=0.05, floor_fraction=0.5, 4 bins over [0.05, 0.44], 256
    negatives wanted: 128 from under floor_thr and int(128 / 4) = 32 from
    each bin, as mmdet's IoUBalancedNegSampler takes them; every bin has
    more than 32, so the counts are exact on every draw."""
    case = _four_bin_case([40, 60, 100, 35])
    cfg = dict(num=256, pos_fraction=0.25, add_gt_as_proposals=False,
               floor_thr=0.05, floor_fraction=0.5, num_bins=4)
    for sampler in (_ours(**cfg), _reference(**cfg)):
        for seed in range(5):
            if hasattr(sampler, 'neg_sampler'):  # undo mmdet's mutation
                sampler.neg_sampler.floor_thr = 0.05
            sampling, ious = case.draw(sampler, seed)
            _check_counts(sampling, 0, 256)
            assert _neg_counts(sampling, ious).tolist() == [
                128, 32, 32, 32, 32], sampler


def test_cached_bin_fractions_follow_num_bins():
    """The bins' fractions are made once per device and number of bins: a
    sampler that drew with 2 bins and is then set to 4 takes 4 bins."""
    case = _four_bin_case([40, 60, 100, 35])
    sampler = _ours(num=256, pos_fraction=0.25, add_gt_as_proposals=False,
                    floor_thr=0.05, floor_fraction=0.5, num_bins=2)
    case.draw(sampler, 0)
    sampler.num_bins = 4
    assert _neg_counts(*case.draw(sampler, 1)).tolist() == [
        128, 32, 32, 32, 32]


def test_floor_share_and_bin_quotas_round_down():
    """257 wanted, floor_fraction=0.3: int(179.9) = 179 balanced, 179 // 4
    = 44 per bin and 78 under floor_thr. Three bins hold 45, so the 3 left
    come (almost always) from the big bottom bin; rounding either number
    up would change the floor count or even out the bins."""
    case = _four_bin_case([1000, 45, 45, 44])  # the 0.44 makes 45 on top
    sampler = _ours(num=257, pos_fraction=0.25, add_gt_as_proposals=False,
                    floor_thr=0.05, floor_fraction=0.3, num_bins=4)
    bottom = 0.0
    for seed in range(20):
        counts = _neg_counts(*case.draw(sampler, seed))
        assert counts[0] == 78 and (counts[1:] >= 44).all(), counts
        bottom += counts[1].item() / 20
    assert bottom > 46.5


def test_neg_pos_ub_counts_one_positive_when_there_is_none():
    """mmdet bounds the negatives by neg_pos_ub * max(1, positives)."""
    sampler = _ours(num=64, pos_fraction=0.5, neg_pos_ub=2)
    sampling, _ = Case.make([], _neg_ious()).draw(sampler, 0)
    _check_counts(sampling, 0, 2)


def _positives_per_gt(case, **cfg):
    """Mean positives per gt over DRAWS seeded draws, ours (instance
    balanced) and mmdet's InstanceBalancedPosSampler."""
    means = []
    for sampler in (_ours(instance_balanced_pos=True, **cfg),
                    _reference(**cfg)):
        counts = torch.zeros(case.num_gts)
        for seed in range(DRAWS):
            sampling, _ = case.draw(sampler, seed)
            counts += torch.bincount(sampling.pos_assigned_gt_inds,
                                     minlength=case.num_gts)
        means.append(counts / DRAWS)
    return means


def test_instance_balanced_positives_match_reference():
    """Trimming case (4 gts, 5 per gt > 16 wanted): the mean number of
    positives per gt over many draws matches InstanceBalancedPosSampler."""
    means = _positives_per_gt(Case.make([30, 14, 5, 3], _neg_ious()[:100]),
                              num=32, pos_fraction=0.5)
    # round(16 / 4) + 1 = 5 per gt, 19 in all, 16 kept at random
    torch.testing.assert_close(means[0], means[1], atol=0.2, rtol=0)
    torch.testing.assert_close(means[0], torch.tensor([5., 5., 5., 4.]) *
                               16 / 19, atol=0.2, rtol=0)


def test_per_gt_quota_counts_only_gts_with_positives():
    """Gts without positives (add_gt_as_proposals=False) do not share the
    quota: round(16 / 3) + 1 = 6 per gt among the 3 with positives, as
    mmdet's InstanceBalancedPosSampler counts them."""
    means = _positives_per_gt(
        Case.make([30, 14, 10, 0, 0, 0], _neg_ious()[:100]), num=32,
        pos_fraction=0.5, add_gt_as_proposals=False)
    torch.testing.assert_close(means[0], means[1], atol=0.3, rtol=0)
    assert means[0][3:].sum() == 0


def test_gt_index_above_num_gts_is_named():
    """An assignment whose gt_inds point past num_gts (a broken assigner)
    fails with the key and both values, not a bare gather error."""
    case = Case.make([6, 2], _neg_ious()[:20])
    result = case.assign_result()
    result.gt_inds[0] = 3
    with pytest.raises(ValueError, match=r'gt_inds holds gt index 3 but '
                       r'num_gts=2'):
        _ours(num=8, pos_fraction=0.5, instance_balanced_pos=True
              )._sample_pos(result, 4)


def test_positive_top_up_is_exact_and_unique():
    """3 gts with 31, 9 and 3 positives (gts included), 32 wanted:
    round(32 / 3) + 1 = 12 per gt gives 24, topped up to 32 from gt 1.
    mmdet's top-up is a set difference of tensors (compared by identity), so
    it re-draws sampled indices and ends up short after ``unique``."""
    case = Case.make([30, 8, 2], _neg_ious()[:100])
    ours = _ours(num=64, pos_fraction=0.5, instance_balanced_pos=True)
    ref = _reference(num=64, pos_fraction=0.5)
    ref_counts = []
    for seed in range(10):
        sampling, _ = case.draw(ours, seed)
        per_gt = torch.bincount(sampling.pos_assigned_gt_inds, minlength=3)
        assert sampling.pos_inds.numel() == 32
        assert sampling.pos_inds.unique().numel() == 32
        assert per_gt[1:].tolist() == [9, 3] and per_gt[0] == 20
        ref_counts.append(case.draw(ref, seed)[0].pos_inds.numel())
    assert min(ref_counts) < 32  # the reference's defect


def _check_counts(sampling, num_pos, num_neg):
    assert sampling.pos_inds.numel() == num_pos
    assert sampling.neg_inds.numel() == num_neg
    for inds in (sampling.pos_inds, sampling.neg_inds):
        assert inds.unique().numel() == inds.numel()


def test_empty_bin_is_filled_from_the_others():
    """No negative in the middle bin [0.15, 0.3): its quota of 30 goes to
    the other bins, the count stays exact."""
    ious = torch.cat([torch.linspace(0, 0.12, 200), torch.full((5, ), 0.4)])
    case = Case.make([], ious)
    sampler = _ours(num=90, pos_fraction=0.25, add_gt_as_proposals=False)
    for seed in range(5):
        sampling, all_ious = case.draw(sampler, seed)
        _check_counts(sampling, 0, 90)
        # max IoU 0.4 -> bins [0, .133), [.133, .267), [.267, .4]: the 5
        # high negatives are all in the top bin, under its quota of 30
        assert (all_ious[sampling.neg_inds] == 0.4).sum() == 5


def test_every_negative_of_a_bin_is_equally_likely():
    """150 negatives in the bottom bin, 40 in the top one, none in the
    middle: each bin gives its quota of 30, and the middle bin's 30 are drawn
    from the 130 left (120 + 10), so a bottom negative is sampled with
    probability (30 + 30 * 120 / 130) / 150 and a top one with
    (30 + 30 * 10 / 130) / 40, whatever its index or place in the order."""
    g = torch.Generator().manual_seed(0)
    ious = torch.cat([0.1 * torch.rand(150, generator=g),
                      0.2 + 0.1 * torch.rand(40, generator=g)])
    ious[-1] = 0.3  # bins [0, .1), [.1, .2), [.2, .3]
    case = Case.make([], ious)
    sampler = _ours(num=90, pos_fraction=0.25, add_gt_as_proposals=False)
    draws = 400
    hits = torch.zeros(190)
    for seed in range(draws):
        sampling, _ = case.draw(sampler, seed)
        hits[sampling.neg_inds] += 1
    freq = hits / draws
    expected = torch.cat([
        torch.full((150, ), (30 + 30 * 120 / 130) / 150),
        torch.full((40, ), (30 + 30 * 10 / 130) / 40)])
    # per negative: binomial(400, p), std <= 0.025; per bin mean: the
    # hypergeometric split, std < 0.002
    assert (freq - expected).abs().max() < 0.125
    torch.testing.assert_close(
        torch.stack([freq[:150].mean(), freq[150:].mean()]),
        torch.stack([expected[0], expected[-1]]), atol=0.008, rtol=0)


def test_top_bin_includes_the_max_iou():
    """mmdet's bins are [lo, hi), so the proposal at the maximum IoU is only
    reached by the random top-up. Ours closes the top bin, so that proposal,
    alone in it, is sampled every time."""
    ious = torch.cat([torch.rand(300) * 0.1, torch.tensor([0.45])])
    case = Case.make([], ious)
    ours = _ours(num=30, pos_fraction=0.25, add_gt_as_proposals=False)
    ref = _reference(num=30, pos_fraction=0.25, add_gt_as_proposals=False)
    hits = {'ours': 0, 'ref': 0}
    for seed in range(30):
        ref.neg_sampler.floor_thr = -1
        for name, sampler in (('ours', ours), ('ref', ref)):
            sampling, _ = case.draw(sampler, seed)
            hits[name] += int(300 in sampling.neg_inds.tolist())
    assert hits['ours'] == 30
    assert hits['ref'] < 15  # reached at random only: 30 draws of 20 / 301


def test_fewer_negatives_than_requested_returns_all():
    case = Case.make([3], torch.rand(20) * 0.5)
    sampling, _ = case.draw(_ours(num=64, pos_fraction=0.25), 0)
    _check_counts(sampling, 4, 20)
    assert sampling.neg_inds.tolist() == list(range(4, 24))


def test_no_ground_truths():
    """An image without gts: every proposal is a negative at IoU 0."""
    case = Case.make([], torch.zeros(300))
    sampler = _ours(num=128, pos_fraction=0.25, instance_balanced_pos=True)
    sampling, _ = case.draw(sampler, 0)
    _check_counts(sampling, 0, 128)
    assert sampling.num_gts == 0


def test_all_proposals_ignored():
    """Every proposal ignored (gt_inds -1): only the added gts are
    sampled, as positives."""
    case = Case.make([], torch.zeros(0), num_ignored=50)
    case.num_gts = 2  # two gts, added as proposals
    case.gt = InstanceData(bboxes=torch.tensor([[0., 0., 10., 10.]] * 2),
                           labels=torch.tensor([0, 1]))
    for instance_balanced_pos in (False, True):
        sampling, _ = case.draw(_ours(
            num=16, pos_fraction=0.25,
            instance_balanced_pos=instance_balanced_pos), 0)
        _check_counts(sampling, 2, 0)
        assert sorted(sampling.pos_inds.tolist()) == [0, 1]


def test_no_proposals():
    case = Case.make([], torch.zeros(0))
    sampling, _ = case.draw(_ours(num=128, pos_fraction=0.25,
                                  add_gt_as_proposals=False), 0)
    _check_counts(sampling, 0, 0)


@pytest.mark.parametrize('cfg,num_neg', [
    (dict(neg_pos_ub=1), 4),  # at most one negative per positive
    (dict(neg_pos_ub=0), 0),
    (dict(floor_thr=0.1, floor_fraction=1), 60),  # all under floor_thr
    (dict(floor_thr=0, floor_fraction=0.5, num_bins=1), 60),
    (dict(num_bins=100), 60),  # quota 0 per bin: all from the top-up
])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16,
                                   torch.float64, torch.bfloat16])
def test_counts_at_the_edges_of_the_arguments(cfg, num_neg, dtype):
    """3 positives + 1 gt added, 560 negatives: the counts mmdet's
    BaseSampler.sample asks for, with IoUs in each float dtype."""
    case = Case.make([3], _neg_ious())
    case.ious = case.ious.to(dtype)
    cfg = dict(dict(num=64, pos_fraction=0.25), **cfg)
    for instance_balanced_pos in (False, True):
        sampler = _ours(instance_balanced_pos=instance_balanced_pos, **cfg)
        sampling, ious = case.draw(sampler, 0)
        _check_counts(sampling, min(4, int(cfg['num'] * 0.25)), num_neg)
        if cfg.get('floor_fraction') == 1:
            assert ious[sampling.neg_inds].max() < 0.1


def _groups_drawn(neg_ious, num, num_bins=1, **cfg):
    """How many of each negative IoU one draw takes (no gts)."""
    case = Case.make([], torch.zeros(len(neg_ious)))
    case.ious = neg_ious
    sampling, ious = case.draw(
        _ours(num=num, pos_fraction=0.25, add_gt_as_proposals=False,
              num_bins=num_bins, **cfg), 0)
    drawn = ious[sampling.neg_inds]
    return [int((drawn == v).sum()) for v in neg_ious.unique().tolist()]


@pytest.mark.parametrize('floor_thr', [0, 0.05])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16,
                                   torch.float64, torch.bfloat16])
def test_bins_then_floor_then_negative_ious_as_torch_compares(floor_thr,
                                                              dtype):
    """With floor_thr >= 0 the negatives are taken from the bins (IoU >=
    floor_thr, or > 0 when it is 0), then the floor (0 <= IoU < floor_thr,
    or IoU 0), then IoU < 0 (in neither of mmdet's sets). At the
    boundaries the groups are those of torch comparing the IoUs, in their
    dtype, with floor_thr: 4 IoUs just under it, 4 at it (floor_thr=0:
    at 0 and at the smallest positive float)."""
    zero = torch.zeros((), dtype=dtype)
    if floor_thr:
        at = torch.tensor(floor_thr, dtype=dtype)
        under = torch.nextafter(at, zero)
    else:
        at, under = torch.nextafter(zero, torch.ones((), dtype=dtype)), zero
    neg_ious = torch.stack([zero - 1, under, at]).repeat_interleave(4)
    assert ((neg_ious >= floor_thr) if floor_thr else neg_ious > 0).tolist() \
        == [False] * 8 + [True] * 4
    # counts of IoU -1, under, at; a bin's quota of 6 or 10
    assert _groups_drawn(neg_ious, 6, floor_thr=floor_thr) == [0, 2, 4]
    assert _groups_drawn(neg_ious, 10, floor_thr=floor_thr) == [2, 4, 4]


def test_no_bin_when_every_iou_is_under_floor_thr():
    """Max IoU 0.3 under floor_thr=0.5: the edges of 3 bins over [0.5, 0.3]
    would fall below floor_thr, out of order; the IoUs are still the floor
    and IoU < 0 comes last."""
    neg_ious = torch.tensor([-1.] * 4 + [0.3] * 8)
    assert _groups_drawn(neg_ious, 10, num_bins=3, floor_thr=0.5) == [2, 8]


@pytest.mark.parametrize('instance_balanced_pos', [False, True])
def test_counts_exact_and_unique_on_random_assignments(instance_balanced_pos):
    """2000 proposals, 1 to 50 gts, 512 samples: exactly
    min(available, wanted) positives and negatives, no duplicates."""
    g = torch.Generator().manual_seed(0)
    sampler = _ours(num=512, pos_fraction=0.25, add_gt_as_proposals=False,
                    instance_balanced_pos=instance_balanced_pos)
    for _ in range(10):
        num_gts = int(torch.randint(1, 51, (1, ), generator=g))
        gt_inds = torch.randint(-1, num_gts + 1, (2000, ), generator=g)
        gt_inds[torch.rand(2000, generator=g) < 0.8] = 0
        case = Case(gt_inds, torch.rand(2000, generator=g) * 0.5, num_gts)
        sampling, _ = case.draw(sampler, 0)
        num_pos = min(int((gt_inds > 0).sum()), 128)
        _check_counts(sampling, num_pos,
                      min(int((gt_inds == 0).sum()), 512 - num_pos))


def test_floor_thr_is_not_mutated_and_draws_repeat():
    case = Case.make([10, 5], _neg_ious())
    sampler = _ours(num=128, pos_fraction=0.25)
    first, _ = case.draw(sampler, 7)
    assert sampler.floor_thr == -1
    again, _ = case.draw(sampler, 7)
    assert torch.equal(first.neg_inds, again.neg_inds)
    assert torch.equal(first.pos_inds, again.pos_inds)
    other, _ = case.draw(sampler, 8)
    assert not torch.equal(first.neg_inds, other.neg_inds)


def test_per_gt_quota_is_rounded_not_floored():
    """3 gts with 31, 12 and 6 positives (gts included), 32 wanted:
    round(32 / 3) + 1 = 12 per gt gives 12 + 12 + 6 = 30, and the 2 left
    can only come from gt 1, so every draw is (14, 12, 6). A floored quota
    (11) would top up 4 from gt 1 and gt 2 at random."""
    case = Case.make([30, 11, 5], _neg_ious()[:100])
    sampler = _ours(num=64, pos_fraction=0.5, instance_balanced_pos=True)
    for seed in range(20):
        sampling, _ = case.draw(sampler, seed)
        assert torch.bincount(sampling.pos_assigned_gt_inds,
                              minlength=3).tolist() == [14, 12, 6]


def test_per_gt_quota_rounds_like_python():
    """14 gts with 10 positives each, 91 wanted: round(91 / 14) + 1 = 7 per
    gt (Python rounds 6.5 to even, as mmdet does), so no gt ever gives 8.
    ``91 / tensor(14)`` is 91 * float32(1 / 14), which rounds to 7."""
    case = Case.make([10] * 14, _neg_ious()[:100])
    sampler = _ours(num=182, pos_fraction=0.5, add_gt_as_proposals=False,
                    instance_balanced_pos=True)
    most = 0
    for seed in range(20):
        sampling, _ = case.draw(sampler, seed)
        assert sampling.pos_inds.numel() == 91
        most = max(most, int(torch.bincount(
            sampling.pos_assigned_gt_inds).max()))
    assert most == 7


def test_per_gt_table_is_pythons_round():
    """The per-gt quotas come from a table made with integer tensor ops;
    each entry is Python's round(E / n) + 1, halves to even."""
    sampler = _ours(num=8, pos_fraction=0.5, instance_balanced_pos=True)
    for wanted in range(700):
        table = sampler._per_gt(wanted, 300, torch.device('cpu'))
        assert table[1:].tolist() == [
            round(wanted / n) + 1 for n in range(1, 301)], wanted


def test_per_gt_quota_is_right_whatever_came_before():
    """The sampler keeps the quota table between images, one per number
    wanted, and makes it longer for an image with more gts than before."""
    three = Case.make([30, 11, 5], _neg_ious()[:10]).assign_result
    many = Case.make([10] * 14, _neg_ious()[:10]).assign_result
    sampler = _ours(num=8, pos_fraction=0.5, instance_balanced_pos=True)
    for seed in range(5):
        torch.manual_seed(seed)
        # round(32 / 3) + 1 = 12 per gt: 12 + 11 + 5, and 4 more from gt 1
        assert torch.bincount(three().gt_inds[sampler._sample_pos(
            three(), 32)]).tolist() == [0, 16, 11, 5]
        # round(91 / 14) + 1 = 7 per gt: 98, trimmed at random to 91
        per_gt = torch.bincount(many().gt_inds[sampler._sample_pos(
            many(), 91)])
        assert per_gt.sum() == 91 and per_gt.max() == 7
        # round(32 / 14) + 1 = 3 per gt: 42, trimmed to 32 (the table for
        # 32 wanted grows from 4 entries to 15)
        per_gt = torch.bincount(many().gt_inds[sampler._sample_pos(
            many(), 32)])
        assert per_gt.sum() == 32 and per_gt.max() == 3


@pytest.mark.parametrize('cfg,pos_per_gt,boxes', [
    (dict(instance_balanced_pos=True), [30, 8, 2], False),
    (dict(instance_balanced_pos=True), [30, 8, 2], True),  # box types
    (dict(add_gt_as_proposals=False), [30, 8, 2], False),
    (dict(neg_pos_ub=2), [3, 2], False),  # 7 positives cap negatives at 14
    (dict(), [], False),  # no gts: no positives, nothing added
])
def test_sample_is_base_sample_without_unique(cfg, pos_per_gt, boxes):
    """``sample()`` draws what mmdet's ``BaseSampler.sample`` draws from the
    same seed, field by field, only not sorted by ``unique()``."""
    case = Case.make(pos_per_gt, _neg_ious())
    if boxes:
        case.pred.priors = HorizontalBoxes(case.pred.priors)
        case.gt.bboxes = HorizontalBoxes(case.gt.bboxes)
    sampler = _ours(num=64, pos_fraction=0.5, **cfg)
    for seed in range(3):
        ours, _ = case.draw(sampler, seed)
        torch.manual_seed(seed)
        ref = BaseSampler.sample(sampler, case.assign_result(), case.pred,
                                 case.gt)
        assert ours.pos_inds.numel() == ref.pos_inds.numel() == min(
            sum(pos_per_gt) + len(pos_per_gt) * (
                sampler.add_gt_as_proposals), 32)
        for side in ('pos', 'neg'):
            order = getattr(ours, f'{side}_inds').argsort()
            fields = ['inds', 'priors'] + (
                ['is_gt', 'assigned_gt_inds', 'gt_labels', 'gt_bboxes']
                if side == 'pos' else [])
            for field in fields:
                name = f'{side}_{field}'
                mine, theirs = getattr(ours, name)[order], getattr(ref, name)
                assert type(mine) is type(theirs), name
                if boxes and isinstance(mine, HorizontalBoxes):
                    mine, theirs = mine.tensor, theirs.tensor
                assert torch.equal(mine, theirs), name
        assert ours.neg_inds.numel() == ref.neg_inds.numel() == (
            14 if cfg.get('neg_pos_ub') else 64 - ours.pos_inds.numel())
        assert (ours.num_gts, ours.avg_factor) == (ref.num_gts,
                                                   ref.avg_factor)
    # random order: mmdet's unique() would have sorted them
    assert not torch.equal(ours.neg_inds, ours.neg_inds.sort()[0])


@pytest.mark.parametrize('cfg', [
    dict(instance_balanced_pos=True),
    dict(instance_balanced_pos=False),
    dict(floor_thr=0),
    dict(floor_thr=0.05, floor_fraction=0.5),
])
@pytest.mark.parametrize('pos_per_gt,neg_ious', [
    ([30, 8, 2], _neg_ious()),  # more than wanted on both sides: drawn
    ([3, 2], [0.1, 0.2]),  # fewer: all returned
])
def test_indices_are_normal_tensors_for_autograd(cfg, pos_per_gt, neg_ious):
    """The drawing runs in inference mode; what it returns must not be an
    inference tensor, which autograd refuses to save and which cannot be
    changed in place outside the mode."""
    case = Case.make(pos_per_gt, neg_ious)
    sampling, ious = case.draw(_ours(num=64, pos_fraction=0.5, **cfg), 0)
    for name, value in vars(sampling).items():
        if isinstance(value, torch.Tensor):
            assert not value.is_inference(), name
    scores = torch.rand(len(ious), requires_grad=True)  # one per proposal
    scores[sampling.pos_inds].sum().backward()  # saves the index
    assert scores.grad.sum() == sampling.pos_inds.numel()
    scores.grad = None
    scores[sampling.neg_inds].sum().backward()
    assert scores.grad.sum() == sampling.neg_inds.numel()
    sampling.pos_inds.add_(0)
    sampling.neg_inds.add_(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('cfg', [
    dict(), dict(floor_thr=0), dict(floor_thr=0.05, floor_fraction=0.5)])
def test_one_host_synchronisation_per_draw_on_cuda(cfg):
    """Only the nonzero that gathers the candidates synchronises, in each
    branch of the negatives; mmdet's samplers round-trip through numpy."""
    case = Case.make([10, 5], _neg_ious())
    result = AssignResult(case.num_gts, case.gt_inds.cuda(),
                          case.ious.cuda(), case.labels.cuda())
    sampler = _ours(num=128, pos_fraction=0.25, instance_balanced_pos=True,
                    **cfg)
    torch.cuda.set_sync_debug_mode('warn')
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            neg = sampler._sample_neg(result, 100)
            pos = sampler._sample_pos(result, 10)  # 15 positives: balanced
    finally:
        torch.cuda.set_sync_debug_mode('default')
    syncs = [w for w in caught if 'synchroniz' in str(w.message)]
    assert len(syncs) == 2, [str(w.message) for w in syncs]
    assert neg.numel() == 100 and pos.numel() == 10
    # the whole sample() too: BaseSampler.sample's unique() would add two
    pred = InstanceData(priors=case.pred.priors.cuda())
    gt = InstanceData(bboxes=case.gt.bboxes.cuda(),
                      labels=case.gt.labels.cuda())
    torch.cuda.set_sync_debug_mode('warn')
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            sampling = sampler.sample(result, pred, gt)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    syncs = [w for w in caught if 'synchroniz' in str(w.message)]
    assert len(syncs) == 2, [str(w.message) for w in syncs]
    assert sampling.pos_inds.numel() == 17  # 15 + the 2 gts


@pytest.mark.parametrize('key,value', [
    ('floor_thr', -0.5), ('floor_thr', '0.1'), ('floor_thr', 1.0),
    ('floor_thr', 5.0), ('floor_fraction', 1.5),
    ('num_bins', 0), ('num_bins', True), ('pos_fraction', 2.0), ('num', -1),
    ('num', 0),  # an RoI head that would train on nothing
    ('neg_pos_ub', -2),
    ('neg_pos_ub', float('inf')),  # mmdet's: OverflowError at the first draw
    ('add_gt_as_proposals', 'yes'),
    ('instance_balanced_pos', 'no')])
def test_bad_arguments_fail_at_build(key, value):
    cfg = dict(type='IoUBalancedSampler', num=512, pos_fraction=0.25)
    cfg[key] = value
    with pytest.raises(ValueError, match=re.escape(f'{key}={value!r}')):
        TASK_UTILS.build(cfg)


def test_unknown_argument_fails_and_context_is_accepted():
    with pytest.raises(TypeError, match='floor_thres'):
        _ours(num=512, pos_fraction=0.25, floor_thres=0.1)
    _ours(num=512, pos_fraction=0.25, context=object())


def test_repr():
    assert repr(_ours(num=512, pos_fraction=0.25, num_bins=4)) == (
        'IoUBalancedSampler(num=512, pos_fraction=0.25, neg_pos_ub=-1, '
        'add_gt_as_proposals=True, floor_thr=-1, floor_fraction=0, '
        'num_bins=4, instance_balanced_pos=False)')


def _toy_model(cfg):
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_faster_rcnn_libra_trains_and_loads_into_mmdet(toy_cfg, tmp_path,
                                                      toy_data_root):
    """One loss step on toy inputs, then the weights load strictly into
    mmdet's own Libra config and predict the same boxes, scores and labels
    (no inference cost)."""
    model = _toy_model(toy_cfg('faster_rcnn_libra.py'))
    assert isinstance(model.roi_head.bbox_sampler, IoUBalancedSampler)
    assert isinstance(model.roi_head.bbox_head.loss_bbox, FusedBalancedL1Loss)
    packed = demo_mm_inputs(2, [[3, 64, 64], [3, 64, 64]], num_items=[3, 1],
                            num_classes=4)
    data = model.data_preprocessor(copy.deepcopy(packed), True)
    losses = model.loss(data['inputs'], data['data_samples'])
    assert torch.isfinite(losses['loss_bbox']) and losses['loss_bbox'] > 0

    base = tmp_path / 'mmdet_libra.py'
    base.write_text("_base_ = 'mmdet::libra_rcnn/"
                    "libra-faster-rcnn_r50_fpn_1x_coco.py'\n")
    ref = _toy_model(apply_toy(Config.fromfile(str(base)), 'tiny',
                               toy_data_root))
    assert type(ref.roi_head.bbox_sampler).__name__ == 'CombinedSampler'
    assert type(ref.roi_head.bbox_head.loss_bbox) is BalancedL1Loss
    ref.load_state_dict(model.state_dict(), strict=True)
    model.eval(), ref.eval()
    data = model.data_preprocessor(copy.deepcopy(packed), False)
    with torch.no_grad():
        ours = model.predict(data['inputs'], data['data_samples'])
        theirs = ref.predict(data['inputs'], data['data_samples'])
    for a, b in zip(ours, theirs):
        assert len(a.pred_instances) == 100  # the comparison is not empty
        for key in ('bboxes', 'scores', 'labels'):
            torch.testing.assert_close(a.pred_instances[key],
                                       b.pred_instances[key])


def test_faster_rcnn_iou_balanced_config(toy_cfg):
    cfg = toy_cfg('faster_rcnn_iou_balanced.py')
    sampler = TASK_UTILS.build(cfg.model.train_cfg.rcnn.sampler)
    assert isinstance(sampler, IoUBalancedSampler)
    assert (sampler.num, sampler.pos_fraction, sampler.num_bins) == (512,
                                                                     0.25, 3)
    # only the sampler changes: the rest is the biased baseline
    base = toy_cfg('faster_rcnn_biased.py')
    assert cfg.model.roi_head == base.model.roi_head
    assert cfg.model.neck == base.model.neck
