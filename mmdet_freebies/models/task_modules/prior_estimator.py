"""Foreground prior of a dense head's classification targets, counted from
the data without running the network.

Chen et al., "Is Heuristic Sampling Necessary in Training Deep Object
Detectors?" (TIP 2021), Sec. III-B: with plain cross-entropy, the bias of a
sigmoid classifier is initialised to the optimal constant prediction
``b = -log((1 - pi) / pi)``, where ``pi = N_fg / (N_valid * C)`` is the
fraction of positive targets among all (prior, class) pairs that the
classification loss sees. The official code (G2, ``sampling_free.py``)
counts ``N_fg`` and ``N_valid`` in one pass over the training set with the
training transforms, running only the anchor generator and the matcher.

:func:`estimate_prior` does the same for mmdet heads. It reuses the head's
own prior generator and its own target rule (the assigner of ``train_cfg``,
or FCOS's regress-range/center-sampling rule, or YOLOv3's grid assigner) and
the detector's own ``data_preprocessor`` (so padding to
``pad_size_divisor`` is exact, and batch padding is training's when the
batches are formed alike: the training batch size, and portrait and
landscape images apart where training uses ``AspectRatioBatchSampler``;
its batch augments, such as YOLOv3's random shapes, are left out: they
resize at random and synchronise the ranks on every call, so the prior is
counted at the pipeline's image size). Feature
map sizes follow from the padded batch shape: every stride-``s`` layer of
the supported backbones and necks (3x3 stride-2 convs with padding 1,
stride-2 max pools, FPN's extra levels) maps ``H`` to ``ceil(H / 2)``, so a
level of stride ``s`` has ``ceil(H / s)`` rows.

Counting rules (they mirror what each head's ``loss_by_feat`` trains on):

* Anchor heads (RetinaHead, RPNHead, ATSSHead, PAAHead): anchors outside the
  padded image (``valid_flags``) and, when ``train_cfg.allowed_border >= 0``,
  outside the image border are dropped; anchors that the assigner ignores
  (``assigned_gt_inds == -1``: between the IoU thresholds, or overlapping an
  ignored box) are not counted. ``N_valid`` = positives + negatives.
* PAAHead: the final positives come from a GMM fitted to the network's
  losses, which needs a forward. Without one, each gt's candidate set is
  counted instead: the ``topk`` highest-IoU initial positives per level (PAA
  ranks by loss; at initialisation the loss ranking follows IoU), and no
  positive for a gt with fewer than 2 candidates (PAA skips those). The GMM
  keeps a prefix of this set, so the PAA prior is an upper bound.
* FCOSHead: every point is a positive or a negative; ``head.get_targets``
  gives the labels.
* YOLOV3Head: objectness is trained on positives and negatives (the grid
  assigner's ``-1`` are ignored); the class channels only on positives,
  with (possibly smoothed) one-hot targets. So ``objectness_prior =
  N_fg / N_valid`` and the class prior of channel ``c`` is the mean class
  target over positives (``1 / C`` on average).
* RPNHead (and any head with ``num_classes == 1``): all gt labels count as
  class 0, as in ``TwoStageDetector.loss``.
"""
import inspect
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.dataset import pseudo_collate
from mmengine.dist import all_reduce, get_dist_info
from mmengine.structures import InstanceData
from mmengine.utils import ProgressBar
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from mmdet.datasets.samplers import AspectRatioBatchSampler
from mmdet.models.dense_heads import (ATSSHead, FCOSHead, PAAHead, RetinaHead,
                                      RPNHead, YOLOV3Head)
from mmdet.models.task_modules.prior_generators import anchor_inside_flags
from mmdet.models.utils import unpack_gt_instances
from mmdet.registry import DATASETS
from ...utils.checks import is_int
from ..dense_heads import (SamplingFreePAAHead, WeightedRetinaHead,
                           WeightedRPNHead, WeightedYOLOV3Head)

#: Head types :func:`estimate_prior` can count for, matched exactly: other
#: subclasses may assign targets their own way (FSAF and FreeAnchor subclass
#: RetinaHead, AutoAssign FCOSHead). The pack's weighted heads only weight
#: objects in the loss; their targets are those of their base. The
#: sampling-free PAA head only rescores PAA's candidates, the set counted.
SUPPORTED_HEADS = (RetinaHead, RPNHead, ATSSHead, PAAHead, FCOSHead,
                   YOLOV3Head, WeightedRetinaHead, WeightedRPNHead,
                   WeightedYOLOV3Head, SamplingFreePAAHead)


@dataclass
class PriorEstimate:
    """Counts and priors of one pass of :func:`estimate_prior`.

    Attributes:
        head_type (str): Class name of the counted head.
        num_images (int): Images counted (over all ranks).
        num_classes (int): Classification channels ``C`` of the head
            (1 for the RPN).
        num_fg (float): Positive priors (anchors or points).
        num_valid (float): Priors the classification (YOLOv3: objectness)
            loss sees: positives plus negatives, ignored ones excluded.
        fg_per_class (list[float]): Positive targets per class channel
            (YOLOv3: summed class targets over positives).
        num_cls_valid (float): Priors each class channel is trained on:
            ``num_valid``, or ``num_fg`` for YOLOv3 whose class loss only
            sees positives.
        num_gt_per_class (list[int]): Ground-truth boxes per dataset class
            (before the RPN's relabelling to class 0).
        seconds (float): Wall time of the pass on this rank.
        prior (float): ``pi = sum(fg_per_class) / (num_cls_valid * C)``,
            i.e. ``N_fg / (N_valid * C)`` for sigmoid dense heads.
        per_class_prior (list[float]): ``pi_c = fg_per_class[c] /
            num_cls_valid``; their mean is ``prior``.
        objectness_prior (float, optional): ``N_fg / N_valid`` for heads
            with an objectness channel (YOLOv3), else None.
    """
    head_type: str
    num_images: int
    num_classes: int
    num_fg: float
    num_valid: float
    fg_per_class: List[float]
    num_cls_valid: float
    num_gt_per_class: List[int]
    seconds: float
    prior: float = field(init=False)
    per_class_prior: List[float] = field(init=False)
    objectness_prior: Optional[float] = None

    def __post_init__(self) -> None:
        denom = max(self.num_cls_valid, 1.0)
        self.per_class_prior = [f / denom for f in self.fg_per_class]
        self.prior = sum(self.per_class_prior) / self.num_classes

    @property
    def fg_ratio(self) -> float:
        """``N_fg / N_valid``: the foreground fraction of trained priors."""
        return self.num_fg / max(self.num_valid, 1.0)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict of every field and ``fg_ratio``."""
        return dict(asdict(self), fg_ratio=self.fg_ratio)


def prior_to_bias(prior: float) -> float:
    """The optimal sigmoid bias ``b = -log((1 - pi) / pi)`` (the logit)."""
    if not 0.0 < prior < 1.0:
        raise ValueError(f'prior must lie in (0, 1), got {prior!r}')
    return -math.log((1.0 - prior) / prior)


def find_dense_head(model: nn.Module,
                    counted: bool = True) -> Tuple[str, nn.Module]:
    """Return ``(attribute name, head)`` of the head whose targets define
    the prior: ``bbox_head`` of a one-stage detector, ``rpn_head`` of a
    two-stage one.

    Args:
        model (nn.Module): The detector.
        counted (bool): Whether the prior will be counted from the head's
            targets (the head must then be one of :data:`SUPPORTED_HEADS`);
            otherwise only a sigmoid classifier is required. Defaults to
            True.

    Raises:
        ValueError: If the model has neither, or the head is not supported
            (the message names its type).
    """
    for name in ('rpn_head', 'bbox_head'):
        head = getattr(model, name, None)
        if head is not None:
            check_supported(head, counted)
            return name, head
    raise ValueError(
        f'{type(model).__name__} has no bbox_head or rpn_head; the prior '
        'estimator supports one-stage detectors and RPNs with heads '
        f'{[h.__name__ for h in SUPPORTED_HEADS]}')


def check_supported(head: nn.Module, counted: bool = True) -> None:
    """Raise ``ValueError`` naming ``type(head)`` if its prior cannot be
    counted (``counted``) or it has a softmax classifier."""
    if counted and type(head) not in SUPPORTED_HEADS:
        bases = [h.__name__ for h in SUPPORTED_HEADS if isinstance(head, h)]
        subclass = (f' (a subclass of {bases[0]} that may assign its '
                    'targets differently)' if bases else '')
        raise ValueError(
            f'cannot estimate the foreground prior of head type '
            f'{type(head).__name__!r}{subclass}; the supported head types '
            f'(exactly) are {[h.__name__ for h in SUPPORTED_HEADS]}; '
            'OptimalBiasInit(prior=...) without roi_log_prior sets a '
            'constant prior and counts nothing')
    if not isinstance(head, YOLOV3Head) and not getattr(
            head, 'use_sigmoid_cls', True):
        raise ValueError(
            f'{type(head).__name__} uses a softmax classifier '
            '(loss_cls.use_sigmoid=False); the optimal bias is defined for '
            'sigmoid classifiers')


def featmap_sizes_of(head: nn.Module,
                     batch_shape: Sequence[int]) -> List[Tuple[int, int]]:
    """Feature-map sizes ``(ceil(H / s_h), ceil(W / s_w))`` per level for a
    padded batch of shape ``(H, W)``."""
    h, w = batch_shape[-2:]
    return [(math.ceil(h / sh), math.ceil(w / sw))
            for sw, sh in head.prior_generator.strides]


# Each counter returns a float64 vector [fg, valid, cls_valid, fg_c...].


def _count_anchor_head(head, gts, ignores, metas, featmap_sizes,
                       device) -> Tensor:
    if getattr(head, 'assigner', None) is None:
        raise ValueError(f'{type(head).__name__} has no assigner: build the '
                         'detector with its train_cfg')
    anchor_list, valid_list = head.get_anchors(featmap_sizes, metas, device)
    num_level = [a.size(0) for a in anchor_list[0]]
    with_levels = 'num_level_priors' in inspect.signature(
        head.assigner.assign).parameters
    counts = torch.zeros(3 + head.num_classes, dtype=torch.float64)
    for anchors, valids, gt, ignore, meta in zip(anchor_list, valid_list, gts,
                                                 ignores, metas):
        flat = torch.cat(anchors)
        inside = anchor_inside_flags(flat, torch.cat(valids),
                                     meta['img_shape'][:2],
                                     head.train_cfg['allowed_border'])
        pred = InstanceData(priors=flat[inside])
        if with_levels:  # ATSS: top-k per level among inside anchors
            levels = [int(f.sum()) for f in inside.split(num_level)]
            result = head.assigner.assign(pred, levels, gt, ignore)
        else:
            result = head.assigner.assign(pred, gt, ignore)
        fg = result.gt_inds > 0
        if isinstance(head, PAAHead):
            fg = _paa_candidates(head, result, inside.split(num_level), fg)
        num_valid = int((result.gt_inds >= 0).sum())
        labels = gt.labels[result.gt_inds[fg] - 1]
        counts[0] += int(fg.sum())
        counts[1] += num_valid
        counts[2] += num_valid
        counts[3:] += torch.bincount(
            labels, minlength=head.num_classes).double().cpu()
    return counts


def _paa_candidates(head, result, level_inside, fg) -> Tensor:
    """PAA's per-gt candidate set: top-``head.topk`` IoU initial positives
    per level, kept only when a gt has at least 2 (see module doc)."""
    level_of = torch.cat([
        torch.full((int(f.sum()), ), i, device=fg.device)
        for i, f in enumerate(level_inside)
    ])
    keep = torch.zeros_like(fg)
    for g in result.gt_inds[fg].unique():
        chosen = []
        for level in level_of[fg].unique():
            idx = ((result.gt_inds == g) & (level_of == level)).nonzero()[:, 0]
            top = result.max_overlaps[idx].topk(min(len(idx), head.topk))[1]
            chosen.append(idx[top])
        chosen = torch.cat(chosen)
        if len(chosen) >= 2:
            keep[chosen] = True
    return keep


def _count_fcos(head, gts, ignores, metas, featmap_sizes, device) -> Tensor:
    points = head.prior_generator.grid_priors(featmap_sizes, device=device)
    labels = torch.cat(head.get_targets(points, gts)[0])
    fg = labels < head.num_classes
    counts = torch.zeros(3 + head.num_classes, dtype=torch.float64)
    counts[0] = int(fg.sum())
    counts[1] = counts[2] = labels.numel()
    counts[3:] = torch.bincount(labels[fg],
                                minlength=head.num_classes).double().cpu()
    return counts


def _count_yolov3(head, gts, ignores, metas, featmap_sizes, device) -> Tensor:
    anchors = head.prior_generator.grid_priors(featmap_sizes, device=device)
    flags = [
        head.responsible_flags(featmap_sizes, gt.bboxes, device) for gt in gts
    ]
    target_maps, neg_maps = head.get_targets([anchors] * len(gts), flags, gts)
    counts = torch.zeros(3 + head.num_classes, dtype=torch.float64)
    for target, neg in zip(target_maps, neg_maps):
        pos = target[..., 4]
        counts[0] += float(pos.sum())
        # loss_by_feat_single clamps an overlap of the two masks to 1
        counts[1] += float((pos + neg.float()).clamp(max=1).sum())
        counts[2] += float(pos.sum())
        # (the weighted head appends a mixup weight after the classes)
        counts[3:] += (target[..., 5:5 + head.num_classes] *
                       pos[..., None]).sum(dim=(0, 1)).double().cpu()
    return counts


def _counter(head: nn.Module) -> Callable:
    if isinstance(head, YOLOV3Head):
        return _count_yolov3
    if isinstance(head, FCOSHead):
        return _count_fcos
    return _count_anchor_head


def _class_agnostic(gt: InstanceData) -> InstanceData:
    gt = gt.clone()
    gt.labels = torch.zeros_like(gt.labels)
    return gt


def _as_dataset(dataset: Union[Dataset, dict]) -> Dataset:
    if isinstance(dataset, dict):
        return DATASETS.build(dataset)
    return dataset


def dataset_num_classes(dataset: Dataset) -> Optional[int]:
    """Number of ``metainfo['classes']`` of ``dataset``; None where it has
    none (e.g. a list of samples)."""
    metainfo = getattr(dataset, 'metainfo', None) or {}
    classes = metainfo.get('classes') if isinstance(metainfo, dict) else None
    return len(classes) if classes else None


def check_num_classes(head: nn.Module, dataset: Dataset) -> None:
    """Raise ``ValueError`` naming both numbers if ``head`` has not one
    class per ``metainfo['classes']`` of ``dataset``: fewer crash the count
    on the first label past them, more dilute the prior with classes that
    never occur. A single-class head (the RPN) is exempt: it counts every
    box as class 0. A dataset without class names is not checked."""
    num_classes = dataset_num_classes(dataset)
    if num_classes is not None and head.num_classes not in (1, num_classes):
        raise ValueError(
            f'{type(head).__name__} has num_classes={head.num_classes} but '
            f"the dataset has {num_classes} classes (metainfo['classes']); "
            f"set the head's num_classes to {num_classes}")


def sample_indices(num_total: int, num_images: Optional[int],
                   seed: int) -> List[int]:
    """The ``num_images`` dataset indices of one estimate: a seeded random
    subset (all images, shuffled, when ``num_images`` is None or larger
    than the dataset)."""
    order = torch.randperm(num_total,
                           generator=torch.Generator().manual_seed(seed))
    if num_images is not None:
        order = order[:num_images]
    return order.tolist()


class _IndexSampler(Sampler):
    """The given dataset indices, in order; ``dataset`` is kept for
    ``AspectRatioBatchSampler``, which reads each image's size from it."""

    def __init__(self, dataset: Dataset, indices: List[int]) -> None:
        self.dataset = dataset
        self.indices = indices

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def estimate_prior(model: nn.Module,
                   dataset: Union[Dataset, dict],
                   num_images: Optional[int] = 1000,
                   *,
                   head: Optional[nn.Module] = None,
                   batch_size: int = 2,
                   aspect_ratio_groups: bool = False,
                   num_workers: int = 0,
                   collate_fn: Optional[Callable] = None,
                   seed: int = 0,
                   distributed: bool = True,
                   progress: bool = False) -> PriorEstimate:
    """Count positives and valid priors of ``model``'s dense head over a
    sample of training images, without a network forward.

    Under ``torch.distributed`` (and ``distributed=True``) rank ``r`` of
    ``w`` counts images ``indices[r::w]`` and the counts are summed over
    ranks, so every rank returns the same estimate, equal to a
    single-process count when images are batched alike.

    Args:
        model (nn.Module): A built detector (unwrapped): its
            ``data_preprocessor`` pads the batch, and its ``bbox_head`` (or
            ``rpn_head`` for two-stage detectors) is counted.
        dataset (Dataset | dict): The training dataset (its pipeline is the
            training pipeline), or its config.
        num_images (int, optional): Images to sample (seeded, without
            replacement); None counts the whole dataset, as the official
            code. Defaults to 1000 (relative std of pi about 1.5 %, as
            extrapolated from the toy set's 8 to 128 image samples, see
            docs/sampling_free_obi.md).
        head (nn.Module, optional): Head to count instead of the one found
            by :func:`find_dense_head`. Defaults to None.
        batch_size (int): Images per padded batch; use the training batch
            size so that batch padding matches training. Defaults to 2.
        aspect_ratio_groups (bool): Batch portrait and landscape images
            apart, with mmdet's ``AspectRatioBatchSampler``, as training
            does when its loader uses that sampler (mmdet's COCO configs):
            FCOS and YOLOv3 count every point of the batch padding as a
            negative, so mixed batches would lower their prior.
            Defaults to False.
        num_workers (int): DataLoader workers. Defaults to 0.
        collate_fn (callable, optional): Defaults to ``pseudo_collate``.
        seed (int): Seed of the image sample. Defaults to 0.
        distributed (bool): Shard over ranks and all-reduce when a process
            group is initialised. Defaults to True.
        progress (bool): Show a progress bar on rank 0. Defaults to False.

    Returns:
        PriorEstimate: Counts, ``prior`` and ``per_class_prior``.

    Raises:
        ValueError: Before counting, on a bad argument, an unsupported
            head, or a head whose ``num_classes`` is not the dataset's
            (see :func:`check_num_classes`).
    """
    if num_images is not None and (not is_int(num_images) or num_images < 1):
        raise ValueError(f'num_images must be a positive int or None, got '
                         f'{num_images!r}')
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f'batch_size must be a positive int, got '
                         f'{batch_size!r}')
    if head is None:
        _, head = find_dense_head(model)
    else:
        check_supported(head)
    dataset = _as_dataset(dataset)
    check_num_classes(head, dataset)
    count = _counter(head)
    # without class names: the head's, grown below to the labels seen
    num_dataset_classes = dataset_num_classes(dataset) or head.num_classes
    rank, world_size = get_dist_info() if distributed else (0, 1)
    sampler = _IndexSampler(
        dataset,
        sample_indices(len(dataset), num_images, seed)[rank::world_size])
    batch_sampler = (AspectRatioBatchSampler if aspect_ratio_groups else
                     BatchSampler)(sampler, batch_size, drop_last=False)
    loader = DataLoader(dataset,
                        batch_sampler=batch_sampler,
                        num_workers=num_workers,
                        collate_fn=collate_fn or pseudo_collate)
    device = next(model.parameters()).device
    bar = ProgressBar(len(sampler)) if progress and rank == 0 else None

    start = time.perf_counter()
    counts = torch.zeros(3 + head.num_classes, dtype=torch.float64)
    gt_counts = torch.zeros(num_dataset_classes, dtype=torch.float64)
    with torch.no_grad():
        for batch in loader:
            # training=False: no batch augments, which resize at random
            # (YOLOv3's random shapes) and synchronise the ranks per call
            data = model.data_preprocessor(batch, False)
            gts, ignores, metas = unpack_gt_instances(data['data_samples'])
            for gt in gts:
                hist = torch.bincount(gt.labels.cpu(),
                                      minlength=len(gt_counts)).double()
                # a dataset without metainfo: grow to the labels seen
                gt_counts = F.pad(gt_counts, (0, len(hist) - len(gt_counts)))
                gt_counts += hist
            if head.num_classes == 1:  # RPN: class-agnostic
                gts = [_class_agnostic(gt) for gt in gts]
            sizes = featmap_sizes_of(head, data['inputs'].shape)
            counts += count(head, gts, ignores, metas, sizes, device)
            if bar is not None:
                for _ in metas:
                    bar.update()
    seconds = time.perf_counter() - start
    if bar is not None:
        print()

    if world_size > 1:  # the class lists may have grown differently
        length = torch.tensor([len(gt_counts)])
        all_reduce(length, op='max')
        gt_counts = F.pad(gt_counts, (0, int(length) - len(gt_counts)))
    totals = torch.cat([
        counts, gt_counts,
        torch.tensor([len(sampler)], dtype=torch.float64)
    ])
    if world_size > 1:
        all_reduce(totals, op='sum')
    counts, gt_counts = totals[:len(counts)], totals[len(counts):-1]
    if counts[1] == 0:
        raise ValueError(f'no valid {type(head).__name__} priors in '
                         f'{int(totals[-1])} images; check the dataset')
    if counts[0] == 0:
        warnings.warn(f'no positive priors in {int(totals[-1])} images: '
                      'the estimated prior is 0')
    is_yolo = isinstance(head, YOLOV3Head)
    return PriorEstimate(
        head_type=type(head).__name__,
        num_images=int(totals[-1]),
        num_classes=head.num_classes,
        num_fg=float(counts[0]),
        num_valid=float(counts[1]),
        fg_per_class=counts[3:].tolist(),
        num_cls_valid=float(counts[2]),
        num_gt_per_class=[int(n) for n in gt_counts.tolist()],
        seconds=seconds,
        objectness_prior=float(counts[0] / counts[1]) if is_yolo else None)
