"""PAA head whose anchor-reassignment score is guided, as in Sampling-Free.

Chen et al., "Is Heuristic Sampling Necessary in Training Deep Object
Detectors?" (IEEE TIP 2021), guided loss scaling (Sec. III-C, Eq. (6)),
which the official sampling-free PAA also applies inside PAA's anchor
scoring (Kim and Lee, "Probabilistic Anchor Assignment with IoU Prediction
for Object Detection", ECCV 2020): the classification loss of the
candidates is multiplied by

    r = sum of the candidates' box losses / sum of the CE over all anchors,

both over the batch and without gradient, before it is added to the box
loss to give the score the GMM splits. mmdet's ``PAAHead``, like the
original PAA code, adds the raw terms, which suits focal loss; with plain CE
the candidates' CE (about 5.8 at the prior 3e-3) then outweighs their box
loss several times. With r the CE over all anchors, on COCO mostly the
negatives', sets the scale, and the score leans on the box loss. The box
loss in the score is the unweighted GIoU, as in the official code (mmdet's
carries ``loss_bbox.loss_weight``).
"""
from typing import List

import torch
from torch import Tensor

from mmdet.models.dense_heads import PAAHead
from mmdet.registry import MODELS


@MODELS.register_module()
class SamplingFreePAAHead(PAAHead):
    """:class:`~mmdet.models.dense_heads.PAAHead` with the Sampling-Free
    guided scaling of the reassignment score (see the module docstring).

    Only the choice of positives changes; the losses are then PAAHead's.
    Same constructor arguments, parameters and state dict keys as PAAHead,
    so a trained model loads strictly into a plain PAA config.
    """

    def loss_by_feat(self, *args, **kwargs) -> dict:
        """PAAHead's losses. Every image's scoring terms are gathered by
        :meth:`get_pos_loss` before the first :meth:`paa_reassign`, which
        needs the batch's sums (``multi_apply`` runs the one over all images,
        then the other)."""
        self._cls_sum = self._reg_sum = 0
        try:
            return super().loss_by_feat(*args, **kwargs)
        finally:
            del self._cls_sum, self._reg_sum

    # no graph: the score only picks the positives (mmdet's get_pos_loss
    # builds one that is never used)
    @torch.no_grad()
    def get_pos_loss(self, anchors: List[Tensor], cls_score: Tensor,
                     bbox_pred: Tensor, label: Tensor, label_weight: Tensor,
                     bbox_target: Tensor, bbox_weight: Tensor,
                     pos_inds: Tensor) -> tuple:
        """The candidates' classification and box terms of one image, kept
        apart, shape (num_candidates, 2); adds the image's CE over all
        anchors and its candidates' box losses to the batch's sums.

        Args and the candidates' terms are those of
        ``PAAHead.get_pos_loss``, the box term divided by
        ``loss_bbox.loss_weight``.
        """
        # float32: ~1e5 anchors x classes per image
        self._cls_sum = self._cls_sum + self.loss_cls(
            cls_score, label, label_weight, reduction_override='sum').float()
        if not len(pos_inds):
            return cls_score.new_zeros((0, 2)),
        pos_anchors = torch.cat(anchors, 0)[pos_inds]
        loss_cls = self.loss_cls(
            cls_score[pos_inds],
            label[pos_inds],
            label_weight[pos_inds],
            avg_factor=1.0,
            reduction_override='none').sum(-1)
        loss_bbox = self.loss_bbox(
            self.bbox_coder.decode(pos_anchors, bbox_pred[pos_inds]),
            bbox_target[pos_inds],
            bbox_weight[pos_inds],
            avg_factor=1.0,
            reduction_override='none') / self.loss_bbox.loss_weight
        self._reg_sum = self._reg_sum + loss_bbox.sum().float()
        return torch.stack([loss_cls, loss_bbox], 1),

    def paa_reassign(self, pos_losses: Tensor, *args) -> tuple:
        """``PAAHead.paa_reassign`` on the guided score
        ``r * classification + box`` of the candidates."""
        ratio = self._reg_sum / self._cls_sum.clamp(
            min=torch.finfo(self._cls_sum.dtype).tiny)
        return super().paa_reassign(
            pos_losses[:, 0] * ratio + pos_losses[:, 1], *args)
