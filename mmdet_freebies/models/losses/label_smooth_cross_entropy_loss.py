"""Cross-entropy with class label smoothing.

Zhang et al., "Bag of Freebies for Training Object Detection Neural
Networks" (arXiv:1902.04103), Sec. 3.3, Eq. (3):
``q'_i = (1 - eps) q_i + eps / K`` for a one-hot target ``q`` over ``K``
classes (Szegedy et al., Inception-v3).
"""
import functools
import math
from typing import List, Optional

import torch.nn.functional as F
from mmdet.models.losses import CrossEntropyLoss
from mmdet.models.losses.cross_entropy_loss import (_expand_onehot_labels,
                                                    binary_cross_entropy)
from mmdet.models.losses.utils import weight_reduce_loss
from mmdet.registry import MODELS
from torch import Tensor

from ...utils.checks import is_int, is_real


def label_smooth_cross_entropy(pred: Tensor,
                               label: Tensor,
                               weight: Optional[Tensor] = None,
                               reduction: str = 'mean',
                               avg_factor: Optional[float] = None,
                               class_weight: Optional[Tensor] = None,
                               ignore_index: Optional[int] = -100,
                               avg_non_ignore: bool = False,
                               label_smoothing: float = 0.0) -> Tensor:
    """Softmax CE against ``(1 - eps) one_hot(label) + eps / K`` (Eq. 3).

    ``K = pred.size(1)``: for an RoI classifier that is ``num_classes + 1``,
    background included. Same arguments and reduction as mmdet's
    ``cross_entropy``; the per-sample value is PyTorch's ``label_smoothing``
    cross-entropy: ``(1 - eps) * w_y * (-log p_y) + eps / K * sum_k w_k *
    (-log p_k)`` with ``w`` the class weights (all 1 by default).
    """
    ignore_index = -100 if ignore_index is None else ignore_index
    loss = F.cross_entropy(
        pred,
        label,
        weight=class_weight,
        reduction='none',
        ignore_index=ignore_index,
        label_smoothing=label_smoothing)
    if avg_factor is None and avg_non_ignore and reduction == 'mean':
        avg_factor = label.numel() - (label == ignore_index).sum().item()
    if weight is not None:
        weight = weight.float()
    return weight_reduce_loss(
        loss, weight=weight, reduction=reduction, avg_factor=avg_factor)


def label_smooth_binary_cross_entropy(pred: Tensor,
                                      label: Tensor,
                                      weight: Optional[Tensor] = None,
                                      reduction: str = 'mean',
                                      avg_factor: Optional[float] = None,
                                      class_weight: Optional[Tensor] = None,
                                      ignore_index: Optional[int] = -100,
                                      avg_non_ignore: bool = False,
                                      label_smoothing: float = 0.0) -> Tensor:
    """Sigmoid BCE with every binary target smoothed by Eq. (3), K = 2.

    Each sigmoid output is its own two-class problem, so a target ``t`` in
    {0, 1} becomes ``(1 - eps) t + eps / 2``: ``1 - eps / 2`` for the
    positive class and ``eps / 2`` for all others. This is GluonCV's YOLOv3
    smoothing (positive ``1 - e``, negatives ``e``) with ``eps = 2 e``.
    ``label`` is either class indices (expanded to one-hot as in mmdet's
    ``binary_cross_entropy``) or float targets of ``pred``'s shape.
    """
    ignore_index = -100 if ignore_index is None else ignore_index
    # the ignored elements are found on the labels before smoothing (as in
    # mmdet's binary_cross_entropy) and go into the weight
    if pred.dim() != label.dim():
        label, weight, valid_mask = _expand_onehot_labels(
            label, weight, pred.size(-1), ignore_index)
    else:
        valid_mask = ((label >= 0) & (label != ignore_index)).float()
        weight = valid_mask if weight is None else weight * valid_mask
    if avg_factor is None and avg_non_ignore and reduction == 'mean':
        avg_factor = valid_mask.sum().item()
    label = label.float() * (1 - label_smoothing) + label_smoothing / 2
    # smoothed targets lie in [0, 1]: mmdet's default ignore_index (-100)
    # masks none of them again
    return binary_cross_entropy(pred, label, weight, reduction, avg_factor,
                                class_weight)


@MODELS.register_module()
class LabelSmoothCrossEntropyLoss(CrossEntropyLoss):
    """mmdet's ``CrossEntropyLoss`` with class label smoothing (BoF Eq. 3).

    Same constructor (but ``use_mask``) and ``forward`` interface as
    ``CrossEntropyLoss`` (``weight``, ``avg_factor``, ``reduction_override``,
    ``ignore_index``, ``class_weight``, ``loss_weight``); with
    ``label_smoothing=0`` it *is* ``CrossEntropyLoss`` (same criterion,
    identical values).

    * Softmax (``use_sigmoid=False``, the Faster R-CNN RoI classifier of the
      paper): target ``(1 - eps) q + eps / K`` with ``K`` the number of
      logits, i.e. ``num_classes + 1`` for an RoI head (background is one of
      the smoothed classes).
    * Sigmoid (``use_sigmoid=True``, e.g. YOLOv3's ``loss_cls``): each
      binary target becomes ``(1 - eps) t + eps / 2``. ``eps = 2 e`` with
      GluonCV's ``e = min(1 / C, 1 / 40)`` reproduces GluonCV's YOLOv3
      targets (positive ``1 - e``, negatives ``e``). mmdet's
      ``YOLOV3Head(one_hot_smoother=eps)`` instead spreads ``eps`` over
      the ``C`` classes (positive ``1 - eps + eps / C``, negatives
      ``eps / C``), so for COCO with ``eps = 1/40`` its negative targets
      are 40 times smaller than GluonCV's (1/3200 against 1/80).

    Args:
        label_smoothing (float): ``eps`` in [0, 1). Defaults to 0.1.
        use_sigmoid (bool): Sigmoid (binary) targets instead of softmax.
            Defaults to False.
        reduction (str): 'none', 'mean' or 'sum'. Defaults to 'mean'.
        class_weight (list[float], optional): Weight of each class.
            Defaults to None.
        ignore_index (int, optional): Label index to ignore. Defaults to
            None.
        loss_weight (float): Weight of the loss. Defaults to 1.0.
        avg_non_ignore (bool): Average only over non-ignored targets.
            Defaults to False.
    """

    def __init__(self,
                 label_smoothing: float = 0.1,
                 use_sigmoid: bool = False,
                 reduction: str = 'mean',
                 class_weight: Optional[List[float]] = None,
                 ignore_index: Optional[int] = None,
                 loss_weight: float = 1.0,
                 avg_non_ignore: bool = False) -> None:
        if not is_real(label_smoothing) or not 0 <= label_smoothing < 1:
            raise ValueError('LabelSmoothCrossEntropyLoss: label_smoothing '
                             'must be a number in [0, 1), got '
                             f'label_smoothing={label_smoothing!r}')
        if reduction not in ('none', 'mean', 'sum'):
            raise ValueError('LabelSmoothCrossEntropyLoss: reduction must be '
                             "'none', 'mean' or 'sum', got "
                             f'reduction={reduction!r}')
        for key, value, ok, expected in (
                ('use_sigmoid', use_sigmoid, isinstance(use_sigmoid, bool),
                 'True or False'),
                ('avg_non_ignore', avg_non_ignore,
                 isinstance(avg_non_ignore, bool), 'True or False'),
                ('loss_weight', loss_weight, is_real(loss_weight)
                 and math.isfinite(loss_weight) and loss_weight >= 0,
                 'a finite number >= 0'),
                # mmdet turns it into a tensor only in forward
                ('class_weight', class_weight, class_weight is None or (
                    isinstance(class_weight, (list, tuple)) and all(
                        is_real(w) and math.isfinite(w) and w >= 0
                        for w in class_weight)),
                 'None or a list of finite numbers >= 0, one per class'),
                ('ignore_index', ignore_index,
                 ignore_index is None or is_int(ignore_index),
                 'an int or None')):
            if not ok:  # a string such as 'False' would be taken as true
                raise ValueError(f'LabelSmoothCrossEntropyLoss: {key} must '
                                 f'be {expected}, got {key}={value!r}')
        super().__init__(
            use_sigmoid=use_sigmoid,
            reduction=reduction,
            class_weight=class_weight,
            ignore_index=ignore_index,
            loss_weight=loss_weight,
            avg_non_ignore=avg_non_ignore)
        self.label_smoothing = float(label_smoothing)
        if self.label_smoothing > 0:
            criterion = (
                label_smooth_binary_cross_entropy
                if use_sigmoid else label_smooth_cross_entropy)
            self.cls_criterion = functools.partial(
                criterion, label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        """Extra repr."""
        return (f'label_smoothing={self.label_smoothing}, '
                f'use_sigmoid={self.use_sigmoid}, ' + super().extra_repr())


__all__ = [
    'LabelSmoothCrossEntropyLoss', 'label_smooth_cross_entropy',
    'label_smooth_binary_cross_entropy'
]
