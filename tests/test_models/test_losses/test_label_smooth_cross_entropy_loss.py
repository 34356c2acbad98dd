"""LabelSmoothCrossEntropyLoss: mmdet's loss contract, eps = 0 equal to
CrossEntropyLoss bit for bit, hand-computed values, GluonCV's YOLOv3
targets, and the difference with YOLOV3Head.one_hot_smoother."""
import math
import re

import pytest
import torch

from mmdet.models.losses import CrossEntropyLoss
from mmdet.models.losses.cross_entropy_loss import (binary_cross_entropy,
                                                    cross_entropy)
from mmdet.registry import MODELS
from mmdet_freebies.models.losses import LabelSmoothCrossEntropyLoss
from mmdet_freebies.models.losses.label_smooth_cross_entropy_loss import (
    label_smooth_binary_cross_entropy, label_smooth_cross_entropy)


def build(**kwargs):
    return MODELS.build(dict(type='LabelSmoothCrossEntropyLoss', **kwargs))


@pytest.mark.parametrize('use_sigmoid', [False, True])
@pytest.mark.parametrize('input_shape', [(10, 5), (0, 5)])
def test_loss_contract(use_sigmoid, input_shape):
    torch.manual_seed(0)
    pred = torch.rand(input_shape)
    target = torch.randint(5, (input_shape[0], ))
    loss_class = build(use_sigmoid=use_sigmoid, label_smoothing=0.1)
    loss = loss_class(pred, target)
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0
    if not input_shape[0]:  # a mean over nothing is NaN, as mmdet's CE
        torch.testing.assert_close(
            loss, CrossEntropyLoss(use_sigmoid=use_sigmoid)(pred, target),
            equal_nan=True)
        assert loss.isnan()
    none = loss_class(pred, target, reduction_override='none')
    assert none.shape == (input_shape if use_sigmoid else input_shape[:1])
    # weight: per sample, over the classes too for the sigmoid
    weight = torch.rand(input_shape[0])
    per_sample = weight[:, None] if use_sigmoid else weight
    assert torch.allclose(
        loss_class(pred, target, weight, reduction_override='none'),
        none * per_sample)
    # reduction_override None is the configured mean
    assert torch.allclose(
        loss_class(pred, target, avg_factor=10, reduction_override=None),
        none.sum() / 10)
    # sum == none.sum(), mean with avg_factor == sum / avg_factor
    summed = loss_class(pred, target, reduction_override='sum')
    assert torch.allclose(summed, none.sum())
    assert torch.allclose(
        loss_class(pred, target, avg_factor=4), summed / 4)


@pytest.mark.parametrize('use_sigmoid', [False, True])
@pytest.mark.parametrize('kwargs', [
    dict(),
    dict(class_weight=[0.5, 1.0, 2.0, 1.0, 1.5]),
    dict(ignore_index=2, avg_non_ignore=True),
    dict(reduction='sum', loss_weight=3.0),
])
def test_eps_zero_equals_cross_entropy(use_sigmoid, kwargs):
    torch.manual_seed(1)
    pred = torch.randn(12, 5)
    target = torch.randint(5, (12, ))
    weight = torch.rand(12)
    ours = build(label_smoothing=0.0, use_sigmoid=use_sigmoid, **kwargs)
    ref = CrossEntropyLoss(use_sigmoid=use_sigmoid, **kwargs)
    cases = [(), (weight, )]
    if kwargs.get('reduction') != 'sum':  # avg_factor needs a mean
        cases.append((weight, 7.0))
    for args in cases:
        assert torch.equal(ours(pred, target, *args), ref(pred, target, *args))
    assert torch.equal(
        ours(pred, target, reduction_override='none', ignore_index=1),
        ref(pred, target, reduction_override='none', ignore_index=1))


@pytest.mark.parametrize('use_sigmoid', [False, True])
@pytest.mark.parametrize('kwargs', [
    dict(class_weight=[0.5, 1.0, 2.0, 1.0, 1.5]),
    dict(ignore_index=2, avg_non_ignore=True),
    dict(reduction='sum', loss_weight=3.0),
])
def test_module_passes_its_arguments_to_the_smoothing_function(
        use_sigmoid, kwargs):
    """At eps > 0 the module runs mmdet's CrossEntropyLoss.forward with the
    smoothing function: its class weights, ignore_index, avg_non_ignore,
    reduction and loss_weight reach that function as they are."""
    torch.manual_seed(1)
    pred = torch.randn(12, 5)
    target = torch.randint(5, (12, ))
    weight = torch.rand(12)
    ours = build(label_smoothing=0.1, use_sigmoid=use_sigmoid, **kwargs)
    args = dict(kwargs)
    loss_weight = args.pop('loss_weight', 1.0)
    if 'class_weight' in args:
        args['class_weight'] = torch.tensor(args['class_weight'])
    fn = (label_smooth_binary_cross_entropy
          if use_sigmoid else label_smooth_cross_entropy)
    for w, avg in ((None, None), (weight, None), (weight, 7.0)):
        if avg is not None and args.get('reduction') == 'sum':
            continue  # avg_factor needs a mean
        expected = loss_weight * fn(
            pred, target, w, avg_factor=avg, label_smoothing=0.1, **args)
        torch.testing.assert_close(ours(pred, target, w, avg_factor=avg),
                                   expected)
    assert not torch.allclose(  # eps 0.1 is not plain cross-entropy
        ours(pred, target), build(label_smoothing=0.0,
                                  use_sigmoid=use_sigmoid,
                                  **kwargs)(pred, target))


@pytest.mark.parametrize('ours,ref', [
    (label_smooth_cross_entropy, cross_entropy),
    (label_smooth_binary_cross_entropy, binary_cross_entropy),
])
@pytest.mark.parametrize('kwargs', [
    dict(),
    dict(class_weight=torch.tensor([0.5, 1.0, 2.0, 1.0, 1.5])),
    dict(ignore_index=2, avg_non_ignore=True),
    dict(ignore_index=2, avg_factor=7.0),
    dict(reduction='sum'),
    dict(reduction='none', ignore_index=1),
])
def test_smoothing_functions_at_eps_zero_equal_mmdets(ours, ref, kwargs):
    """The module keeps mmdet's criterion at eps = 0 (test above), so the
    smoothing functions' own handling of weights, class weights,
    ignore_index, avg_non_ignore and avg_factor is checked here, against
    mmdet's functions with the same arguments."""
    torch.manual_seed(1)
    pred = torch.randn(12, 5)
    target = torch.randint(5, (12, ))
    weight = torch.rand(12)
    for w in (None, weight):
        torch.testing.assert_close(
            ours(pred, target, w, label_smoothing=0.0, **kwargs),
            ref(pred, target, w, **kwargs), rtol=1e-6, atol=1e-7)


def test_float_targets_marked_ignored_stay_ignored_when_smoothed():
    """Float targets of pred's shape with elements marked ``ignore_index``
    (255): they are found before smoothing, so they add nothing; the others
    are BCE against (1 - eps) t + eps / 2."""
    torch.manual_seed(0)
    pred = torch.randn(4, 3)
    target = torch.tensor([[1., 0., 255.], [0., 1., 0.], [255., 255., 0.],
                           [0., 0., 1.]])
    loss = label_smooth_binary_cross_entropy(
        pred, target, reduction='none', ignore_index=255,
        label_smoothing=0.2)
    ignored = target == 255
    assert not loss[ignored].any()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        pred, target * 0.8 + 0.1, reduction='none')
    torch.testing.assert_close(loss[~ignored], expected[~ignored])


def test_softmax_hand_value():
    # p = (1/4, 1/2, 1/4); eps = 0.3, K = 3: q' = (0.1, 0.8, 0.1)
    # CE = -(0.1 ln 1/4 + 0.8 ln 1/2 + 0.1 ln 1/4) = 1.2 ln 2
    pred = torch.tensor([[0.0, math.log(2.0), 0.0]])
    loss = build(label_smoothing=0.3)(pred, torch.tensor([1]))
    assert loss.item() == pytest.approx(1.2 * math.log(2.0), rel=1e-6)
    # K counts the background logit of an RoI classifier: 2 classes + bg
    pred = torch.zeros(1, 3)
    pred[0, 2] = 1.0
    logp = torch.log_softmax(pred, 1)[0]
    eps = 0.2
    expected = -((1 - eps) * logp[2] + eps / 3 * logp.sum())
    loss = build(label_smoothing=eps)(pred, torch.tensor([2]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_softmax_ignore_index_and_class_weight():
    pred = torch.tensor([[0.0, math.log(2.0), 0.0], [1.0, 2.0, 3.0]])
    loss = build(label_smoothing=0.3, ignore_index=0,
                 reduction='none')(pred, torch.tensor([1, 0]))
    assert loss[1].item() == 0
    assert loss[0].item() == pytest.approx(1.2 * math.log(2.0), rel=1e-6)
    # PyTorch's definition: (1-eps) w_y (-log p_y) + eps/K sum_k w_k (-log p_k)
    w = [1.0, 2.0, 3.0]
    loss = build(label_smoothing=0.3, class_weight=w,
                 reduction='none')(pred[:1], torch.tensor([1]))
    logp = [math.log(0.25), math.log(0.5), math.log(0.25)]
    expected = -(0.7 * 2 * logp[1] + 0.1 * sum(a * b for a, b in zip(w, logp)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_sigmoid_hand_value():
    # p = 3/4 on class 0 of 2; eps = 0.2: targets (0.9, 0.1)
    pred = torch.tensor([[math.log(3.0), 0.0]])
    loss = build(label_smoothing=0.2, use_sigmoid=True,
                 reduction='sum')(pred, torch.tensor([0]))
    expected = (-(0.9 * math.log(0.75) + 0.1 * math.log(0.25)) -
                (0.1 * math.log(0.5) + 0.9 * math.log(0.5)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # background (label == num_classes): every target is eps / 2
    loss = build(label_smoothing=0.2, use_sigmoid=True,
                 reduction='none')(pred, torch.tensor([2]))
    expected0 = -(0.1 * math.log(0.75) + 0.9 * math.log(0.25))
    assert loss[0, 0].item() == pytest.approx(expected0, rel=1e-6)


@pytest.mark.parametrize('num_classes', [80, 20, 4])
def test_sigmoid_reproduces_gluoncv_yolov3_targets(num_classes):
    e = min(1 / num_classes, 1 / 40)  # GluonCV: positive 1 - e, others e
    torch.manual_seed(0)
    pred = torch.randn(6, num_classes)
    onehot = torch.zeros(6, num_classes)
    onehot[torch.arange(6), torch.randint(num_classes, (6, ))] = 1
    gluon_targets = torch.where(onehot > 0, 1 - e, e)
    ref = CrossEntropyLoss(use_sigmoid=True, reduction='sum')(pred,
                                                            gluon_targets)
    ours = build(label_smoothing=2 * e, use_sigmoid=True,
                 reduction='sum')(pred, onehot)  # float targets, as YOLOv3
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


def _yolov3_loss_cls(num_classes, **head_kwargs):
    from mmengine.structures import InstanceData
    torch.manual_seed(0)
    head = MODELS.build(
        dict(
            type='YOLOV3Head',
            num_classes=num_classes,
            in_channels=[4, 4, 4],
            out_channels=[4, 4, 4],
            train_cfg=dict(
                assigner=dict(
                    type='GridAssigner',
                    pos_iou_thr=0.5,
                    neg_iou_thr=0.5,
                    min_pos_iou=0)),
            **head_kwargs))
    feats = [torch.randn(1, 4, s, s) for s in (2, 4, 8)]
    gt = InstanceData(
        bboxes=torch.tensor([[10., 12., 40., 50.]]),
        labels=torch.tensor([1]))
    img_metas = [dict(img_shape=(64, 64), batch_input_shape=(64, 64))]
    return head.loss_by_feat(*head(feats), [gt], img_metas)['loss_cls']


def test_in_yolov3_head_versus_one_hot_smoother():
    ls = dict(type='LabelSmoothCrossEntropyLoss', use_sigmoid=True,
              label_smoothing=0.2, reduction='sum')
    ce = dict(type='CrossEntropyLoss', use_sigmoid=True, reduction='sum')
    ours = sum(_yolov3_loss_cls(2, loss_cls=ls))
    # with 2 classes mmdet's q(1-eps)+eps/C and (1-eps)t+eps/2 coincide
    mmdet = sum(_yolov3_loss_cls(2, loss_cls=ce, one_hot_smoother=0.2))
    plain = sum(_yolov3_loss_cls(2, loss_cls=ce))
    assert ours.item() == pytest.approx(mmdet.item(), rel=1e-5)
    assert ours.item() != pytest.approx(plain.item(), rel=1e-3)
    # with 4 classes mmdet's negatives are eps/4, ours eps/2: they differ
    ours4 = sum(_yolov3_loss_cls(4, loss_cls=ls))
    mmdet4 = sum(_yolov3_loss_cls(4, loss_cls=ce, one_hot_smoother=0.2))
    assert ours4.item() != pytest.approx(mmdet4.item(), rel=1e-3)


@pytest.mark.parametrize('value', [-0.1, 1.0, 'a', True])
def test_bad_label_smoothing(value):
    with pytest.raises(ValueError, match=f'label_smoothing={value!r}'):
        build(label_smoothing=value)


@pytest.mark.parametrize('key,value', [
    ('use_sigmoid', 'False'), ('avg_non_ignore', 'no'), ('loss_weight', '1.0'),
    ('loss_weight', float('nan')), ('loss_weight', -1.0),
    ('ignore_index', 2.5),
    # mmdet's CrossEntropyLoss fails on these only in forward, or (negative
    # weights) never, giving a negative loss
    ('class_weight', 'abc'), ('class_weight', [1.0, -0.5]),
    ('class_weight', [1.0, float('inf')]), ('class_weight', 2.0)])
def test_bad_arguments_fail_at_build(key, value):
    # e.g. use_sigmoid='False' would silently switch to the sigmoid loss
    with pytest.raises(ValueError, match=f'{key} must be .* got '
                       f'{key}={re.escape(repr(value))}'):
        build(**{key: value})


def test_repr_and_default():
    loss = LabelSmoothCrossEntropyLoss()
    assert loss.label_smoothing == 0.1
    assert 'label_smoothing=0.1, use_sigmoid=False' in repr(loss)
