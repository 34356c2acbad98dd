"""Balanced L1 loss of Libra R-CNN as one fused autograd function.

Pang et al., "Libra R-CNN: Towards Balanced Learning for Object Detection",
CVPR 2019, Eq. (7)-(9). mmdet registers ``BalancedL1Loss``; this module
registers ``FusedBalancedL1Loss`` next to it (a config selects it with
``loss_bbox=dict(type='FusedBalancedL1Loss', ...)``). By default both
compute the same values and gradients; this one does it in one pass and
keeps a single tensor for the backward pass, where autograd keeps four float
intermediates and a mask of the input's size through mmdet's
``abs``/``log``/``where`` graph.
With ``paper_form=True`` it computes Eq. (8) with ``|x|`` in units of
``beta`` instead, whose gradient is Eq. (7)'s for every beta (mmdet's formula
is Eq. (8) only at beta = 1).
"""
import math
import warnings
from typing import Optional, Union

import torch
import torch.nn as nn
from torch import Tensor

from mmdet.registry import MODELS

from ...utils.checks import is_real

_REDUCTIONS = ('none', 'mean', 'sum')


class _BalancedL1(torch.autograd.Function):
    """Weighted, reduced Balanced L1 with a closed-form gradient.

    With ``x = pred - target``, ``d = |x|`` and ``b = e^(gamma / alpha) - 1``
    the element-wise loss is, with ``s = 1`` (mmdet's formula) or
    ``s = beta`` (``paper_form``),

        ``alpha / b * (b d + s) ln(b d / beta + 1) - alpha d``  for d < beta,
        ``gamma d + gamma s / b - alpha beta``                  otherwise,

    whose derivative in ``d`` is
    ``alpha ln(b d / beta + 1) + alpha (s - beta) / (b d + beta)`` inside
    (Eq. (7) when s = beta, that is always in the paper form and at beta = 1
    in mmdet's) and ``gamma`` outside. The paper form is ``beta`` times
    Eq. (8) at ``d / beta``. The gradient is computed in the forward pass,
    where it shares the logarithm with the loss, and is the only tensor
    saved.
    """

    @staticmethod
    def forward(ctx, pred: Tensor, target: Tensor, weight: Optional[Tensor],
                alpha: float, gamma: float, beta: float, shift: float,
                reduction: str, scale: float) -> Tensor:
        # Every step below works in place where it can: the peak is four
        # tensors of pred's size (five for mmdet's form at beta != 1), and
        # the gradient is the only one that outlives the call.
        b = math.exp(gamma / alpha) - 1
        x = pred - target
        d = x.abs()
        linear = d >= beta  # the part where the loss is linear
        log_term = (d * (b / beta)).log1p_()
        loss = (d * b).add_(shift).mul_(alpha / b).mul_(log_term)
        loss.sub_(d, alpha=alpha)
        grad = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            grad = log_term.mul_(alpha)
            if shift != beta:  # mmdet's (b d + 1) at beta != 1
                grad.add_((d * b).add_(beta).reciprocal_(),
                          alpha=alpha * (shift - beta))
            grad.masked_fill_(linear, gamma)
            grad.mul_(x.sign_())  # d|x|/dx, 0 at x = 0 as autograd's abs
            if weight is not None:
                grad.mul_(weight)
            if scale != 1:
                grad.mul_(scale)
        del x, log_term
        outer = d.mul_(gamma).add_(gamma * shift / b - alpha * beta)
        loss = torch.where(linear, outer, loss, out=loss)
        del d, outer, linear
        keep_loss = ctx.needs_input_grad[2]  # d loss / d weight
        ctx.save_for_backward(grad, loss if keep_loss else None)
        ctx.scale = scale
        ctx.weight_shape = None if weight is None else weight.shape
        if weight is not None:
            # in place unless the loss must stay, or the weight promotes
            # the dtype (mmdet's loss * weight returns the promoted one)
            in_place = not keep_loss and torch.promote_types(
                loss.dtype, weight.dtype) == loss.dtype
            loss = loss.mul_(weight) if in_place else loss * weight
        if reduction != 'none':
            # accumulate half precision in float32, as mmdet's mean() does,
            # so that a sum beyond the half range does not overflow
            acc = torch.promote_types(loss.dtype, torch.float32)
            return loss.sum(dtype=acc).mul_(scale).to(loss.dtype)
        # (a kept loss is not this one: the weight made a new tensor)
        return loss if scale == 1 else loss.mul_(scale)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        # grad mode is on here only under create_graph=True; the saved
        # gradient is a constant to autograd, so a second derivative through
        # it would be silently wrong (``once_differentiable`` lets that pass
        # when ``grad_out`` needs no gradient)
        if torch.is_grad_enabled():
            raise RuntimeError(
                'FusedBalancedL1Loss does not support double backward '
                '(create_graph=True): its gradient is computed in the '
                "forward pass. Use mmdet's BalancedL1Loss for higher-order "
                'gradients')
        grad, loss = ctx.saved_tensors
        grad_pred = grad_target = grad_weight = None
        if grad is not None:
            grad_pred = grad * grad_out
            if ctx.needs_input_grad[1]:
                grad_target = -grad_pred
            if not ctx.needs_input_grad[0]:
                grad_pred = None
        if loss is not None:
            grad_weight = loss * ctx.scale * grad_out
            grad_weight = grad_weight.sum_to_size(ctx.weight_shape)
        return grad_pred, grad_target, grad_weight, None, None, None, None, \
            None, None


def _check_params(owner: str, alpha, gamma, beta, paper_form) -> None:
    if not isinstance(paper_form, bool):  # 'False' would be taken as true
        raise ValueError(f'{owner}: paper_form={paper_form!r} must be True '
                         'or False')
    for key, value in (('alpha', alpha), ('gamma', gamma), ('beta', beta)):
        if not is_real(value) or not 0 < value < math.inf:
            raise ValueError(f'{owner}: {key}={value!r} must be a finite '
                             'number > 0')
    # b = e^(gamma / alpha) - 1, as the forward computes it, multiplies |x|
    # and divides alpha: both must fit in float32, where the loss is computed
    try:
        b = math.exp(gamma / alpha) - 1
    except OverflowError:
        b = math.inf
    largest = torch.finfo(torch.float32).max
    if not (0 < b <= largest and alpha / b <= largest):
        raise ValueError(f'{owner}: alpha={alpha!r} and gamma={gamma!r} give '
                         f'b = e^(gamma / alpha) - 1 = {b:.3g}; b and '
                         'alpha / b must be finite in float32')
    # b / beta multiplies |x| inside the logarithm
    if b / beta > largest:
        raise ValueError(f'{owner}: beta={beta!r} is too small: b / beta = '
                         f'{b / beta:.3g} (b = e^(gamma / alpha) - 1) must '
                         'be finite in float32')


def _broadcasts(shape: torch.Size, to: torch.Size) -> bool:
    try:
        return torch.broadcast_shapes(shape, to) == to
    except RuntimeError:
        return False


def fused_balanced_l1_loss(pred: Tensor,
                           target: Tensor,
                           weight: Optional[Tensor] = None,
                           alpha: float = 0.5,
                           gamma: float = 1.5,
                           beta: float = 1.0,
                           reduction: str = 'mean',
                           avg_factor: Optional[Union[float, Tensor]] = None,
                           loss_weight: float = 1.0,
                           paper_form: bool = False) -> Tensor:
    """Balanced L1 loss (Libra R-CNN, Eq. (8)) with mmdet's weighting.

    Same contract as mmdet's ``balanced_l1_loss`` wrapped by
    ``weighted_loss``: ``weight`` multiplies the element-wise loss, ``mean``
    divides the sum by ``avg_factor + eps`` when ``avg_factor`` is given and
    by the number of elements otherwise, ``none`` ignores ``avg_factor``.
    Empty inputs differ on purpose: 'none' returns an empty loss of the
    input's shape (mmdet a 0-d zero) and a weighted 'mean' without
    ``avg_factor`` zero (mmdet NaN, from 0 / 0).

    Args:
        pred (Tensor): Predictions, shape (N, ...), e.g. (N, 4) box deltas.
        target (Tensor): Targets, same shape as ``pred``.
        weight (Tensor, optional): Element-wise weights broadcastable to
            ``pred`` (as in mmdet), or one weight per row of shape (N, )
            (per-object weights, e.g. from mixup) where that shape does not
            broadcast. When N equals the last dimension (4 boxes, weight
            (4, )) mmdet's reading wins, per coordinate, with a warning;
            pass (N, 1) for per-object weights. Defaults to None.
        alpha (float): Eq. (7)'s alpha. Defaults to 0.5.
        gamma (float): Eq. (7)'s gamma, the gradient beyond ``beta``.
            Defaults to 1.5.
        beta (float): Where the loss becomes linear. Defaults to 1.0.
        reduction (str): 'none', 'mean' or 'sum'. Defaults to 'mean'.
        avg_factor (float | Tensor, optional): Normaliser of 'mean'.
            Defaults to None.
        loss_weight (float): Multiplies the result. Defaults to 1.0.
        paper_form (bool): Eq. (8) with ``|x|`` in units of ``beta``, whose
            gradient is exactly ``alpha ln(b |x| / beta + 1)`` inside beta
            and ``gamma`` outside; False: mmdet's formula, the same at
            beta = 1 and otherwise with an extra gradient
            ``alpha (1 - beta) / (b |x| + beta)`` inside. Defaults to False.

    Returns:
        Tensor: The loss, element-wise for 'none', else a scalar.
    """
    _check_params('fused_balanced_l1_loss', alpha, gamma, beta, paper_form)
    if pred.shape != target.shape:
        raise ValueError(f'pred and target must have the same shape, got '
                         f'pred.shape={tuple(pred.shape)} and '
                         f'target.shape={tuple(target.shape)}')
    if reduction not in _REDUCTIONS:
        raise ValueError(f'reduction={reduction!r} must be one of '
                         f'{_REDUCTIONS}')
    if avg_factor is not None and reduction == 'sum':
        raise ValueError('avg_factor can not be used with reduction="sum"')
    if weight is not None:
        per_row = weight.dim() >= 1 and weight.shape == pred.shape[:-1]
        if not _broadcasts(weight.shape, pred.shape):
            if not per_row:
                raise ValueError(
                    f'weight.shape={tuple(weight.shape)} broadcasts neither '
                    f'to pred.shape={tuple(pred.shape)} nor is one weight '
                    'per row')
            weight = weight.unsqueeze(-1)  # one weight per object (row)
        elif per_row and weight.shape[-1] > 1:
            warnings.warn(
                f'fused_balanced_l1_loss: weight.shape='
                f'{tuple(weight.shape)} is read per coordinate of pred.shape='
                f'{tuple(pred.shape)}, as mmdet does; pass shape '
                f'{tuple(weight.shape) + (1, )} for one weight per object')
    if reduction == 'mean':
        if avg_factor is None:
            scale = loss_weight / max(pred.numel(), 1)
        else:
            eps = torch.finfo(torch.float32).eps
            scale = loss_weight / (avg_factor + eps)
    else:
        scale = loss_weight
    shift = beta if paper_form else 1.0
    if pred.numel() == 0:
        # mmdet returns ``pred.sum() * 0`` here, then weights and reduces it;
        # this keeps the graph of every input that has one (a zero gradient),
        # and the element-wise shape for 'none'
        loss = pred * 0 if weight is None else pred * 0 * weight
        return loss if reduction == 'none' else loss.sum() * scale
    if isinstance(scale, Tensor):
        # a tensor avg_factor scales outside the function, so that autograd
        # also differentiates the normaliser, as it does through mmdet's;
        # the sum is taken here, in float32 for half precision, and cast
        # after the division, so that it does not overflow
        loss = _BalancedL1.apply(pred, target, weight, alpha, gamma, beta,
                                 shift, 'none', 1.0)
        acc = torch.promote_types(loss.dtype, torch.float32)
        return (loss.sum(dtype=acc) * scale).to(loss.dtype)
    return _BalancedL1.apply(pred, target, weight, alpha, gamma, beta,
                             shift, reduction, scale)


@MODELS.register_module()
class FusedBalancedL1Loss(nn.Module):
    """Balanced L1 loss, Libra R-CNN (CVPR 2019) Eq. (8), fused.

    A drop-in replacement for mmdet's ``BalancedL1Loss``: same arguments,
    values and gradients with the default ``paper_form=False`` (to float32
    rounding; on empty inputs see :func:`fused_balanced_l1_loss`), faster
    and with one saved tensor instead of autograd's chain of
    intermediates. A config selects it
    with ``loss_bbox=dict(_delete_=True, type='FusedBalancedL1Loss',
    alpha=0.5, gamma=1.5, beta=1.0, loss_weight=1.0)``.

    Args:
        alpha (float): Eq. (7)'s alpha, > 0. Defaults to 0.5.
        gamma (float): Eq. (7)'s gamma, > 0. Defaults to 1.5.
        beta (float): Where the loss becomes linear, > 0. Defaults to 1.0.
        reduction (str): 'none', 'mean' or 'sum'. Defaults to 'mean'.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        paper_form (bool): Eq. (8) with ``|x|`` in units of ``beta``, whose
            gradient is Eq. (7)'s at every beta (see
            :func:`fused_balanced_l1_loss`); False keeps mmdet's values,
            which differ when beta != 1. Defaults to False.
    """

    def __init__(self,
                 alpha: float = 0.5,
                 gamma: float = 1.5,
                 beta: float = 1.0,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 paper_form: bool = False) -> None:
        super().__init__()
        _check_params('FusedBalancedL1Loss', alpha, gamma, beta, paper_form)
        if reduction not in _REDUCTIONS:
            raise ValueError(f'FusedBalancedL1Loss: reduction={reduction!r} '
                             f'must be one of {_REDUCTIONS}')
        if not is_real(loss_weight) or not math.isfinite(loss_weight) \
                or loss_weight < 0:
            raise ValueError(f'FusedBalancedL1Loss: loss_weight='
                             f'{loss_weight!r} must be a finite number >= 0')
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.beta = float(beta)
        self.reduction = reduction
        self.loss_weight = float(loss_weight)
        self.paper_form = paper_form

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[Union[float, Tensor]] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """Compute the loss.

        Args:
            pred (Tensor): Predictions, shape (N, 4).
            target (Tensor): Targets, shape (N, 4).
            weight (Tensor, optional): Weights of shape (N, 4), or (N, 1)
                or (N, ) for one weight per object (see
                :func:`fused_balanced_l1_loss`). Defaults to None.
            avg_factor (float | Tensor, optional): Normaliser of 'mean'.
                Defaults to None.
            reduction_override (str, optional): Replaces ``reduction`` for
                this call. Defaults to None.

        Returns:
            Tensor: The loss.
        """
        if reduction_override not in (None, ) + _REDUCTIONS:
            raise ValueError(f'reduction_override={reduction_override!r} '
                             f'must be None or one of {_REDUCTIONS}')
        reduction = reduction_override or self.reduction
        return fused_balanced_l1_loss(
            pred, target, weight, alpha=self.alpha, gamma=self.gamma,
            beta=self.beta, reduction=reduction, avg_factor=avg_factor,
            loss_weight=self.loss_weight, paper_form=self.paper_form)

    def extra_repr(self) -> str:
        return (f'alpha={self.alpha}, gamma={self.gamma}, beta={self.beta}, '
                f'reduction={self.reduction!r}, '
                f'loss_weight={self.loss_weight}, '
                f'paper_form={self.paper_form}')
