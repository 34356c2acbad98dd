"""Visually coherent image mixup for object detection.

Zhang et al., "Bag of Freebies for Training Object Detection Neural
Networks" (arXiv:1902.04103), Sec. 3.1 and Table 1; reference code:
GluonCV ``gluoncv/data/mixup/detection.py`` (``MixupDetection``).
"""
import copy
from typing import List, Optional

import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.registry import TRANSFORMS
from mmdet.structures.bbox import BaseBoxes

from ...utils.checks import is_int, is_real

# Table 1's best Beta(alpha, beta)
_ALPHA = _BETA = 1.5
# Instance-aligned keys that cannot be mixed by concatenation (their
# geometry would need padding per type); rejected with a clear error.
_UNSUPPORTED_KEYS = ('gt_masks', 'gt_seg_map')


def _check_positive(owner: str, key: str, value) -> None:
    if not is_real(value) or not 0 < value < float('inf'):
        raise ValueError(f'{owner}: {key} must be a finite number > 0 (a '
                         f'Beta distribution parameter), got {key}={value!r}')


def _check_unit(owner: str, key: str, value) -> None:
    if not is_real(value) or not 0 <= value <= 1:
        raise ValueError(f'{owner}: {key} must be a number in [0, 1], '
                         f'got {key}={value!r}')


def blend_images(img1: np.ndarray, img2: np.ndarray,
                 lam: float) -> np.ndarray:
    """Blend two images on a shared top-left canvas (paper Fig. 2).

    The canvas is ``max(h1, h2) x max(w1, w2)`` and zero-filled; pixel
    values are ``lam * img1 + (1 - lam) * img2`` computed in float32 and
    cast back to ``img1.dtype`` (rounded and clipped for integer dtypes;
    GluonCV truncates, which darkens by 0.5 on average). A grayscale image
    (H, W) or (H, W, 1) is broadcast over the channels of a colour image;
    two 2-D images give a 2-D result.
    """
    for name, img in (('img', img1), ('mix img', img2)):
        if img.ndim not in (2, 3):
            raise ValueError(f'{name} must be (H, W) or (H, W, C), got '
                             f'shape {img.shape}')
    c1 = img1.shape[2] if img1.ndim == 3 else 1
    c2 = img2.shape[2] if img2.ndim == 3 else 1
    if c1 != c2 and 1 not in (c1, c2):
        raise ValueError(f'cannot mix images with {c1} and {c2} channels')
    (h1, w1), (h2, w2) = img1.shape[:2], img2.shape[:2]
    canvas = np.zeros((max(h1, h2), max(w1, w2), max(c1, c2)), np.float32)
    # (H, W, 1) broadcasts over the canvas channels.
    canvas[:h1, :w1] = img1.reshape(h1, w1, c1).astype(np.float32) * lam
    canvas[:h2, :w2] += img2.reshape(h2, w2, c2).astype(np.float32) * (
        np.float32(1) - np.float32(lam))
    if img1.ndim == 2 and img2.ndim == 2:
        canvas = canvas[..., 0]
    if np.issubdtype(img1.dtype, np.integer):
        info = np.iinfo(img1.dtype)
        canvas = np.clip(np.rint(canvas), info.min, info.max)
    return canvas.astype(img1.dtype)


def _same_image(results: dict, other: dict) -> bool:
    """Whether both come from one image: the same ``img_path`` where the
    loader set it, else the same ``sample_idx`` (mmengine's index, which
    restarts in each part of a ``ConcatDataset``); unknown without either."""
    for key in ('img_path', 'sample_idx'):
        if results.get(key) is not None:
            return results[key] == other.get(key)
    return False


def _concat_boxes(boxes1, boxes2):
    if isinstance(boxes1, BaseBoxes) and type(boxes1) is type(boxes2):
        return type(boxes1).cat([boxes1, boxes2], dim=0)
    if isinstance(boxes1, np.ndarray) and isinstance(boxes2, np.ndarray):
        return np.concatenate([boxes1, boxes2], axis=0)
    raise TypeError('cannot concatenate gt_bboxes of types '
                    f'{type(boxes1).__name__} and {type(boxes2).__name__}')


class _CoherentMixupBase(BaseTransform):
    """Ratio sampling, blending and object merging shared by both mixups.

    Args:
        alpha (float): First Beta parameter of the mix ratio. Defaults to
            1.5 (the paper's best, Table 1).
        beta (float): Second Beta parameter. Defaults to 1.5.
        ratio (float, optional): A fixed mix ratio in [0, 1] used instead of
            sampling Beta(alpha, beta) (Table 1's "0.5:0.5 evenly" row uses
            0.5); an error with alpha or beta other than 1.5.
            Defaults to None.
        prob (float): Probability of mixing a sample. Defaults to 1.0.
        with_weights (bool): Whether to add ``gt_weights``. Without them the
            heads compute the unweighted loss. Defaults to True.
    """

    def __init__(self,
                 alpha: float = _ALPHA,
                 beta: float = _BETA,
                 ratio: Optional[float] = None,
                 prob: float = 1.0,
                 with_weights: bool = True) -> None:
        owner = type(self).__name__
        _check_positive(owner, 'alpha', alpha)
        _check_positive(owner, 'beta', beta)
        if ratio is not None:
            _check_unit(owner, 'ratio', ratio)
            if (alpha, beta) != (_ALPHA, _BETA):
                raise ValueError(
                    f'{owner}: ratio={ratio!r} replaces Beta(alpha, beta), '
                    f'so alpha={alpha!r}, beta={beta!r} would be ignored; '
                    'set one or the other')
        _check_unit(owner, 'prob', prob)
        if not isinstance(with_weights, bool):
            raise ValueError(f'{owner}: with_weights must be True or False, '
                             f'got with_weights={with_weights!r}')
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.ratio = None if ratio is None else float(ratio)
        self.prob = float(prob)
        self.with_weights = with_weights

    def _sample_ratio(self) -> Optional[float]:
        """Return lambda, or None when this sample is not mixed.

        numpy's global generator is used: mmengine seeds it in the main
        process and in every dataloader worker, so seeded runs repeat.
        """
        if self.prob < 1 and np.random.rand() >= self.prob:
            return None
        if self.ratio is not None:
            return self.ratio
        return float(np.clip(np.random.beta(self.alpha, self.beta), 0, 1))

    def _weights(self, results: dict, factor: float) -> np.ndarray:
        # Weights from an earlier mix are multiplied: an object that is
        # 0.6 visible, mixed again at 0.5, is 0.3 visible.
        num = len(results['gt_bboxes'])
        old = results.get('gt_weights', np.ones(num, np.float32))
        return (np.asarray(old, np.float32) * np.float32(factor)).astype(
            np.float32)

    def _mix(self, results: dict, other: Optional[dict]) -> dict:
        owner = type(self).__name__
        for res in (results, other or {}):
            for key in _UNSUPPORTED_KEYS:
                if key in res:
                    raise ValueError(f'{owner} does not support {key!r} '
                                     '(boxes only); remove it from '
                                     'LoadAnnotations')
        if other is not None and _same_image(results, other):
            other = None  # GluonCV never mixes an image with itself
        lam = None if other is None else self._sample_ratio()
        if lam is None or lam >= 1:
            # Paper/GluonCV: image 1 unchanged, each object weight 1.
            if self.with_weights:
                results['gt_weights'] = self._weights(results, 1.0)
            return results

        img = blend_images(results['img'], other['img'], lam)
        n1, n2 = len(results['gt_bboxes']), len(other['gt_bboxes'])
        # Weights from earlier mixes stay aligned even without new ones.
        keep_weights = self.with_weights or 'gt_weights' in results or (
            'gt_weights' in other)
        if keep_weights:
            factors = (lam, 1.0 - lam) if self.with_weights else (1.0, 1.0)
            weights = np.concatenate([
                self._weights(results, factors[0]),
                self._weights(other, factors[1])
            ])
        if 'gt_ignore_flags' in results or 'gt_ignore_flags' in other:
            results['gt_ignore_flags'] = np.concatenate([
                results.get('gt_ignore_flags', np.zeros(n1, bool)),
                other.get('gt_ignore_flags', np.zeros(n2, bool))
            ]).astype(bool)
        results['gt_bboxes'] = _concat_boxes(results['gt_bboxes'],
                                             other['gt_bboxes'])
        results['gt_bboxes_labels'] = np.concatenate([
            results['gt_bboxes_labels'], other['gt_bboxes_labels']
        ]).astype(np.int64)
        if keep_weights:
            results['gt_weights'] = weights
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        return results

    def _repr_args(self) -> str:
        return (f'alpha={self.alpha}, beta={self.beta}, ratio={self.ratio}, '
                f'prob={self.prob}, with_weights={self.with_weights}')

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self._repr_args()})'


@TRANSFORMS.register_module()
class VisuallyCoherentMixup(_CoherentMixupBase):
    """Geometry-preserving mixup of two detection images (BoF Sec. 3.1).

    Unlike mmdet's ``MixUp`` (YOLOX style: fixed 0.5 blend, the second
    image resized, flipped and cropped), both images keep their geometry:

    .. code:: text

        +-----------+-------+    canvas = max(h1, h2) x max(w1, w2),
        | img1 * l  |       |    zero-filled; both images at the
        |  + img2 * |       |    top-left corner, no resize, flip or
        |   (1 - l) | img2  |    crop; pixel = l * img1 + (1 - l) * img2
        +-----------+ *(1-l)|    with l ~ clip(Beta(alpha, beta), 0, 1)
        |        img2 * (1-l)|
        +-------------------+

    Objects of both images are kept, each with a loss weight: ``l`` for
    the first image's objects and ``1 - l`` for the second's (the paper's
    weighted loss; the heads read them from ``gt_instances.weights``,
    packed by ``PackDetInputsWithWeights``). When ``l >= 1`` the first
    image is returned unchanged with weight 1 per object. Samples not mixed
    (``prob``) also get weight 1, so a batch always carries weights.
    Objects that already carry ``gt_weights`` have them multiplied.

    The second image comes from the dataset: use this transform inside
    ``MultiImageMixDataset`` (which calls :meth:`get_indexes` and fills
    ``mix_results``) and put it first in the wrapper pipeline, so that the
    mix happens before any other augmentation, as in GluonCV. The inner
    dataset's pipeline should only load images and annotations. Use
    :class:`VisuallyCoherentMixupCached` where the dataset type cannot
    change. ``get_indexes`` is not told the current index, so an image can
    be drawn as its own partner (probability 1 / len(dataset)); it is then
    not mixed (same ``img_path``, or ``sample_idx`` without a path: weight
    1 per object), as GluonCV never mixes an image with itself.

    Required Keys:

    - img (np.uint8 | np.float32) (H, W), (H, W, 1) or (H, W, C)
    - gt_bboxes (BaseBoxes[torch.float32] | np.float32)
    - gt_bboxes_labels (np.int64)
    - gt_ignore_flags (bool) (optional)
    - gt_weights (np.float32) (optional)
    - mix_results (List[dict]): one results dict with the same keys.

    Modified Keys:

    - img
    - img_shape
    - gt_bboxes
    - gt_bboxes_labels
    - gt_ignore_flags (optional)

    Added Keys:

    - gt_weights (np.float32): one loss weight per object (unless
      ``with_weights=False``).

    Args:
        alpha (float): First Beta parameter of the mix ratio. Defaults to
            1.5 (the paper's best, Table 1).
        beta (float): Second Beta parameter. Defaults to 1.5.
        ratio (float, optional): A fixed mix ratio in [0, 1] used instead of
            sampling Beta(alpha, beta) (Table 1's "0.5:0.5 evenly" row uses
            0.5); an error with alpha or beta other than 1.5.
            Defaults to None.
        prob (float): Probability of mixing a sample. Defaults to 1.0.
        with_weights (bool): Whether to add ``gt_weights``. Without them the
            heads compute the unweighted loss. Defaults to True.
    """

    def get_indexes(self, dataset) -> int:
        """Draw the index of the second image (``MultiImageMixDataset``).

        Images without objects are valid partners (they still contribute
        pixels), so no re-draw is needed.
        """
        return int(np.random.randint(0, len(dataset)))

    def transform(self, results: dict) -> dict:
        """Mix ``results`` with ``results['mix_results'][0]``."""
        if not results.get('mix_results'):
            raise KeyError(
                f'{type(self).__name__} needs results["mix_results"]: use '
                'it inside a MultiImageMixDataset pipeline, or use '
                'VisuallyCoherentMixupCached in a plain dataset pipeline')
        return self._mix(results, results['mix_results'][0])


@TRANSFORMS.register_module()
class VisuallyCoherentMixupCached(_CoherentMixupBase):
    """:class:`VisuallyCoherentMixup` that needs no dataset wrapper.

    Like YOLOX's cached mixup (mmdet ``CachedMixUp``), the second image is
    drawn from a cache of the most recent results this transform has seen
    (in the same dataloader worker), so it can sit in any dataset pipeline;
    put it right after the loading transforms. The current image is never
    its own partner, not even a copy cached in an earlier epoch (same
    ``img_path``, or ``sample_idx`` without a path); until another image is
    cached, samples pass through with weight 1. The cache is first-in
    first-out.

    Required Keys:

    - img (np.uint8 | np.float32) (H, W), (H, W, 1) or (H, W, C)
    - gt_bboxes (BaseBoxes[torch.float32] | np.float32)
    - gt_bboxes_labels (np.int64)
    - gt_ignore_flags (bool) (optional)
    - gt_weights (np.float32) (optional)

    Modified Keys:

    - img
    - img_shape
    - gt_bboxes
    - gt_bboxes_labels
    - gt_ignore_flags (optional)

    Added Keys:

    - gt_weights (np.float32): one loss weight per object (unless
      ``with_weights=False``).

    Args:
        alpha (float): First Beta parameter of the mix ratio. Defaults to
            1.5.
        beta (float): Second Beta parameter. Defaults to 1.5.
        ratio (float, optional): A fixed mix ratio in [0, 1] used instead of
            sampling Beta(alpha, beta); an error with alpha or beta other than
            1.5. Defaults to None.
        prob (float): Probability of mixing a sample. Defaults to 1.0.
        with_weights (bool): Whether to add ``gt_weights``. Defaults to
            True.
        max_cached_images (int): Cache length (>= 2); larger is more
            random but holds more images in memory. Defaults to 20.
    """

    def __init__(self,
                 alpha: float = _ALPHA,
                 beta: float = _BETA,
                 ratio: Optional[float] = None,
                 prob: float = 1.0,
                 with_weights: bool = True,
                 max_cached_images: int = 20) -> None:
        super().__init__(alpha, beta, ratio, prob, with_weights)
        if not is_int(max_cached_images) or max_cached_images < 2:
            raise ValueError(
                f'{type(self).__name__}: max_cached_images must be an int '
                f'>= 2, got max_cached_images={max_cached_images!r}')
        self.max_cached_images = max_cached_images
        self.results_cache: List[dict] = []

    def transform(self, results: dict) -> dict:
        """Cache ``results`` and mix it with an earlier cached sample."""
        partners = [
            r for r in self.results_cache if not _same_image(results, r)
        ]
        other = None
        if partners:
            other = copy.deepcopy(
                partners[np.random.randint(0, len(partners))])
        self.results_cache.append(copy.deepcopy(results))
        if len(self.results_cache) > self.max_cached_images:
            self.results_cache.pop(0)
        return self._mix(results, other)

    def _repr_args(self) -> str:
        return (super()._repr_args() +
                f', max_cached_images={self.max_cached_images}')
