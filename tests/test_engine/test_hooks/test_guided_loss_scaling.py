"""GuidedLossScaling: the ratio arithmetic, its edge cases, the groups per
detector, and the promise that the model stays the plain detector."""
import logging
import math
import types
import warnings

import numpy as np
import pytest
import torch
from mmengine.model import BaseModel

from mmdet_freebies.engine.hooks import guided_loss_scaling as gls_mod
from mmdet_freebies.engine.hooks.guided_loss_scaling import (
    GuidedLossScaler, GuidedLossScaling, preset_group)

from helpers import json_per_rank


def t(x, grad=False):
    return torch.tensor(float(x), requires_grad=grad)


def scaler(*presets, **kw):
    keys = kw.pop('keys', None)
    return GuidedLossScaler(
        [preset_group(p, loss_keys=keys, **kw) for p in presets])


def test_scaled_cls_equals_reg_and_ratio_is_detached():
    cls = t(2.0, grad=True)
    out = scaler('dense')(dict(loss_cls=cls, loss_bbox=t(0.5)))
    assert out['loss_cls'].item() == pytest.approx(0.5)
    assert out['gls_ratio_cls'].item() == pytest.approx(0.25)
    assert not out['gls_ratio_cls'].requires_grad
    out['loss_cls'].backward()
    # d(r * L_cls)/dL_cls = r: the ratio carries no gradient.
    assert cls.grad.item() == pytest.approx(0.25)


def test_per_level_lists_are_summed_before_the_ratio():
    cls = [t(1.0), t(3.0)]
    out = scaler('dense')(dict(loss_cls=cls, loss_bbox=[t(0.5), t(1.5)]))
    # r = (0.5 + 1.5) / (1 + 3); the list structure is kept.
    assert out['gls_ratio_cls'].item() == pytest.approx(0.5)
    assert [v.item() for v in out['loss_cls']] == pytest.approx([0.5, 1.5])


def test_parse_losses_sums_scaled_losses_but_not_the_ratio():
    out = scaler('dense')(dict(loss_cls=t(4.0), loss_bbox=t(0.3)))
    total, log_vars = BaseModel.parse_losses(None, out)
    assert total.item() == pytest.approx(0.6)  # L_reg + r * L_cls
    assert log_vars['gls_ratio_cls'].item() == pytest.approx(0.075)


def test_a_batch_without_positives_drops_its_classification_loss():
    """As the official 2020 code (w = 0): a ratio carried over from an
    earlier batch would meet an L_cls that mmdet normalises by the number of
    images, not of positives, when there are none (a spike)."""
    s = scaler('dense')
    out = s(dict(loss_cls=t(3.0), loss_bbox=t(0.0)))
    assert out['loss_cls'].item() == 0 and out['gls_ratio_cls'].item() == 0
    s(dict(loss_cls=t(2.0), loss_bbox=t(0.5)))  # r = 0.25
    for cls, reg in ((3.0, 0.0), (0.0, 0.0), (0.0, 1.0), (math.inf, 1.0)):
        out = s(dict(loss_cls=t(cls), loss_bbox=t(reg)))
        assert out['gls_ratio_cls'].item() == 0, (cls, reg)
        assert out['loss_cls'].item() == 0 or cls == math.inf
    total, _ = BaseModel.parse_losses(
        None, s(dict(loss_cls=t(0.0), loss_bbox=t(0.0))))
    assert total.item() == 0 and not torch.isnan(total)
    # the next batch with positives has its own ratio again
    out = s(dict(loss_cls=t(4.0), loss_bbox=t(1.0)))
    assert out['gls_ratio_cls'].item() == pytest.approx(0.25)


def test_a_frozen_ratio_applies_to_a_batch_without_positives():
    """The 2021 code freezes the ratio and applies it to every batch."""
    s = GuidedLossScaler([preset_group('dense')], freeze_after=1)
    s(dict(loss_cls=t(2.0), loss_bbox=t(0.5)))  # frozen at 0.25
    out = s(dict(loss_cls=t(3.0), loss_bbox=t(0.0)))
    assert out['gls_ratio_cls'].item() == pytest.approx(0.25)
    assert out['loss_cls'].item() == pytest.approx(0.75)


def test_roi_group_is_doubled_and_rpn_has_its_own_ratio():
    s = scaler('rpn', 'roi')
    out = s(dict(loss_rpn_cls=t(10.0), loss_rpn_bbox=[t(0.1), t(0.1)],
                 loss_cls=t(1.0), loss_bbox=t(0.3), acc=t(90.0)))
    assert out['gls_ratio_rpn'].item() == pytest.approx(0.02)
    assert out['loss_rpn_cls'].item() == pytest.approx(0.2)
    assert out['gls_ratio_roi'].item() == pytest.approx(0.6)
    assert out['loss_cls'].item() == pytest.approx(2 * 0.3)
    assert out['acc'].item() == 90.0  # untouched


def test_yolov3_cls_and_conf_guided_by_xy_plus_wh():
    out = scaler('yolov3')(dict(loss_cls=[t(1.0)], loss_conf=[t(3.0)],
                                loss_xy=[t(0.5)], loss_wh=[t(1.5)]))
    assert out['gls_ratio_cls'].item() == pytest.approx(0.5)
    assert out['loss_cls'][0].item() == pytest.approx(0.5)
    assert out['loss_conf'][0].item() == pytest.approx(1.5)


@pytest.mark.parametrize('guide,quality,expected', [
    ('mean', 'loss_centerness', (0.4 + 0.6) / 2 / 2.0),
    ('mean', 'loss_iou', (0.4 + 0.6) / 2 / 2.0),
    ('bbox', 'loss_centerness', 0.4 / 2.0),
])
def test_dense_guide_bbox_or_mean_with_quality_loss(guide, quality,
                                                    expected):
    losses = {'loss_cls': [t(2.0)], 'loss_bbox': [t(0.4)], quality: [t(0.6)]}
    out = scaler('dense', guide=guide, keys=list(losses))(losses)
    assert out['gls_ratio_cls'].item() == pytest.approx(expected)
    assert out[quality][0].item() == pytest.approx(0.6)  # not scaled


def test_amp_half_losses_give_float32_ratio():
    out = scaler('dense')(dict(loss_cls=torch.tensor(3.0, dtype=torch.half),
                               loss_bbox=torch.tensor(0.1,
                                                      dtype=torch.bfloat16)))
    assert out['gls_ratio_cls'].dtype == torch.float32
    assert out['loss_cls'].item() == pytest.approx(0.1, rel=1e-2)


def test_a_half_loss_with_dimensions_is_scaled_in_float32():
    """A 0-d float32 ratio alone would leave a half entry with dimensions
    in half precision, where a scaled loss of 1e5 overflows (max 65504)."""
    out = scaler('dense')(dict(
        loss_cls=torch.full((2, ), 0.5, dtype=torch.half) * 1e-3,
        loss_bbox=t(1e5)))
    assert out['loss_cls'].dtype == torch.float32
    torch.testing.assert_close(out['loss_cls'], torch.full((2, ), 1e5),
                               rtol=1e-3, atol=0)


def test_freeze_after_uses_mean_of_valid_warmup_ratios():
    s = GuidedLossScaler([preset_group('dense')], freeze_after=3)
    for reg in (0.2, 0.0, 0.4):  # the zero-positive batch is not averaged
        s(dict(loss_cls=t(1.0), loss_bbox=t(reg)))
    assert s.frozen['cls'].item() == pytest.approx(0.3)
    out = s(dict(loss_cls=t(2.0), loss_bbox=t(5.0)))
    assert out['gls_ratio_cls'].item() == pytest.approx(0.3)


def test_a_group_without_a_valid_warmup_ratio_freezes_at_its_first(
        monkeypatch):
    """A box loss ramped up from weight 0: freezing the fallback 0 would
    drop the classification loss for the rest of training."""
    logged = []
    monkeypatch.setattr(gls_mod, 'print_log', lambda msg, **kwargs:
                        logged.append((msg, kwargs.get('level'))))
    s = GuidedLossScaler([preset_group('dense')], freeze_after=2)
    for _ in range(2):
        out = s(dict(loss_cls=t(1.0), loss_bbox=t(0.0)))
        assert out['loss_cls'].item() == 0  # the official fallback
    assert s.frozen == {}
    assert logged == [(
        "GuidedLossScaling: no valid ratio for ['cls'] in the first 2 "
        'iterations (a regression loss of 0 throughout); their '
        'classification loss is dropped until the first valid ratio, which '
        'they then freeze at', logging.WARNING)]
    out = s(dict(loss_cls=t(1.0), loss_bbox=t(0.5)))
    assert s.frozen['cls'].item() == pytest.approx(0.5)
    out = s(dict(loss_cls=t(1.0), loss_bbox=t(3.0)))
    assert out['gls_ratio_cls'].item() == pytest.approx(0.5)


def test_frozen_ratios_restored_on_the_cpu_follow_the_losses_device():
    """A resumed run restores the frozen ratios as CPU tensors; with a
    group still per iteration they are stacked with the ratios of the
    losses' device (``meta`` standing in for CUDA here)."""
    groups = [preset_group('rpn'), preset_group('dense')]
    old = GuidedLossScaler(groups, freeze_after=1)
    old(dict(loss_rpn_cls=t(1.0), loss_rpn_bbox=t(0.2), loss_cls=t(1.0),
             loss_bbox=t(0.3)))
    resumed = GuidedLossScaler(groups, freeze_after=1)
    resumed.load_state_dict(old.state_dict())
    meta = {k: torch.ones((), device='meta') for k in (
        'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox')}
    assert resumed.compute_ratios(meta).device.type == 'meta'


def test_freeze_after_keeps_the_rpn_and_roi_ratios_per_iteration():
    """As the 2021 code: only the dense head's ratio freezes."""
    s = GuidedLossScaler([preset_group('rpn'), preset_group('dense')],
                         freeze_after=2)
    for reg in (0.2, 0.4):
        s(dict(loss_rpn_cls=t(1.0), loss_rpn_bbox=t(reg), loss_cls=t(1.0),
               loss_bbox=t(reg)))
    assert list(s.frozen) == ['cls']
    out = s(dict(loss_rpn_cls=t(1.0), loss_rpn_bbox=t(5.0),
                 loss_cls=t(1.0), loss_bbox=t(5.0)))
    assert out['gls_ratio_cls'].item() == pytest.approx(0.3)
    assert out['gls_ratio_rpn'].item() == pytest.approx(5.0)
    # two-stage presets only: nothing would freeze
    with pytest.warns(UserWarning, match='freeze_after=100 has no effect'):
        GuidedLossScaler([preset_group('rpn'), preset_group('roi')],
                         freeze_after=100)
    # an explicit group can opt out too, and says so with a bool
    with pytest.raises(ValueError, match="freeze must be True or False"):
        GuidedLossScaler([dict(name='x', cls=['a'], reg=['b'],
                               freeze='no')])


def test_sync_averages_valid_ratios_over_ranks(monkeypatch):
    other = {}

    def fake_all_reduce(stats, op='sum'):
        assert op == 'sum'
        stats += torch.stack([other['ratio'], other['valid']])

    monkeypatch.setattr(gls_mod, 'get_world_size', lambda: 2)
    monkeypatch.setattr(gls_mod, 'all_reduce', fake_all_reduce)
    s = GuidedLossScaler([preset_group('dense')], sync=True)
    other.update(ratio=torch.tensor([0.75]), valid=torch.tensor([1.]))
    out = s(dict(loss_cls=t(4.0), loss_bbox=t(1.0)))  # this rank: 0.25
    assert out['gls_ratio_cls'].item() == pytest.approx(0.5)
    # This rank has no positives: it drops its cls loss, whatever the
    # other rank's ratio.
    other.update(ratio=torch.tensor([0.35]), valid=torch.tensor([1.]))
    out = s(dict(loss_cls=t(4.0), loss_bbox=t(0.0)))
    assert out['gls_ratio_cls'].item() == 0
    # It counts in no mean: the other rank's 0.35 alone.
    other.update(ratio=torch.tensor([0.]), valid=torch.tensor([0.]))
    out = s(dict(loss_cls=t(4.0), loss_bbox=t(1.4)))
    assert out['gls_ratio_cls'].item() == pytest.approx(0.35)


@pytest.mark.parametrize('cls,reg', [(0.0, 1.0), (0.0, 0.0),
                                     (math.inf, 1.0)])
def test_sync_leaves_out_a_rank_whose_ratio_is_not_finite(monkeypatch, cls,
                                                         reg):
    """L_cls = 0 (ratio inf), 0 / 0 or an infinite L_cls on this rank:
    it sends a ratio of 0 and a count of 0 (nothing non-finite is summed
    into the other rank's mean) and drops its own cls loss."""
    sent = []

    def fake_all_reduce(stats, op='sum'):
        sent.append(stats.clone())
        stats.add_(torch.tensor([[0.5], [1.0]]))

    monkeypatch.setattr(gls_mod, 'get_world_size', lambda: 2)
    monkeypatch.setattr(gls_mod, 'all_reduce', fake_all_reduce)
    out = GuidedLossScaler([preset_group('dense')], sync=True)(
        dict(loss_cls=t(cls), loss_bbox=t(reg)))
    assert torch.equal(sent[0], torch.zeros(2, 1))
    assert out['gls_ratio_cls'].item() == 0


def _detector(**losses):
    """A model whose forward returns ``losses``, with an RoI head."""
    model = torch.nn.Module()
    model.with_roi_head = True
    model.forward = lambda mode='tensor': dict(losses)
    return model


def test_the_hooks_sync_and_roi_factor_reach_the_scaler(monkeypatch):
    monkeypatch.setattr(gls_mod, 'get_world_size', lambda: 2)
    monkeypatch.setattr(gls_mod, 'all_reduce', lambda stats, op='sum': (
        stats.add_(torch.tensor([[0.75], [1.0]]))))
    model = _detector(loss_cls=t(4.0), loss_bbox=t(1.0))
    GuidedLossScaling(groups=['dense'], sync=True).attach(model)
    # this rank's 0.25 and the other's 0.75
    assert model(mode='loss')['gls_ratio_cls'].item() == pytest.approx(0.5)
    model = _detector(loss_cls=t(1.0), loss_bbox=t(0.3))
    GuidedLossScaling(groups=['roi'], roi_factor=3.0).attach(model)
    out = model(mode='loss')
    assert out['gls_ratio_roi'].item() == pytest.approx(0.9)
    assert out['loss_cls'].item() == pytest.approx(0.9)


def test_roi_factor_without_a_roi_head_is_an_error():
    """groups='auto' picks the groups from the model at attach: a one-stage
    detector has no RoI group to take roi_factor."""
    model = _detector(loss_cls=t(1.0), loss_bbox=t(0.3))
    model.with_roi_head = False
    model.bbox_head = torch.nn.Module()
    with pytest.raises(ValueError, match="roi_factor=3.0 has no effect: "
                       "groups='auto' \\(\\['dense'\\] for"):
        GuidedLossScaling(roi_factor=3.0).attach(model)
    GuidedLossScaling(roi_factor=2.0).attach(model)  # the default: no error


def test_guide_without_a_dense_head_is_an_error():
    """Only the 'dense' preset reads guide: a two-stage detector's auto
    groups do not."""
    model = _detector(loss_cls=t(1.0), loss_bbox=t(0.3))
    model.with_rpn = True
    with pytest.raises(ValueError, match="guide='bbox' has no effect: "
                       "groups='auto' \(\['rpn', 'roi'\] for"):
        GuidedLossScaling(guide='bbox').attach(model)
    GuidedLossScaling(guide='mean').attach(model)  # the default: no error


def test_a_loss_tensor_is_meaned_as_parse_losses_does():
    out = scaler('dense')(dict(loss_cls=torch.tensor([1.0, 3.0]),
                               loss_bbox=t(1.0)))
    assert out['gls_ratio_cls'].item() == pytest.approx(0.5)


_RANK_FREEZES = """
import json, sys
import torch, torch.distributed as dist
from mmdet_freebies.engine.hooks.guided_loss_scaling import (
    GuidedLossScaler, preset_group)

dist.init_process_group('gloo')
rank = dist.get_rank()
s = GuidedLossScaler([preset_group('dense')], freeze_after=2)  # sync=False
first, second = ((0.2, 0.4), (0.6, 0.8))[rank]  # warm-up means 0.3, 0.7
s(dict(loss_cls=torch.tensor(1.0), loss_bbox=torch.tensor(first)))
# --resume from the checkpoint rank 0 saved after the first iteration
state = [s.state_dict()]
dist.broadcast_object_list(state, src=0)
resumed = GuidedLossScaler([preset_group('dense')], freeze_after=2)
resumed.load_state_dict(state[0])
for scaler in (s, resumed):
    scaler(dict(loss_cls=torch.tensor(1.0), loss_bbox=torch.tensor(second)))
json.dump([float(s.frozen['cls']), float(resumed.frozen['cls'])],
          open(sys.argv[1] + str(rank), 'w'))
dist.destroy_process_group()
"""


_RANK_SYNCS = """
import json, math, sys
import torch, torch.distributed as dist
from mmdet_freebies.engine.hooks.guided_loss_scaling import (
    GuidedLossScaler, preset_group)

dist.init_process_group('gloo')
rank = dist.get_rank()
s = GuidedLossScaler([preset_group('dense')], sync=True)
out = []
# L_reg / L_cls per rank: 0.25 and 0.75; then rank 1 has no positives
# (L_reg 0) or an infinite L_reg, invalid; then neither rank is valid
for reg in ((1.0, 3.0), (0.5, 0.0), (2.0, math.inf), (0.0, 0.0)):
    cls = torch.tensor(4.0, requires_grad=True)
    losses = s(dict(loss_cls=cls, loss_bbox=torch.tensor(reg[rank])))
    losses['loss_cls'].backward()
    out.append([float(losses['gls_ratio_cls']), float(cls.grad)])
json.dump(out, open(sys.argv[1] + str(rank), 'w'))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_sync_averages_the_valid_ratios_of_real_ranks(tmp_path):
    """``sync=True`` over 2 gloo processes: both ranks scale by the mean of
    the valid ratios, (0.25 + 0.75) / 2; a rank with no positives or with
    an infinite L_reg drops its cls loss and is left out of the mean (rank
    0 keeps its own 0.125, then 0.5); with no valid rank both drop it. The
    ratio is a constant to autograd: the gradient of the scaled L_cls is
    the ratio."""
    rank0 = [[0.5, 0.5], [0.125, 0.125], [0.5, 0.5], [0.0, 0.0]]
    rank1 = [[0.5, 0.5], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    assert json_per_rank(_RANK_SYNCS, tmp_path) == [
        [pytest.approx(row) for row in rank] for rank in (rank0, rank1)]


@pytest.mark.slow
def test_frozen_ratio_is_the_mean_over_ranks_without_sync(tmp_path):
    """2 gloo processes with different warm-up ratios and ``sync=False``:
    both freeze the mean over all ranks' warm-up ratios, (0.2 + 0.4 + 0.6 +
    0.8) / 4 = 0.5, so the ranks agree. Per-rank means would give 0.3 and
    0.7. A run resumed from rank 0's checkpoint after the first iteration
    freezes 0.5 too (summing rank 0's sums twice would give 0.4)."""
    assert json_per_rank(_RANK_FREEZES, tmp_path) == [
        pytest.approx([0.5, 0.5])] * 2


@pytest.mark.parametrize('resume,expected', [(True, 0.3), (False, 5.0)])
def test_state_is_restored_on_resume_but_not_for_a_fine_tune(
        resume, expected):
    """mmengine calls ``after_load_checkpoint`` for ``load_from`` too; only
    ``--resume`` takes the old run's frozen ratio, a fine-tune estimates its
    own (here 5.0 from its first iteration)."""
    old = GuidedLossScaler([preset_group('dense')], freeze_after=2)
    for reg in (0.2, 0.4):
        old(dict(loss_cls=t(1.0), loss_bbox=t(reg)))
    ckpt = dict(guided_loss_scaling=old.state_dict())
    hook = GuidedLossScaling(freeze_after=100)
    hook.after_load_checkpoint(types.SimpleNamespace(_resume=resume), ckpt)
    model = torch.nn.Module()
    model.bbox_head = torch.nn.Identity()
    model.forward = lambda mode='tensor': dict(loss_cls=t(1.0),
                                               loss_bbox=t(5.0))
    hook.attach(model)
    assert model(mode='loss')['gls_ratio_cls'].item() == pytest.approx(
        expected)
    hook.detach()


def test_state_dict_roundtrip_for_resume():
    s = GuidedLossScaler([preset_group('dense')], freeze_after=2)
    for reg in (0.2, 0.4):
        s(dict(loss_cls=t(1.0), loss_bbox=t(reg)))
    fresh = GuidedLossScaler([preset_group('dense')], freeze_after=2)
    fresh.load_state_dict(s.state_dict())
    out = fresh(dict(loss_cls=t(1.0), loss_bbox=t(9.0)))
    assert out['gls_ratio_cls'].item() == pytest.approx(0.3)


def test_resume_in_the_middle_of_the_warm_up():
    """Two warm-up ratios before the checkpoint, two after: the frozen
    ratio is the mean of all four."""
    s = GuidedLossScaler([preset_group('dense')], freeze_after=4)
    for reg in (0.2, 0.4):
        s(dict(loss_cls=t(1.0), loss_bbox=t(reg)))
    fresh = GuidedLossScaler([preset_group('dense')], freeze_after=4)
    fresh.load_state_dict(s.state_dict())
    for reg in (0.6, 0.8):
        fresh(dict(loss_cls=t(1.0), loss_bbox=t(reg)))
    assert fresh.frozen['cls'].item() == pytest.approx(0.5)


@pytest.mark.parametrize('kwargs,match', [
    (dict(groups=['retina']), "unknown preset 'retina'"),
    (dict(groups='dense'), 'groups must be'),
    (dict(guide='centerness'), "guide must be one of .* got 'centerness'"),
    (dict(roi_factor=0), 'roi_factor must be a finite number > 0, got 0'),
    # NaN or inf would make every ratio invalid: the class loss dropped
    (dict(roi_factor=math.nan), 'roi_factor must be a finite .* got nan'),
    (dict(groups=[dict(name='x', cls=['a'], reg=['b'], factor=math.inf)]),
     'factor must be a finite number > 0, got inf'),
    (dict(freeze_after=-1), 'freeze_after must be an int >= 0, got -1'),
    (dict(groups=[dict(name='loss_x', cls=['a'], reg=['b'])]),
     "without 'loss'"),
    (dict(groups=[dict(name='x', cls=[], reg=['b'])]), 'cls must be'),
    (dict(groups=[dict(name='x', cls=['a'], reg=['b'], factor=-1)]),
     'factor must be a finite number > 0, got -1'),
    # bools are ints in Python: True would freeze after 1 iteration
    (dict(freeze_after=True), 'freeze_after must be an int >= 0, got True'),
    (dict(groups=[dict(name='x', cls=['a'], reg=['b'], factor=True)]),
     'factor must be a finite number > 0, got True'),
    (dict(sync='no'), "sync must be True or False, got sync='no'"),
    # only the 'roi' preset reads roi_factor; a dict has its own factor
    (dict(groups=['rpn', dict(name='roi', cls=['loss_cls'],
                              reg=['loss_bbox'])], roi_factor=3.0),
     "roi_factor=3.0 has no effect: groups=\\['rpn', .* no 'roi' preset"),
    (dict(groups=[dict(name='x', cls=['a'], reg=['b'], reduce='max')]),
     "reduce must be one of .* got 'max'"),
    # conflicting groups, found at build and not at the first iteration
    (dict(groups=['rpn', 'rpn']),
     "duplicate group names \\['rpn', 'rpn'\\]"),
    (dict(groups=['dense', 'yolov3']), "both the 'dense' and the 'yolov3' "
     "preset, which are both named 'cls'"),
    (dict(groups=['dense', 'dense']),
     "duplicate group names \\['cls', 'cls'\\]$"),
    (dict(groups=['rpn', 'roi'], guide='bbox'),
     "guide='bbox' has no effect: groups=\['rpn', 'roi'\] has no 'dense'"),
    (dict(groups=['roi', 'dense']),
     "loss keys used by more than one group or role: \\['loss_bbox', "
     "'loss_cls'\\]"),
    (dict(groups=['rpn', dict(name='x', cls=['loss_rpn_cls'], reg=['b'])]),
     "more than one group or role: \\['loss_rpn_cls'\\]"),
])
def test_bad_arguments_raise_at_build_time(kwargs, match):
    with pytest.raises((ValueError, KeyError, TypeError), match=match):
        GuidedLossScaling(**kwargs)


@pytest.mark.parametrize('value', [1.0, [], None])
def test_a_loss_entry_that_is_no_tensor_names_its_type(value):
    with pytest.raises(TypeError, match='expects a tensor or a non-empty '
                       'list of tensors per loss key, got '
                       f'{type(value).__name__}'):
        scaler('dense')(dict(loss_cls=value, loss_bbox=t(1.0)))


def test_missing_key_names_the_key():
    with pytest.raises(KeyError, match="needs loss keys \\['loss_bbox'\\]"):
        scaler('dense')(dict(loss_cls=t(1.0), loss_reg=t(1.0)))


def _model(cfg):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


@pytest.mark.parametrize('config,presets', [
    ('retinanet_ce_sf.py', ['dense']),
    ('fcos_ce_sf.py', ['dense']),
    ('faster_rcnn_sf.py', ['rpn', 'roi']),
    ('yolov3_ce_sf.py', ['yolov3']),
])
def test_auto_groups_from_the_model(toy_cfg, config, presets):
    cfg = toy_cfg(config)
    assert GuidedLossScaling.auto_presets(_model(cfg)) == presets
    hooks = [h for h in cfg.custom_hooks if h.type == 'GuidedLossScaling']
    assert len(hooks) == 1


def test_auto_groups_of_a_single_stage_rpn():
    """mmdet's RPN detector has its RPNHead as bbox_head: the rpn preset
    (the dense one would look for loss_cls)."""
    from mmdet.models.dense_heads import RPNHead
    model = torch.nn.Module()
    model.bbox_head = RPNHead(in_channels=4, feat_channels=4)
    assert GuidedLossScaling.auto_presets(model) == ['rpn']


@pytest.mark.parametrize('config,plain', [
    ('retinanet_ce_sf.py', 'retinanet_fl.py'),
    ('fcos_ce_sf.py', 'fcos_fl.py'),
    ('atss_ce_sf.py', 'atss_fl.py'),
    ('paa_ce_sf.py', 'paa_fl.py'),
    ('faster_rcnn_roi_sf.py', 'faster_rcnn_biased.py'),
    ('faster_rcnn_sf.py', 'faster_rcnn_biased.py'),
    ('yolov3_ce_sf.py', 'yolov3_baseline.py'),
])
def test_sampling_free_models_have_the_plain_state_dict(toy_cfg, config,
                                                        plain):
    model = _model(toy_cfg(config))
    GuidedLossScaling().attach(model)
    missing, unexpected = _model(toy_cfg(plain)).load_state_dict(
        model.state_dict(), strict=True)
    assert not missing and not unexpected


def test_runner_training_logs_ratio_and_checkpoint_loads_strictly_into_plain_model(  # noqa: E501
        tmp_path, toy_cfg):
    """Train retinanet_ce_gls (CE + GLS) for one toy epoch with the runner,
    then load the model strictly into the plain focal-loss RetinaNet and
    compare predictions exactly. (The OBI half of retinanet_ce_sf is tested
    with its hook.)"""
    from mmengine.runner import Runner
    cfg = toy_cfg('retinanet_ce_gls.py')
    cfg.work_dir = str(tmp_path)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.train_cfg.val_interval = 100
    runner = Runner.from_cfg(cfg)
    runner.train()
    hub = runner.message_hub
    ratio = hub.get_scalar('train/gls_ratio_cls').current()
    assert math.isfinite(ratio) and ratio > 0
    # The logged classification loss is the scaled one: equal to the box
    # loss of the same iteration (that batch had positives).
    reg = hub.get_scalar('train/loss_bbox').current()
    assert reg > 0
    assert hub.get_scalar('train/loss_cls').current() == pytest.approx(
        reg, rel=1e-4)
    hook = [h for h in runner.hooks if isinstance(h, GuidedLossScaling)][0]
    assert hook._handle is None  # detached after training

    trained = runner.model.eval()
    plain_cfg = toy_cfg('retinanet_fl.py')
    # Test thresholds are a test-time setting: compare under the same ones.
    plain_cfg.model.test_cfg = cfg.model.test_cfg
    plain = _model(plain_cfg).eval()
    missing, unexpected = plain.load_state_dict(trained.state_dict(),
                                                strict=True)
    assert not missing and not unexpected

    batch = next(iter(runner.build_dataloader(cfg.train_dataloader)))
    # Predictions with the hook attached equal the plain model's.
    hook.attach(trained)
    with torch.no_grad():
        data = trained.data_preprocessor(batch, False)
        a = trained(**data, mode='predict')
        b = plain(**plain.data_preprocessor(batch, False), mode='predict')
    hook.detach()
    assert len(a) == len(b) and sum(len(x.pred_instances) for x in a) > 0
    for x, y in zip(a, b):
        assert torch.equal(x.pred_instances.bboxes, y.pred_instances.bboxes)
        assert torch.equal(x.pred_instances.scores, y.pred_instances.scores)
        assert torch.equal(x.pred_instances.labels, y.pred_instances.labels)


def test_loss_keys_in_no_group_are_named_once():
    """A head whose loss keys the groups do not name (YOLOX's loss_obj
    under the 'dense' preset) warns at the first iteration: those keys are
    neither scaled nor in a ratio."""
    model = torch.nn.Module()
    model.bbox_head = torch.nn.Identity()
    model.forward = lambda inputs=None, data_samples=None, mode='tensor': \
        dict(loss_cls=t(2.0), loss_bbox=t(0.5), loss_obj=t(8.0), acc=t(1.0))
    hook = GuidedLossScaling()
    hook.attach(model)
    with pytest.warns(UserWarning, match=r"loss keys \['loss_obj'\] are in "
                      'no group'):
        out = model(mode='loss')
    assert out['loss_obj'].item() == 8.0
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # once, not per iteration
        model(mode='loss')
    hook.detach()


def test_cascade_stage_keys_in_no_group_are_named():
    """A cascade's stage keys (s1.loss_cls) are loss keys too: groups that
    name only stage 0 leave the later stages unscaled, which must warn."""
    model = torch.nn.Module()
    model.rpn_head = torch.nn.Identity()
    model.forward = lambda inputs=None, data_samples=None, mode='tensor': \
        {'loss_rpn_cls': t(1.0), 'loss_rpn_bbox': t(0.5),
         's0.loss_cls': t(2.0), 's0.loss_bbox': t(1.0), 's0.acc': t(90.0),
         's1.loss_cls': t(4.0), 's1.loss_bbox': t(1.0)}
    hook = GuidedLossScaling(groups=[
        'rpn', dict(name='s0', cls=['s0.loss_cls'], reg=['s0.loss_bbox'])])
    hook.attach(model)
    with pytest.warns(UserWarning, match=r"loss keys \['s1.loss_bbox', "
                      r"'s1.loss_cls'\] are in no group"):
        out = model(mode='loss')
    assert out['s1.loss_cls'].item() == 4.0
    assert out['s0.loss_cls'].item() == pytest.approx(1.0)
    hook.detach()


def test_detr_style_prefixed_keys_in_no_group_are_named():
    """The DETR family's enc_ and dn_ loss keys are loss keys too."""
    model = torch.nn.Module()
    model.bbox_head = torch.nn.Identity()
    model.forward = lambda inputs=None, data_samples=None, mode='tensor': \
        {'loss_cls': t(2.0), 'loss_bbox': t(1.0), 'enc_loss_cls': t(50.0),
         'd0.dn_loss_cls': t(30.0)}
    hook = GuidedLossScaling(
        groups=[dict(name='det', cls=['loss_cls'], reg=['loss_bbox'])])
    hook.attach(model)
    with pytest.warns(UserWarning, match=r"loss keys \['d0.dn_loss_cls', "
                      r"'enc_loss_cls'\] are in no group"):
        out = model(mode='loss')
    assert out['enc_loss_cls'].item() == 50.0
    hook.detach()


def test_hook_state_travels_in_the_checkpoint_not_the_state_dict():
    model = torch.nn.Module()
    model.bbox_head = torch.nn.Identity()

    def forward(inputs=None, data_samples=None, mode='tensor'):
        return dict(loss_cls=t(2.0), loss_bbox=t(0.5))

    model.forward = forward
    hook = GuidedLossScaling(freeze_after=1)
    hook.attach(model)
    assert model(mode='loss')['gls_ratio_cls'].item() == pytest.approx(0.25)
    assert model(mode='tensor') == dict(loss_cls=t(2.0), loss_bbox=t(0.5))
    ckpt = dict(state_dict=model.state_dict())
    hook.before_save_checkpoint(None, ckpt)
    assert ckpt['guided_loss_scaling']['frozen'] == {'cls': 0.25}
    # A resumed run restores the frozen ratio before its first iteration.
    resumed = GuidedLossScaling(freeze_after=1)
    resumed.after_load_checkpoint(types.SimpleNamespace(_resume=True), ckpt)
    hook.detach()
    resumed.attach(model)
    model.forward = lambda mode='tensor': dict(loss_cls=t(1.0),
                                               loss_bbox=t(3.0))
    assert model(mode='loss')['gls_ratio_cls'].item() == pytest.approx(0.25)


def test_resume_into_a_built_scaler_and_positional_mode():
    """A scaler built before the checkpoint is loaded takes the restored
    state at once; ``mode`` passed by position is recognised too."""
    old = GuidedLossScaler([preset_group('dense')], freeze_after=1)
    old(dict(loss_cls=t(1.0), loss_bbox=t(0.7)))
    model = torch.nn.Module()
    model.bbox_head = torch.nn.Identity()
    model.forward = lambda inputs=None, data_samples=None, mode='tensor': \
        dict(loss_cls=t(1.0), loss_bbox=t(5.0))
    hook = GuidedLossScaling(freeze_after=1)
    hook.attach(model)
    assert model(None, None, 'loss')['gls_ratio_cls'].item() == \
        pytest.approx(5.0)  # built and frozen here
    hook.after_load_checkpoint(types.SimpleNamespace(_resume=True),
                               dict(guided_loss_scaling=old.state_dict()))
    assert model(None, None, 'loss')['gls_ratio_cls'].item() == \
        pytest.approx(0.7)
    hook.detach()


@pytest.mark.slow
def test_runner_resume_in_the_warm_up_freezes_over_both_runs(tmp_path,
                                                             toy_cfg):
    """A real ``Runner``: 4 iterations with ``freeze_after=6``, a checkpoint,
    then ``--resume`` for 4 more. The resumed run freezes the mean of the 6
    warm-up ratios, 4 of them from the first run (their sums travel in the
    checkpoint), and scales by it from then on."""
    from mmengine.runner import Runner

    def run(work_dir, **kwargs):
        cfg = toy_cfg('retinanet_ce_gls.py')
        cfg.custom_hooks = [dict(type='GuidedLossScaling', freeze_after=6)]
        cfg.work_dir = str(tmp_path / work_dir)
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
        cfg.train_cfg.update(max_epochs=2, val_interval=100)
        cfg.default_hooks.checkpoint.update(interval=1, max_keep_ckpts=2)
        cfg.merge_from_dict(kwargs)
        runner = Runner.from_cfg(cfg)
        runner.train()
        hook = [h for h in runner.hooks if isinstance(h, GuidedLossScaling)]
        ratios = runner.message_hub.get_scalar('train/gls_ratio_cls').data[0]
        return runner.iter, hook[0].scaler, ratios

    num_iters, scaler, before = run('first', train_cfg=dict(max_epochs=1))
    assert num_iters == 4 and not scaler.frozen
    assert scaler._warmup_sum['cls'].item() == pytest.approx(before.sum())
    num_iters, scaler, ratios = run(
        'resumed', resume=True,
        load_from=str(tmp_path / 'first' / 'epoch_1.pth'))
    assert num_iters == 8
    # the message hub is restored too: its history holds all 8 iterations,
    # the 6th and later the frozen ratio
    assert len(ratios) == 8 and np.array_equal(ratios[:4], before)
    assert scaler._warmup_count['cls'].item() == 6
    total = scaler._warmup_sum['cls'].item()
    assert scaler.frozen['cls'].item() == pytest.approx(total / 6)
    assert ratios[5:] == pytest.approx([total / 6] * 3, rel=1e-6)
    # the 6th, raw ratio (the sum less the 5 logged): valid, so the sum
    # holds the first run's 4, this run's 5th and it
    assert total - ratios[:5].sum() > 0


# (not the two-stage configs: mmcv's CPU nms rejects bfloat16 proposals)
@pytest.mark.parametrize('config,half_guide', [('retinanet_ce_gls.py', False),
                                               ('fcos_ce_sf.py', False),
                                               ('atss_ce_sf.py', True),
                                               ('yolov3_ce_sf.py', False)])
def test_under_autocast_the_ratio_and_scaled_losses_are_float32(
        toy_cfg, config, half_guide):
    """A toy detector's loss under CPU autocast (bfloat16): every ratio is
    the float32 quotient of the unscaled losses (each summed as
    parse_losses does), and each scaled tensor is float32, the ratio times
    the unscaled one. ATSS's guide has bfloat16 entries (the centerness of
    levels without positives)."""
    from mmengine.runner import Runner
    cfg = toy_cfg(config)
    cfg.train_dataloader.sampler.shuffle = False  # the same batch each run
    model = _model(cfg).train()
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader)))
    data = model.data_preprocessor(batch, True)

    def losses():
        torch.manual_seed(1)  # the RPN and RoI samplers draw alike
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model(**data, mode='loss')
        # per-level lists or single tensors, detached
        return {k: [x.detach() for x in (v if isinstance(v, list) else [v])]
                for k, v in out.items()}

    def total(tensors):
        return sum(x.float().mean() for x in tensors)

    plain = losses()
    assert half_guide == any(x.dtype == torch.bfloat16
                             for v in plain.values() for x in v)
    hook = GuidedLossScaling()
    hook.attach(model)
    scaled = losses()
    hook.detach()
    assert hook.scaler.groups
    for g in hook.scaler.groups:
        ratio = scaled[f'gls_ratio_{g["name"]}'][0]
        assert ratio.dtype == torch.float32
        reg = sum(total(plain[k]) for k in g['reg'])
        if g['reduce'] == 'mean':
            reg = reg / len(g['reg'])
        cls = sum(total(plain[k]) for k in g['cls'])
        torch.testing.assert_close(ratio, g['factor'] * reg / cls)
        for key in g['cls']:
            for x, y in zip(scaled[key], plain[key], strict=True):
                assert x.dtype == torch.float32
                torch.testing.assert_close(x, ratio * y.float())


def test_the_no_valid_ratio_warning_is_logged_once(monkeypatch):
    """Four warm-up batches without a box loss: one warning, not one per
    iteration."""
    levels = []
    monkeypatch.setattr(gls_mod, 'print_log',
                        lambda msg, **kw: levels.append(kw.get('level')))
    scaler = GuidedLossScaler([preset_group('dense')], freeze_after=2)
    for _ in range(4):
        scaler(dict(loss_cls=t(1.0), loss_bbox=t(0.0)))
    assert levels == [logging.WARNING]


def test_a_ratio_at_0_for_50_iterations_in_a_row_is_warned_once(monkeypatch):
    """A box loss of 0 in every batch (loss_bbox.loss_weight=0) drops the
    classification loss in every batch; a batch without positives now and
    then does not warn."""
    logged = []
    monkeypatch.setattr(gls_mod, 'print_log', lambda msg, **kw: logged.append(
        msg) if kw.get('level') == logging.WARNING else None)
    box = [0.0]
    model = torch.nn.Module()
    model.bbox_head = torch.nn.Identity()
    model.forward = lambda inputs=None, data_samples=None, mode='tensor': \
        dict(loss_cls=t(2.0), loss_bbox=t(box[0]))
    hook = GuidedLossScaling()
    hook.attach(model)

    def steps(n, value):
        box[0] = value
        for _ in range(n):
            _, log_vars = BaseModel.parse_losses(None, model(mode='loss'))
            hook.after_train_iter(None, 0, outputs=log_vars)

    steps(49, 0.0)
    steps(1, 0.5)  # a batch with positives ends the run
    steps(49, 0.0)
    assert logged == []
    steps(1, 0.0)
    assert logged == [
        "GuidedLossScaling: the ratio of group 'cls' has been 0 for 50 "
        'iterations in a row, so loss_cls is dropped in every batch: its '
        'guide loss_bbox is 0 (a loss weight of 0? no positives?) or the '
        'ratio is not finite']
    steps(100, 0.0)
    assert len(logged) == 1
    hook.detach()
