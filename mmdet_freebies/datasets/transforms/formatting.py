"""Packing that keeps the per-object mixup weights.

mmdet's ``PackDetInputs`` only maps ``gt_bboxes``, ``gt_bboxes_labels`` and
``gt_masks`` into ``gt_instances`` and drops every other key, so the
weights added by :class:`VisuallyCoherentMixup` (Bag of Freebies, Zhang et
al. 2019, Sec. 3.1) would never reach the loss.
"""
import numpy as np
from mmdet.datasets.transforms import PackDetInputs
from mmdet.registry import TRANSFORMS


@TRANSFORMS.register_module()
class PackDetInputsWithWeights(PackDetInputs):
    """``PackDetInputs`` that also packs ``gt_weights``.

    ``gt_weights`` goes to ``data_samples.gt_instances.weights`` (float32),
    split by ``gt_ignore_flags`` exactly like the labels: weights of ignored
    objects go to ``data_samples.ignored_instances.weights``. Without
    ``gt_weights`` in the results the output is identical to
    ``PackDetInputs`` (no ``weights`` field, so heads compute mmdet's loss).

    Required Keys:

    - img
    - gt_bboxes (optional)
    - gt_bboxes_labels (optional)
    - gt_ignore_flags (optional)
    - gt_weights (np.float32) (optional): one weight per box in
      ``gt_bboxes``, finite and >= 0.

    Added Keys:

    - inputs (torch.Tensor)
    - data_samples (DetDataSample): with ``gt_instances.weights`` when
      ``gt_weights`` is given.

    Args:
        meta_keys (Sequence[str]): Meta keys collected into the data
            sample's metainfo. Defaults to ``('img_id', 'img_path',
            'ori_shape', 'img_shape', 'scale_factor', 'flip',
            'flip_direction')``.
    """
    mapping_table = {**PackDetInputs.mapping_table, 'gt_weights': 'weights'}

    def transform(self, results: dict) -> dict:
        """Check that the weights are aligned with the boxes and valid,
        then pack."""
        if 'gt_weights' in results:
            num_weights = len(results['gt_weights'])
            num_boxes = len(results.get('gt_bboxes', ()))
            if num_weights != num_boxes:
                raise ValueError(
                    f'gt_weights has {num_weights} entries but gt_bboxes has '
                    f'{num_boxes}: a transform between the mixup and the '
                    'packing dropped objects without dropping their weights; '
                    "wrap it in AlignInstanceKeys, with 'gt_weights' in its "
                    'keys (the default)')
            weights = np.asarray(results['gt_weights'], np.float32)
            if not (np.isfinite(weights) & (weights >= 0)).all():
                raise ValueError(f'gt_weights must be finite and >= 0, got '
                                 f'{weights.tolist()}')
            results['gt_weights'] = weights
        return super().transform(results)
