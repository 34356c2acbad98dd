"""Sampling-Free prior estimation: speed and stability, on the toy dataset.

1. Speed: ``estimate_prior`` (prior generator + assigner, no network) in
   images per second, against counting the same targets the way a naive
   implementation would, with a network forward to get the feature-map
   sizes and mmdet's ``head.get_targets`` (RetinaNet, the toy ResNet-18
   and 128 px images of ``--toy small``, batch 8, one process, same images,
   data loading included in both).
2. Stability: the relative standard deviation of pi over 30 sample seeds
   for growing ``num_images``; it justifies the default ``num_images=1000``
   (the toy set has 512 training images, so 512 is the full set, 5 seeds,
   and its spread is the random flip alone).

Usage: ``.venv/bin/python benchmarks/bench_prior.py``
"""
import os.path as osp
import statistics
import time

import numpy as np
import torch

from _paths import CONFIGS, REPO
from _timing import alternated, one_thread

COMMAND = '.venv/bin/python benchmarks/bench_prior.py'
TOY = osp.join(REPO, 'data', 'toy') + '/'


def _setup():
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import mmdet_freebies  # noqa: F401
    from mmdet.registry import DATASETS, MODELS
    from mmdet_freebies.utils.toy import apply_toy
    if not osp.exists(osp.join(TOY, 'annotations', 'train.json')):
        from mmdet_freebies.datasets.toy import make_toy_dataset
        make_toy_dataset(TOY, seed=0)
    cfg = apply_toy(
        Config.fromfile(osp.join(CONFIGS, 'retinanet_fl.py')), 'small', TOY)
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    return model, dataset


def _forward_count(model, dataset, indices, batch_size):
    """The naive reference: forward for the feature maps, then mmdet's
    get_targets; returns (num_fg, num_valid)."""
    from mmengine.dataset import pseudo_collate
    from mmdet.models.utils import unpack_gt_instances
    head = model.bbox_head
    fg = valid = 0
    with torch.no_grad():
        for i in range(0, len(indices), batch_size):
            batch = pseudo_collate(
                [dataset[j] for j in indices[i:i + batch_size]])
            data = model.data_preprocessor(batch, True)
            gts, ignores, metas = unpack_gt_instances(data['data_samples'])
            cls_scores = head(model.extract_feat(data['inputs']))[0]
            sizes = [c.shape[-2:] for c in cls_scores]
            anchors, flags = head.get_anchors(sizes, metas, 'cpu')
            labels, weights = head.get_targets(anchors, flags, gts, metas,
                                               ignores)[:2]
            labels = torch.cat([lvl.flatten() for lvl in labels])
            weights = torch.cat([lvl.flatten() for lvl in weights])
            fg += int(((labels < head.num_classes) & (weights > 0)).sum())
            valid += int((weights > 0).sum())
    return fg, valid


def bench_speed(model, dataset, num_images=128, batch_size=8):
    from mmdet_freebies.models.task_modules.prior_estimator import (
        estimate_prior, sample_indices)
    indices = sample_indices(len(dataset), num_images, 0)
    counts = {}

    def run_ours():
        est = estimate_prior(model, dataset, num_images,
                             batch_size=batch_size, distributed=False)
        counts['ours'] = (est.num_fg, est.num_valid)

    def run_ref():
        counts['ref'] = _forward_count(model, dataset, indices, batch_size)

    times = {'ours': [], 'ref': []}
    with one_thread():
        for r in range(3):  # interleaved, order alternated; best of 3
            for key, fn in alternated([('ours', run_ours), ('ref', run_ref)],
                                      r):
                np.random.seed(0)
                start = time.thread_time()
                fn()
                times[key].append(time.thread_time() - start)
    ours, ref = min(times['ours']), min(times['ref'])
    # the same work: both count the same targets
    assert counts['ours'] == counts['ref'], \
        f"counts differ: {counts['ours']} vs {counts['ref']}"
    return [
        dict(name='prior estimation speed (RetinaNet, toy)',
             value=f'{num_images / ours:.0f} img/s ({ref / ours:.2f}x)',
             detail=(
                 f'estimate_prior {num_images / ours:.0f} img/s vs forward + '
                 f'get_targets {num_images / ref:.0f} img/s; {num_images} '
                 f'toy images 128 px, batch {batch_size}, 1 CPU thread (its '
                 'CPU time), best of 3, data loading included; counts '
                 'identical (asserted) '
                 '(fg {:.0f}, valid {:.0f})'.format(*counts['ours'])),
             command=COMMAND)
    ]


def bench_stability(model, dataset, sizes=(8, 32, 128, 512), seeds=30):
    """Relative std of the prior over ``seeds`` image samples per size (5
    when the sample is the whole set: only the augmentation varies)."""
    from mmdet_freebies.models.task_modules.prior_estimator import \
        estimate_prior
    rows = []
    for n in sizes:
        priors = []
        num_seeds = seeds if n < len(dataset) else 5
        for s in range(num_seeds):
            np.random.seed(s)
            priors.append(
                estimate_prior(model,
                               dataset,
                               n,
                               seed=s,
                               batch_size=8,
                               distributed=False).prior)
        mean = statistics.mean(priors)
        rel = statistics.stdev(priors) / mean
        rows.append(
            dict(name=f'prior stability, num_images={n}',
                 value=f'{100 * rel:.1f} % rel. std',
                 detail=(
                     f'pi = {mean:.3e} over {num_seeds} sample seeds '
                     f'(sample std; RetinaNet, '
                     f'toy 128 px, {len(dataset)} training images); bias '
                     f'spread {rel:.3f} in logit units'),
                 command=COMMAND))
    return rows


def run():
    model, dataset = _setup()
    return bench_speed(model, dataset) + bench_stability(model, dataset)


if __name__ == '__main__':
    for row in run():
        print(f"{row['name']}: {row['value']}  ({row['detail']})")
