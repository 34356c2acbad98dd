"""YOLOv3 head with per-object loss weights (Bag of Freebies mixup).

Zhang et al., "Bag of Freebies for Training Object Detection Neural
Networks", 2019, Sec. 3.1, as GluonCV's ``YOLOV3Loss`` implements it: at a
positive anchor the objectness target holds the object's mixup ratio w; the
loss uses the hard target 1 with weight w, and w also multiplies the xy, wh
and class terms of that anchor. Negatives keep weight 1, ignored anchors 0.
"""
from typing import List

import torch
from mmengine.structures import InstanceData
from torch import Tensor

from mmdet.models.dense_heads import YOLOV3Head
from mmdet.registry import MODELS

from ..utils import get_gt_weights


@MODELS.register_module()
class WeightedYOLOV3Head(YOLOV3Head):
    """:class:`~mmdet.models.dense_heads.YOLOV3Head` whose positive
    objectness, xy, wh and class terms are multiplied by their gt's
    ``gt_instances.weights``.

    When any image of the batch has ``weights`` the target map of every
    image gets one extra last column, the weight of the object each anchor
    is assigned to (1 where the image has no weights or the anchor no
    object). Without the field anywhere in the batch the targets and losses
    are YOLOV3Head's, bit for bit. Same constructor arguments, parameters
    and state dict keys as YOLOV3Head.
    """

    def get_targets(self, anchor_list: List[List[Tensor]],
                    responsible_flag_list: List[List[Tensor]],
                    batch_gt_instances: List[InstanceData]) -> tuple:
        """Give images without weights unit weights when others have some,
        so that all target maps have the weight column; then as mmdet."""
        weighted = [
            get_gt_weights(gt) is not None for gt in batch_gt_instances
        ]
        if any(weighted) and not all(weighted):
            batch_gt_instances = [
                gt if has_weights else self._with_unit_weights(gt)
                for gt, has_weights in zip(batch_gt_instances, weighted)
            ]
        return super().get_targets(anchor_list, responsible_flag_list,
                                   batch_gt_instances)

    @staticmethod
    def _with_unit_weights(gt_instances: InstanceData) -> InstanceData:
        filled = gt_instances.new()  # shallow: mmdet's fields are shared
        filled.weights = gt_instances.labels.new_ones(
            len(gt_instances), dtype=torch.float)
        return filled

    def _get_targets_single(self, anchors: List[Tensor],
                            responsible_flags: List[Tensor],
                            gt_instances: InstanceData) -> tuple:
        """mmdet's targets, plus a last column of object weights if
        ``gt_instances`` has ``weights``.

        Returns:
            tuple: ``target_map`` of shape (num_total_anchors,
            5 + num_classes), or 6 + num_classes with the weight column,
            and ``neg_map`` of shape (num_total_anchors, ).
        """
        target_map, neg_map = super()._get_targets_single(
            anchors, responsible_flags, gt_instances)
        weights = get_gt_weights(gt_instances)
        if weights is None:
            return target_map, neg_map
        # mmdet keeps its assignment local; GridAssigner is deterministic,
        # so assigning again names the gt of each positive without copying
        # mmdet's target code.
        priors = InstanceData(
            priors=torch.cat(anchors),
            responsible_flags=torch.cat(responsible_flags))
        gt_inds = self.assigner.assign(priors, gt_instances).gt_inds
        assigned = gt_inds > 0
        obj_weights = target_map.new_ones(len(target_map))
        obj_weights[assigned] = weights[gt_inds[assigned] - 1].to(
            obj_weights.dtype)
        return torch.cat([target_map, obj_weights[:, None]], dim=1), neg_map

    def loss_by_feat_single(self, pred_map: Tensor, target_map: Tensor,
                            neg_map: Tensor) -> tuple:
        """Loss of one level; mmdet's unless ``target_map`` has the weight
        column.

        Returns:
            tuple: loss_cls, loss_conf, loss_xy, loss_wh, as YOLOV3Head.
        """
        if target_map.size(-1) == self.num_attrib:
            return super().loss_by_feat_single(pred_map, target_map, neg_map)
        target_map, obj_weights = target_map[..., :-1], target_map[..., -1]
        num_imgs = len(pred_map)
        pred_map = pred_map.permute(0, 2, 3,
                                    1).reshape(num_imgs, -1, self.num_attrib)
        pos_mask = target_map[..., 4]
        pos_weights = pos_mask * obj_weights
        # Positives and negatives are disjoint (mmdet only warns otherwise);
        # anchors in neither (ignored) get weight 0, as in mmdet.
        conf_weights = neg_map.float() + pos_weights
        pos_weights = pos_weights.unsqueeze(dim=-1)

        loss_cls = self.loss_cls(
            pred_map[..., 5:], target_map[..., 5:], weight=pos_weights)
        # hard objectness target 1 at positives (GluonCV's hard_objness_t)
        loss_conf = self.loss_conf(
            pred_map[..., 4], pos_mask, weight=conf_weights)
        loss_xy = self.loss_xy(
            pred_map[..., :2], target_map[..., :2], weight=pos_weights)
        loss_wh = self.loss_wh(
            pred_map[..., 2:4], target_map[..., 2:4], weight=pos_weights)
        return loss_cls, loss_conf, loss_xy, loss_wh
