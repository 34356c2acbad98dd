"""Keep extra per-object keys aligned through transforms that drop objects.

mmdet's cropping transforms (``MinIoURandomCrop``, ``RandomCrop``, ...)
filter ``gt_bboxes``, ``gt_bboxes_labels`` and ``gt_ignore_flags`` but not
keys they do not know, such as the mixup ``gt_weights`` of Bag of Freebies
(Zhang et al. 2019). GluonCV kept the weight as an extra label column, so
its crops filtered it for free; this wrapper gives mmdet pipelines the same.
"""
from typing import List, Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.dataset import Compose
from mmdet.registry import TRANSFORMS
from mmdet.utils import ConfigType


@TRANSFORMS.register_module()
class AlignInstanceKeys(BaseTransform):
    """Run ``transforms`` and filter ``keys`` like the boxes they describe.

    Before the wrapped transforms run, ``gt_bboxes_labels`` is temporarily
    replaced by the object indices ``0..N-1``; the transforms filter it as
    they filter the boxes, and the surviving indices select the real labels
    and every key in ``keys``. So only wrap transforms that keep, drop or
    reorder objects and never read label values or add objects (crops,
    ``FilterAnnotations``, ``Expand``, ``RandomFlip``; not ``Mosaic``,
    ``MixUp`` or ``CopyPaste``).

    Required Keys:

    - gt_bboxes
    - gt_bboxes_labels (optional)
    - the keys in ``keys`` (optional; missing ones are skipped)
    - whatever the wrapped transforms require

    Modified Keys:

    - the keys in ``keys``
    - whatever the wrapped transforms modify

    Args:
        transforms (list[dict]): Transforms to wrap, as configs.
        keys (Sequence[str]): Per-object array keys to keep aligned.
            Defaults to ``('gt_weights',)``.
    """

    def __init__(self,
                 transforms: List[ConfigType],
                 keys: Sequence[str] = ('gt_weights', )) -> None:
        if not isinstance(keys, (list, tuple)) or not all(
                isinstance(k, str) for k in keys):
            raise TypeError(f'AlignInstanceKeys: keys must be a sequence of '
                            f'str, got keys={keys!r}')
        # nothing to align: the wrapper would only hide the plain transforms
        if not keys:
            raise ValueError(f'AlignInstanceKeys: keys={keys!r} aligns '
                             'nothing; give the per-object keys (e.g. '
                             "['gt_weights']) or use the transforms "
                             'unwrapped')
        # one dict would be iterated as its key strings
        if not isinstance(transforms, (list, tuple)):
            raise TypeError(
                'AlignInstanceKeys: transforms must be a list of transform '
                f'configs, got transforms={transforms!r}')
        # Build with mmdet's registry so no default scope is needed.
        self.transforms = Compose([
            TRANSFORMS.build(t) if isinstance(t, dict) else t
            for t in transforms
        ])
        self.keys = tuple(keys)

    def transform(self, results: dict):
        """Run the wrapped transforms, then re-align ``keys``."""
        present = [k for k in self.keys if k in results]
        if not present or 'gt_bboxes' not in results:
            return self.transforms(results)
        num = len(results['gt_bboxes'])
        for key in present:
            if len(results[key]) != num:
                raise ValueError(f'AlignInstanceKeys: {key} has '
                                 f'{len(results[key])} entries, gt_bboxes '
                                 f'has {num}')
        carried = {key: np.asarray(results.pop(key)) for key in present}
        labels = results.get('gt_bboxes_labels')
        results['gt_bboxes_labels'] = np.arange(num, dtype=np.int64)
        results = self.transforms(results)
        if results is None:
            return None
        index = np.asarray(results['gt_bboxes_labels'])
        if len(index) != len(results['gt_bboxes']) or (
                len(index) and (index.min() < 0 or index.max() >= num)):
            raise RuntimeError(
                'AlignInstanceKeys: the wrapped transforms changed object '
                'labels or added objects; only wrap transforms that drop or '
                'keep objects')
        if labels is None:
            results.pop('gt_bboxes_labels')
        else:
            results['gt_bboxes_labels'] = np.asarray(labels)[index]
        for key, value in carried.items():
            results[key] = value[index]
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(transforms={self.transforms}, '
                f'keys={self.keys})')
