"""FusedBalancedL1Loss against mmdet's BalancedL1Loss and hand values."""
import math

import pytest
import torch
from mmengine.config import Config
from mmdet.models.losses import BalancedL1Loss
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs

from mmdet_freebies.models.losses.balanced_l1_loss import (
    FusedBalancedL1Loss, fused_balanced_l1_loss)
from mmdet_freebies.utils.toy import apply_toy

TOL = dict(atol=1e-6, rtol=1e-6)


def _inputs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = (torch.randn(n, 4, generator=g) * 1.5).requires_grad_()
    target = torch.randn(n, 4, generator=g)
    weight = torch.rand(n, 4, generator=g)
    return pred, target, weight


def _run(loss, pred, target, **kwargs):
    pred = pred.detach().clone().requires_grad_()
    out = loss(pred, target, **kwargs)
    out.sum().backward()
    return out.detach(), pred.grad


@pytest.mark.parametrize('n', [0, 1, 37])
@pytest.mark.parametrize('weight', [None, 'element', 'object'])
@pytest.mark.parametrize('avg_factor', [None, 7.0, 'tensor'])
@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('beta,loss_weight', [(1.0, 1.0), (0.11, 2.5)])
def test_equals_mmdet(n, weight, avg_factor, reduction, beta, loss_weight):
    """Values and gradients equal mmdet's over the whole interface."""
    pred, target, elem_weight = _inputs(n)
    if weight == 'element':
        ours_w = ref_w = elem_weight
    elif weight == 'object':  # mixup's per-object weights, one per row
        ours_w = elem_weight[:, 0]
        ref_w = ours_w[:, None].expand(-1, 4)
    else:
        ours_w = ref_w = None
    if avg_factor == 'tensor':
        avg_factor = torch.tensor(5.0)
    cfg = dict(alpha=0.5, gamma=1.5, beta=beta, loss_weight=loss_weight)
    ours, ref = FusedBalancedL1Loss(**cfg), BalancedL1Loss(**cfg)
    # the constructor's reduction is overridden per call
    kwargs = dict(avg_factor=avg_factor, reduction_override=reduction)
    if avg_factor is not None and reduction == 'sum':
        for loss in (ours, ref):
            with pytest.raises(ValueError, match='avg_factor'):
                loss(pred, target, weight=ours_w if loss is ours else ref_w,
                     **kwargs)
        return
    out, grad = _run(ours, pred, target, weight=ours_w, **kwargs)
    if n == 0:
        # mmdet returns a 0-d zero (NaN for a weighted mean without
        # avg_factor); ours keeps the element-wise shape for 'none' and gives
        # zero otherwise, always with a zero gradient.
        expected_shape = (0, 4) if reduction == 'none' else ()
        assert out.shape == expected_shape and not out.any()
        assert grad.shape == (0, 4)
        return
    ref_out, ref_grad = _run(ref, pred, target, weight=ref_w, **kwargs)
    torch.testing.assert_close(out, ref_out, **TOL)
    torch.testing.assert_close(grad, ref_grad, **TOL)


@pytest.mark.parametrize('alpha,gamma,beta', [
    (1.0, 0.1, 1.0), (2.0, 2.0, 0.5), (1.0, 0.01, 0.11), (0.25, 3.0, 2.0)])
@pytest.mark.parametrize('reduction', ['none', 'mean'])
def test_equals_mmdet_at_other_parameters_in_float64(alpha, gamma, beta,
                                                     reduction):
    """Away from the defaults float32 rounding differs by a few 1e-6
    (mmdet's more than ours); in float64 the two formulas agree."""
    pred, target, weight = (t.detach().double() for t in _inputs(37))
    cfg = dict(alpha=alpha, gamma=gamma, beta=beta)
    kwargs = dict(weight=weight, avg_factor=7.0,
                  reduction_override=reduction)
    out, grad = _run(FusedBalancedL1Loss(**cfg), pred, target, **kwargs)
    ref_out, ref_grad = _run(BalancedL1Loss(**cfg), pred, target, **kwargs)
    torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(grad, ref_grad, atol=1e-12, rtol=1e-12)


def test_hand_values():
    """Eq. (8) with alpha=0.5, gamma=1.5, beta=1: b = e^3 - 1."""
    b = math.e**3 - 1
    x = torch.tensor([0.0, 0.5, -0.5, 1.0, 2.0, -2.0], dtype=torch.float64)
    pred = x.clone().requires_grad_()
    loss = fused_balanced_l1_loss(pred, torch.zeros_like(x),
                                  reduction='none')
    loss.sum().backward()
    inner = 0.5 / b * (b * 0.5 + 1) * math.log(b * 0.5 + 1) - 0.25
    at_beta = 1.5 + 1.5 / b - 0.5  # both pieces agree at |x| = beta
    expected = [0.0, inner, inner, at_beta, 3.0 + 1.5 / b - 0.5,
                3.0 + 1.5 / b - 0.5]
    torch.testing.assert_close(loss, torch.tensor(expected,
                                                  dtype=torch.float64))
    # gradient alpha ln(b |x| + 1) sign(x) inside, gamma sign(x) outside
    g = 0.5 * math.log(b * 0.5 + 1)
    torch.testing.assert_close(
        pred.grad,
        torch.tensor([0.0, g, -g, 1.5, 1.5, -1.5], dtype=torch.float64))


@pytest.mark.parametrize('beta', [0.11, 2.0])
def test_paper_form_hand_values(beta):
    """paper_form: beta times Eq. (8) at |x| / beta, so the gradient is
    Eq. (7)'s, alpha ln(b |x| / beta + 1), inside beta (0 at x -> 0) and gamma
    outside, continuous at beta; mmdet's formula is not (RetinaNet's 0.11)."""
    alpha, gamma = 0.5, 1.5
    b = math.e**3 - 1
    x = torch.tensor([1e-6, 0.5, -0.5, 0.999, 1.001, 3.0],
                     dtype=torch.float64) * beta
    grads = {}
    for paper_form in (True, False):
        pred = x.clone().requires_grad_()
        loss = fused_balanced_l1_loss(pred, torch.zeros_like(x), beta=beta,
                                      reduction='none', paper_form=paper_form)
        loss.sum().backward()
        grads[paper_form] = pred.grad
        if paper_form:
            d = x.abs()
            inner = (alpha / b * (b * d + beta) * torch.log(b * d / beta + 1)
                     - alpha * d)
            outer = gamma * d + gamma * beta / b - alpha * beta
            torch.testing.assert_close(
                loss.detach(), torch.where(d < beta, inner, outer))
    grad = torch.tensor([alpha * math.log(b * r + 1) for r in (
        1e-6, 0.5, 0.5, 0.999)] + [gamma, gamma],
                        dtype=torch.float64) * x.sign()
    torch.testing.assert_close(grads[True], grad)
    # the two sides of beta meet: alpha ln(b + 1) = gamma (Eq. (9))
    assert grads[True][3].item() == pytest.approx(gamma, rel=1e-3)
    # mmdet's: an extra alpha (1 - beta) / (b |x| + beta), e.g. 4.0 near 0 at
    # beta 0.11, and a jump at beta
    extra = alpha * (1 - beta) / (b * x.abs() + beta) * x.sign()
    torch.testing.assert_close(grads[False], grad + extra * (x.abs() < beta))


def test_paper_form_equals_mmdet_at_beta_1():
    pred, target, weight = _inputs(37)
    kwargs = dict(weight=weight, avg_factor=7.0)
    out, grad = _run(FusedBalancedL1Loss(paper_form=True), pred, target,
                     **kwargs)
    ref_out, ref_grad = _run(BalancedL1Loss(), pred, target, **kwargs)
    torch.testing.assert_close(out, ref_out, **TOL)
    torch.testing.assert_close(grad, ref_grad, **TOL)


@pytest.mark.parametrize('beta,paper_form', [
    (1.0, False), (0.11, False), (2.0, False), (0.11, True), (2.0, True)])
def test_gradcheck(beta, paper_form):
    """The closed-form gradient equals finite differences (float64), for
    pred, target and weight."""
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(6, 4, generator=g, dtype=torch.float64) * 2
    target = torch.randn(6, 4, generator=g, dtype=torch.float64)
    # keep |x| away from the kinks at 0 and beta
    diff = pred - target
    near = ((diff.abs() < 1e-3) | ((diff.abs() - beta).abs() < 1e-3))
    pred = torch.where(near, pred + 0.01, pred).requires_grad_()
    target.requires_grad_()
    weight = torch.rand(6, generator=g, dtype=torch.float64).requires_grad_()

    def fn(p, t, w):
        return fused_balanced_l1_loss(p, t, w, beta=beta, avg_factor=3.0,
                                      loss_weight=1.7, paper_form=paper_form)

    assert torch.autograd.gradcheck(fn, (pred, target, weight))


def test_target_and_weight_gradients_equal_mmdet():
    pred, target, weight = _inputs(9, seed=3)
    grads = []
    for loss in (FusedBalancedL1Loss(beta=0.11), BalancedL1Loss(beta=0.11)):
        p = pred.detach().clone().requires_grad_()
        t = target.clone().requires_grad_()
        w = weight.clone().requires_grad_()
        loss(p, t, weight=w, avg_factor=4.0).backward()
        grads.append((p.grad, t.grad, w.grad))
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(grads[0][1], -grads[0][0])


def test_tensor_avg_factor_gradient_equals_mmdet():
    """A tensor avg_factor that needs a gradient gets mmdet's gradient."""
    pred, target, weight = _inputs(9, seed=4)
    grads = []
    for loss in (FusedBalancedL1Loss(), BalancedL1Loss()):
        p = pred.detach().clone().requires_grad_()
        avg_factor = torch.tensor(4.0, requires_grad=True)
        loss(p, target, weight=weight, avg_factor=avg_factor).backward()
        grads.append((p.grad, avg_factor.grad))
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref, **TOL)
    assert grads[0][1] < 0


@pytest.mark.parametrize('avg_factor', [None, 50000.0, 'tensor'])
def test_half_inputs_are_summed_in_float32(avg_factor):
    """A half-precision loss whose sum exceeds the half range (65504) stays
    finite: the sum accumulates in float32 before the normaliser."""
    g = torch.Generator().manual_seed(5)
    pred = torch.randn(20000, 4, generator=g) * 3
    target = torch.zeros(20000, 4)
    if avg_factor == 'tensor':  # divides outside the fused function
        avg_factor = torch.tensor(50000.0)
    out = FusedBalancedL1Loss()(pred.half(), target.half(),
                                avg_factor=avg_factor)
    ref = BalancedL1Loss()(pred.half().float(), target, avg_factor=avg_factor)
    assert out.dtype == torch.float16
    assert (out.float() * 80000 > 65504 if avg_factor is None else
            out.float() * avg_factor > 65504)
    torch.testing.assert_close(out.float(), ref, rtol=2e-3, atol=0)


@pytest.mark.parametrize('reduction', ['none', 'mean'])
@pytest.mark.parametrize('dtypes', [(torch.float32, torch.float64),
                                    (torch.float16, torch.float32)])
def test_a_wider_weight_promotes_as_mmdet(reduction, dtypes):
    """pred and target in one dtype, the weight in a wider one: the loss
    comes out in the promoted dtype, as mmdet's ``loss * weight``."""
    inputs, weight_dtype = dtypes
    pred, target, weight = _inputs(37)
    pred, target = pred.detach().to(inputs), target.to(inputs)
    weight = weight.to(weight_dtype)
    ours = FusedBalancedL1Loss()(pred, target, weight=weight,
                                 reduction_override=reduction)
    ref = BalancedL1Loss()(pred, target, weight=weight,
                           reduction_override=reduction)
    assert ours.dtype == ref.dtype == weight_dtype
    torch.testing.assert_close(ours, ref, atol=1e-3, rtol=1e-3)


def test_saves_one_tensor_for_backward():
    """Ours keeps only the gradient; mmdet's autograd graph keeps several
    tensors of the input's size (the memory the benchmark measures)."""
    pred, target, weight = _inputs(64)

    def saved(loss):
        sizes = []

        def pack(t):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss(pred, target, weight=weight, avg_factor=10.0)
        return sizes

    assert saved(FusedBalancedL1Loss()) == [pred.numel()]
    assert sum(saved(BalancedL1Loss())) >= 4 * pred.numel()


def test_double_backward_is_an_error_not_a_wrong_gradient():
    """The gradient is computed in the forward pass, a constant to autograd:
    a second derivative through it would be wrong, so create_graph=True
    fails with a message (first-order training is unaffected)."""
    pred, target, _ = _inputs(6)
    other = (pred**2).sum()  # gives the total a graph of its own
    with pytest.raises(RuntimeError, match='does not support double '
                       'backward'):
        torch.autograd.grad(FusedBalancedL1Loss()(pred, target) + other,
                            pred, create_graph=True)


@pytest.mark.parametrize('reduction', ['none', 'mean'])
def test_empty_input_keeps_the_graph_of_weight_and_avg_factor(reduction):
    """With no boxes, a weight or a tensor avg_factor that needs a gradient
    gets a zero one, as through mmdet's ``pred.sum() * 0 * weight``."""
    pred, target = torch.zeros(0, 4), torch.zeros(0, 4)
    weight = torch.ones(0, 4, requires_grad=True)
    avg_factor = torch.tensor(3.0, requires_grad=True)
    out = FusedBalancedL1Loss()(pred, target, weight=weight,
                                avg_factor=avg_factor,
                                reduction_override=reduction)
    out.sum().backward()
    assert out.shape == ((0, 4) if reduction == 'none' else ())
    assert weight.grad.shape == (0, 4)
    if reduction == 'mean':
        assert avg_factor.grad == 0


def test_registry_keeps_mmdet_class():
    assert MODELS.get('BalancedL1Loss') is BalancedL1Loss
    loss = MODELS.build(dict(type='FusedBalancedL1Loss', beta=0.11,
                             loss_weight=2.0))
    assert isinstance(loss, FusedBalancedL1Loss)
    assert (loss.beta, loss.loss_weight) == (0.11, 2.0)
    assert 'beta=0.11' in repr(loss)


@pytest.mark.parametrize('kwargs,match', [
    (dict(alpha=0), 'alpha=0'),
    (dict(gamma=-1.0), 'gamma=-1.0'),
    (dict(beta='1'), "beta='1'"),
    (dict(reduction='avg'), "reduction='avg'"),
    (dict(loss_weight=None), 'loss_weight=None'),
    (dict(alpha=True), 'alpha=True'),  # a bool is no number here
    (dict(alpha=math.inf), 'alpha=inf must be a finite number'),
    (dict(loss_weight=math.nan), 'loss_weight=nan must be a finite number'),
    (dict(loss_weight=-1.0), 'loss_weight=-1.0 must be a finite number >= 0'),
    (dict(paper_form='False'), "paper_form='False' must be True or False"),
    # b = e^(gamma / alpha) - 1 overflows float32 (mmdet: at the forward)
    (dict(alpha=0.001, gamma=1.0), 'alpha=0.001 and gamma=1.0 give b = '
     'e\\^\\(gamma / alpha\\) - 1 = inf'),
    (dict(alpha=0.01, gamma=1.0), '- 1 = 2.69e\\+43;'),
    # ... or rounds to 0, which divides alpha
    (dict(alpha=1.0, gamma=1e-20), '- 1 = 0;'),
    # b / beta multiplies |x|: inf in float32 gives 0 * inf = NaN at x = 0
    (dict(beta=1e-38), 'beta=1e-38 is too small: b / beta = 1.91e\\+39'),
])
def test_bad_arguments_fail_at_build(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FusedBalancedL1Loss(**kwargs)


def test_bad_inputs():
    loss = FusedBalancedL1Loss()
    pred, target, weight = _inputs(5)
    with pytest.raises(ValueError, match=r'target.shape=\(4, 4\)'):
        loss(pred, target[:4])
    with pytest.raises(ValueError, match=r'weight.shape=\(3,\)'):
        loss(pred, target, weight=weight[:3, 0])
    with pytest.raises(ValueError, match="reduction_override='avg'"):
        loss(pred, target, reduction_override='avg')


@pytest.mark.parametrize('kwargs,match', [
    (dict(beta=-1.0), 'beta=-1.0'),
    (dict(alpha=0), 'alpha=0'),
])
def test_bad_parameters_of_the_function(kwargs, match):
    pred, target, _ = _inputs(3)
    with pytest.raises(ValueError, match=match):
        fused_balanced_l1_loss(pred, target, **kwargs)


def test_weight_of_length_n_with_n_equal_to_box_dim_is_mmdets():
    """4 boxes and a (4, ) weight: mmdet broadcasts it per coordinate; ours
    does the same and warns that (4, 1) means one weight per object, which
    it then applies per row."""
    pred, target, _ = _inputs(4)
    weight = torch.tensor([1.0, 0.0, 0.0, 0.0])
    with pytest.warns(UserWarning, match=r'pass shape \(4, 1\)'):
        out, grad = _run(FusedBalancedL1Loss(), pred, target, weight=weight)
    ref_out, ref_grad = _run(BalancedL1Loss(), pred, target, weight=weight)
    torch.testing.assert_close(out, ref_out, **TOL)
    torch.testing.assert_close(grad, ref_grad, **TOL)
    per_object, _ = _run(FusedBalancedL1Loss(), pred, target,
                         weight=weight[:, None])
    rows, _ = _run(BalancedL1Loss(), pred, target,
                   weight=weight[:, None].expand(-1, 4))
    torch.testing.assert_close(per_object, rows, **TOL)
    assert not torch.allclose(per_object, out)


def test_no_grad_inputs():
    """Under no_grad the value is unchanged and carries no graph."""
    pred, target, weight = _inputs(8)
    with torch.no_grad():
        value = FusedBalancedL1Loss()(pred, target, weight=weight)
    torch.testing.assert_close(
        value, BalancedL1Loss()(pred, target, weight=weight).detach(), **TOL)
    assert not value.requires_grad


def test_retinanet_libra_trains_and_loads_into_mmdet(toy_cfg, tmp_path,
                                                    toy_data_root):
    """One loss step of the toy Libra RetinaNet with our loss, then its
    weights load strictly into mmdet's Libra RetinaNet config and predict
    the same boxes, scores and labels (no inference cost)."""
    cfg = toy_cfg('retinanet_libra.py')
    assert cfg.model.bbox_head.loss_bbox.type == 'FusedBalancedL1Loss'
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    packed = demo_mm_inputs(2, [[3, 64, 64], [3, 64, 64]], num_items=[3, 1],
                            num_classes=4)
    data = model.data_preprocessor(packed, True)
    losses = model.loss(data['inputs'], data['data_samples'])
    loss_bbox = sum(losses['loss_bbox'])
    assert torch.isfinite(loss_bbox) and loss_bbox > 0

    base = tmp_path / 'mmdet_libra_retinanet.py'
    base.write_text("_base_ = 'mmdet::libra_rcnn/"
                    "libra-retinanet_r50_fpn_1x_coco.py'\n")
    ref = MODELS.build(apply_toy(Config.fromfile(str(base)), 'tiny',
                                 toy_data_root).model)
    ref.load_state_dict(model.state_dict(), strict=True)
    model.eval(), ref.eval()
    for m in (model, ref):  # an untrained head scores below the 0.05 default
        m.bbox_head.test_cfg['score_thr'] = 0.0
    data = model.data_preprocessor(packed, False)
    with torch.no_grad():
        ours = model.predict(data['inputs'], data['data_samples'])
        theirs = ref.predict(data['inputs'], data['data_samples'])
    assert sum(len(a.pred_instances) for a in ours) > 0
    for a, b in zip(ours, theirs):
        for key in ('bboxes', 'scores', 'labels'):
            assert torch.equal(a.pred_instances[key], b.pred_instances[key])
