"""Dataset balance statistics of the EIC study (ImageNet localization):
annotations per image, class imbalance, object scale, small and "twisted"
objects, plus the anchor foreground/background ratio under a config's
assigner. Used by ``tools/dataset_stats.py``."""
import math
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np

from .boxes import box_sides

SMALL_AREA = 32.0 * 32.0  # EIC and COCO: small < 32 x 32
TWISTED_RATIO = 4.0  # EIC: w / h > 4 or < 1 / 4


def base_datasets(dataset) -> list:
    """The annotated datasets under ``dataset``: ``RepeatDataset``,
    ``ClassBalancedDataset``, ``MultiImageMixDataset`` and the like
    unwrapped (each image counted once), and each part of a
    ``ConcatDataset`` (e.g. VOC07+12)."""
    while hasattr(dataset, 'dataset'):
        dataset = dataset.dataset
    if hasattr(dataset, 'datasets'):
        return [d for part in dataset.datasets for d in base_datasets(part)]
    return [dataset]


def collect_annotations(dataset, progress: bool = True) -> List[dict]:
    """One record per image: ``width``, ``height``, ``bboxes`` (n, 4) as
    x1, y1, x2, y2 in original pixels and ``labels`` (n, ), ignored
    (crowd) instances left out. Annotation files only; no image is read."""
    from mmengine.utils import ProgressBar
    parts = base_datasets(dataset)
    for part in parts:
        part.full_init()
    bar = ProgressBar(sum(map(len, parts))) if progress else None
    records = []
    for info in (part.get_data_info(i) for part in parts
                 for i in range(len(part))):
        kept = [inst for inst in info.get('instances', [])
                if not inst.get('ignore_flag', 0)]
        records.append(dict(
            width=info['width'], height=info['height'],
            bboxes=np.array([inst['bbox'] for inst in kept],
                            np.float64).reshape(-1, 4),
            labels=np.array([inst['bbox_label'] for inst in kept], np.int64)))
        if bar is not None:
            bar.update()
    if bar is not None:
        print()
    return records


def compute_stats(records: Sequence[dict], classes: Sequence[str]) -> dict:
    """Statistics of ``records`` (see :func:`collect_annotations`).

    Returns:
        dict: ``num_images``, ``num_annotations``, ``ann_per_image`` (mean),
        ``ann_per_image_max``, ``empty_images``, ``class_counts`` (one per
        class), ``imbalance_ratio`` (most over least frequent class, inf if
        a class has no box), ``scale_px`` (mean sqrt(w h)), ``scale_rel``
        (mean sqrt(w h / (W H)), the EIC's object scale), ``small_pct``
        (area < 32 x 32), ``twisted_pct`` (w / h > 4 or < 1/4), and the
        per-box arrays ``sizes`` (sqrt(w h)) and ``aspect_ratios`` (w / h)
        for the histograms.
    """
    counts_per_image = np.array([len(r['labels']) for r in records])
    boxes = [r['bboxes'] for r in records]
    all_boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    labels = np.concatenate([r['labels'] for r in records]) if records \
        else np.zeros(0, np.int64)
    img_area = np.concatenate([
        np.full(len(r['labels']), float(r['width'] * r['height']))
        for r in records]) if records else np.zeros(0)
    w, h = np.clip(box_sides(all_boxes), 0, None).T
    area = w * h
    with np.errstate(divide='ignore', invalid='ignore'):
        aspect = w / h
    valid = (w > 0) & (h > 0)
    bad = labels[(labels < 0) | (labels >= len(classes))]
    if bad.size:  # they would count as boxes but in no class
        raise ValueError(f'labels {sorted(set(bad.tolist()))} are not indices '
                         f'of the {len(classes)} classes {list(classes)}')
    class_counts = np.bincount(labels, minlength=len(classes))
    n = len(labels)

    def pct(mask: np.ndarray) -> float:
        return 100.0 * float(mask.sum()) / n if n else 0.0

    return dict(
        classes=list(classes),
        num_images=len(records),
        num_annotations=n,
        ann_per_image=float(counts_per_image.mean()) if records else 0.0,
        ann_per_image_max=int(counts_per_image.max()) if records else 0,
        empty_images=int((counts_per_image == 0).sum()),
        class_counts=class_counts.tolist(),
        imbalance_ratio=(float(class_counts.max() / class_counts.min())
                         if class_counts.size and class_counts.min() > 0
                         else math.inf),
        scale_px=float(np.sqrt(area).mean()) if n else 0.0,
        scale_rel=float(np.sqrt(area / img_area).mean()) if n else 0.0,
        small_pct=pct(area < SMALL_AREA),
        twisted_pct=pct(valid & ((aspect > TWISTED_RATIO) |
                                 (aspect < 1 / TWISTED_RATIO))),
        sizes=np.sqrt(area),
        aspect_ratios=aspect[valid],
    )


def anchor_balance(cfg, num_images: int = 100, model=None) -> dict:
    """Anchor (or point) foreground/background ratio of ``cfg``'s training
    set under its head's assigner, counted by the Sampling-Free prior
    estimator (training pipeline, no network forward). ``model``: the
    detector of ``cfg.model`` if already built (None builds it).

    Returns:
        dict: ``num_fg``, ``num_bg`` (valid priors that are not foreground;
        ignored ones excluded), ``fg_bg_ratio``, ``prior`` (per class, as
        OptimalBiasInit uses it for the dense heads: num_fg / (num_fg +
        num_bg) / C), ``head`` and ``num_images``.
    """
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from mmdet_freebies.models.task_modules.prior_estimator import \
        estimate_prior
    if model is None:
        register_all_modules(init_default_scope=True)
        model = MODELS.build(cfg.model)
    est = estimate_prior(model, cfg.train_dataloader.dataset,
                         num_images=num_images, progress=True,
                         batch_size=cfg.train_dataloader.get('batch_size', 2))
    num_bg = est.num_valid - est.num_fg
    # num_fg / num_valid / C for every head: est.prior is that for the
    # dense heads, but YOLOv3's class prior (on positives only) is 1 / C
    return dict(num_fg=int(est.num_fg), num_bg=int(num_bg),
                fg_bg_ratio=est.num_fg / num_bg if num_bg else math.inf,
                prior=est.num_fg / max(est.num_valid, 1.0) / est.num_classes,
                head=est.head_type, num_images=est.num_images)


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return 'inf'
        return f'{value:.3g}' if abs(value) < 1 else f'{value:.2f}'
    return str(value)


def format_table(stats: Dict[str, dict],
                 anchors: Optional[Dict[str, dict]] = None) -> str:
    """A Markdown table like the EIC slides': one column per split."""
    splits = list(stats)
    rows = [
        ('images', 'num_images'),
        ('annotations', 'num_annotations'),
        ('annotations per image', 'ann_per_image'),
        ('max annotations in an image', 'ann_per_image_max'),
        ('images without annotations', 'empty_images'),
        ('classes', None),
        ('imbalance ratio (max/min class)', 'imbalance_ratio'),
        ('object scale sqrt(wh) [px]', 'scale_px'),
        ('object scale sqrt(wh/WH)', 'scale_rel'),
        ('small objects (< 32x32) %', 'small_pct'),
        ('twisted objects (w/h > 4 or < 1/4) %', 'twisted_pct'),
    ]
    lines = ['| statistic | ' + ' | '.join(splits) + ' |',
             '|---|' + '---:|' * len(splits)]
    for title, key in rows:
        values = [str(len(stats[s]['classes'])) if key is None
                  else _fmt(stats[s][key]) for s in splits]
        lines.append(f'| {title} | ' + ' | '.join(values) + ' |')
    if anchors:
        for title, key in (('anchor fg/bg ratio (assigner)', 'fg_bg_ratio'),
                           ('fg prior per class (num_fg/num_all/C)',
                            'prior')):
            values = [_fmt(anchors[s][key]) if s in anchors else '-'
                      for s in splits]
            lines.append(f'| {title} | ' + ' | '.join(values) + ' |')
    lines.append('')
    lines.append('| class | ' + ' | '.join(splits) + ' |')
    lines.append('|---|' + '---:|' * len(splits))
    names, counts = _counts_by_class(stats)
    for name in names:
        lines.append(f'| {name} | ' + ' | '.join(
            str(counts[s].get(name, '-')) for s in splits) + ' |')
    return '\n'.join(lines)


def _counts_by_class(stats: Dict[str, dict]) -> tuple:
    """The class names of all splits (the first split's order, then any
    other's) and each split's ``{name: count}``: splits may list other
    classes, or in another order."""
    names = list(dict.fromkeys(
        name for s in stats.values() for name in s['classes']))
    counts = {split: dict(zip(s['classes'], s['class_counts']))
              for split, s in stats.items()}
    return names, counts


def plot_histograms(stats: Dict[str, dict], out_dir: str) -> List[str]:
    """Write box-size, aspect-ratio and class histograms; return paths."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    paths = []
    splits = list(stats)

    def save(fig, name: str) -> None:
        path = osp.join(out_dir, name)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)

    def hist(ax, values, bins, label) -> None:
        # several splits: each bar is a share of its split's boxes (density
        # would divide by the bins' linear widths, which grow on log bins)
        weights = np.full(len(values), 1 / len(values)) \
            if len(splits) > 1 and len(values) else None
        ax.hist(values, bins=bins, weights=weights, alpha=0.6, label=label)

    ylabel = 'share of boxes' if len(splits) > 1 else 'boxes'

    # Box sizes: log bins; the 32 px line marks COCO/EIC "small".
    fig, ax = plt.subplots(figsize=(6, 3.6))
    sizes = np.concatenate([stats[s]['sizes'] for s in splits])
    sizes = sizes[sizes > 0]
    lo, hi = (sizes.min(), sizes.max()) if sizes.size else (1, 2)
    bins = np.geomspace(max(lo, 1e-1), max(hi, lo * 1.01), 30)
    for s in splits:
        hist(ax, stats[s]['sizes'], bins, s)
    ax.axvline(32, color='k', ls='--', lw=1, label='32 px (small)')
    ax.set_xscale('log')
    ticks = [t for t in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
             if bins[0] <= t <= bins[-1]]
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel('box size sqrt(w h) [px]')
    ax.set_ylabel(ylabel)
    ax.legend()
    save(fig, 'box_sizes.png')

    # Aspect ratios on a log axis; outside the dashed lines is "twisted".
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.geomspace(1 / 16, 16, 33)
    for s in splits:
        hist(ax, np.clip(stats[s]['aspect_ratios'], bins[0], bins[-1]), bins,
             s)
    for x in (1 / TWISTED_RATIO, TWISTED_RATIO):
        ax.axvline(x, color='k', ls='--', lw=1)
    ax.set_xscale('log')
    ax.set_xlabel('aspect ratio w / h (dashed: twisted beyond 1/4 and 4)')
    ax.set_ylabel(ylabel)
    ax.legend()
    save(fig, 'aspect_ratios.png')

    # Classes side by side per split; shares when splits differ in size.
    classes, by_class = _counts_by_class(stats)
    share = len(splits) > 1
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(classes) + 2), 3.6))
    x = np.arange(len(classes))
    width = 0.8 / len(splits)
    for k, s in enumerate(splits):
        counts = np.array([by_class[s].get(c, 0) for c in classes], float)
        if share:
            counts = 100 * counts / max(counts.sum(), 1)
        ax.bar(x + (k - (len(splits) - 1) / 2) * width, counts, width,
               label=s)
    ax.set_xticks(x)
    ax.set_xticklabels(classes, rotation=90 if len(classes) > 10 else 0,
                       fontsize=7 if len(classes) > 10 else 9)
    ax.set_ylabel('share of boxes (%)' if share else 'boxes')
    ax.set_title('class histogram (imbalance ' + ', '.join(
        f"{s} {_fmt(stats[s]['imbalance_ratio'])}" for s in splits) + ')',
        fontsize=9)
    ax.legend(loc='lower right')
    save(fig, 'classes.png')
    return paths
