"""The ``--toy`` switch: run any COCO-ready config of this pack on the
embedded synthetic dataset, on a CPU, in minutes.

The shipped configs stay thin and COCO-ready (``data/coco/``, 8 GPUs x 2
images, the paper's schedule). ``apply_toy`` rewrites a loaded config in
place so that it

* reads ``data/toy`` (any ``CocoDataset`` nested in wrappers, and every
  ``CocoMetric``-style evaluator);
* resizes to small square images (every ``scale`` in the pipelines, and the
  range of ``BatchSyncRandomResize``);
* swaps the backbone for a narrow ResNet-18 trained from scratch (no weights
  can be downloaded) and shrinks the 256-channel necks and heads to 64;
* shortens the schedule to a few epochs while keeping its shape: epoch-based
  milestones, ``num_last_epochs`` / ``switch_epoch`` of hooks and the
  epochs of a by-epoch ``LossWeightScheduleHook`` scale with the number of
  epochs (at least one epoch keeps mixup before ``MixupSwitchHook``),
  iteration warm-ups are capped; ``tiny`` cuts the training set to 8
  images;
* replaces ``SyncBN`` by ``BN`` and NCCL by gloo when there is no GPU.

Everything the technique under study changes (losses, hooks, samplers,
assigners, test thresholds) is left as the config has it.
"""
import json
import os.path as osp
import warnings
from typing import Any, Callable, Dict, List, Optional

import torch
from mmengine.config import Config, ConfigDict

from ..datasets.toy import GENERATOR_VERSION
from .checks import is_int

# Presets: 'tiny' for unit tests (a few iterations), 'small' for the demo
# and ablations (a model that clearly learns in a few minutes).
TOY_SIZES: Dict[str, Dict[str, Any]] = {
    'tiny': dict(img_size=64, max_epochs=1, batch_size=2, num_images=8,
                 num_workers=0, lr_sgd=0.01, lr_adam=1e-3, warmup_iters=2,
                 log_interval=1),
    'small': dict(img_size=128, max_epochs=20, batch_size=8, num_images=None,
                  num_workers=2, lr_sgd=0.01, lr_adam=1e-3, warmup_iters=100,
                  log_interval=10),
}

TOY_DATA_ROOT = 'data/toy/'
_ANN = {'train': 'annotations/train.json', 'val': 'annotations/val.json'}

_TOY_BACKBONE = dict(
    type='ResNet', depth=18, base_channels=16, num_stages=4,
    frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True),
    norm_eval=False, style='pytorch', init_cfg=None)
_TOY_RESNET_CHANNELS = [16, 32, 64, 128]
_WIDTH = {256: 64, 1024: 256}  # neck/head widths and RoI fc width


def _walk(node: Any, fn: Callable[[dict], None]) -> None:
    """Call ``fn`` on every dict nested in ``node`` (depth first)."""
    if isinstance(node, dict):
        fn(node)
        for value in node.values():
            _walk(value, fn)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _walk(value, fn)


def find_datasets(node: Any) -> List[dict]:
    """Every dataset config nested in ``node`` (inside wrappers such as
    ``MultiImageMixDataset`` or ``ConcatDataset`` too)."""
    found: List[dict] = []

    def collect(d: dict) -> None:
        if 'ann_file' in d and 'pipeline' in d:
            found.append(d)

    _walk(node, collect)
    return found


def check_toy_size(size: str) -> None:
    """Raise a ValueError naming ``size`` unless it is a key of
    ``TOY_SIZES``."""
    if size not in TOY_SIZES:
        raise ValueError(f'unknown --toy size {size!r}; choose one of '
                         f'{sorted(TOY_SIZES)}')


def _toy_classes(data_root: str) -> tuple:
    ann = osp.join(data_root, _ANN['train'])
    if not osp.isfile(ann):
        raise FileNotFoundError(
            f'toy annotation file {ann!r} does not exist; run '
            f'`python tools/make_toy_dataset.py --out {data_root}` '
            '(or `make data`) first')
    with open(ann) as f:
        coco = json.load(f)
    version = coco.get('info', {}).get('generator_version', 1)
    if version != GENERATOR_VERSION:
        warnings.warn(
            f'toy annotation file {ann!r} was written by generator version '
            f'{version}, the current one is {GENERATOR_VERSION}: results '
            'will differ from the docs; regenerate it with `rm -rf '
            f'{data_root} && python tools/make_toy_dataset.py --out '
            f'{data_root}`')
    cats = coco['categories']
    if not cats:
        raise ValueError(f'toy annotation file {ann!r} has no categories')
    return tuple(c['name'] for c in sorted(cats, key=lambda c: c['id']))


def _patch_model(model: dict, num_classes: int, cpu: bool) -> None:
    backbone = model.get('backbone', {})
    if backbone.get('type') == 'Darknet':
        # YOLOv3: three outputs, deepest first in the neck's in_channels.
        model['backbone'] = dict(_TOY_BACKBONE, out_indices=(1, 2, 3))
        model['neck'].update(in_channels=[128, 64, 32],
                             out_channels=[64, 32, 16])
        model['bbox_head'].update(in_channels=[64, 32, 16],
                                  out_channels=[128, 64, 32])
    elif backbone:
        out_indices = tuple(backbone.get('out_indices', (0, 1, 2, 3)))
        model['backbone'] = dict(_TOY_BACKBONE, out_indices=out_indices)
        necks = model.get('neck')
        necks = necks if isinstance(necks, list) else [necks]
        if necks[0] and 'in_channels' in necks[0]:
            necks[0]['in_channels'] = [
                _TOY_RESNET_CHANNELS[i] for i in out_indices]

    def shrink(d: dict) -> None:
        if 'num_classes' in d:
            d['num_classes'] = num_classes
        for key in ('in_channels', 'feat_channels', 'out_channels',
                    'fc_out_channels'):
            if isinstance(d.get(key), int) and d[key] in _WIDTH:
                d[key] = _WIDTH[d[key]]
        if isinstance(d.get('stacked_convs'), int):
            d['stacked_convs'] = min(d['stacked_convs'], 2)
        if cpu and d.get('type') == 'SyncBN':  # SyncBN needs CUDA
            d['type'] = 'BN'

    _walk({k: v for k, v in model.items() if k != 'backbone'}, shrink)


def _patch_data(cfg: Config, preset: dict, data_root: str,
                classes: tuple) -> None:
    size = preset['img_size']

    def point_to_toy(d: dict, split: str) -> None:
        d.update(data_root=data_root, ann_file=_ANN[split],
                 data_prefix=dict(img=f'{split}/'),
                 metainfo=dict(classes=classes))
        if 'filter_cfg' in d:
            d['filter_cfg'] = dict(filter_empty_gt=True, min_size=1)
        # only the training set is cut: CocoMetric scores every image of
        # its ann_file, so a cut val set would count the rest as missed
        if preset['num_images'] and split == 'train':
            d['indices'] = preset['num_images']

    def resize(d: dict) -> None:
        if d.get('type') == 'RandomResize' and isinstance(d.get('scale'),
                                                            list):
            d['scale'] = [(size * 3 // 4, ) * 2, (size, size)]
        elif 'scale' in d and d.get('type', '').endswith('Resize'):
            d['scale'] = (size, size)
        if d.get('type') == 'BatchSyncRandomResize':
            low, high = d['random_size_range']
            d['random_size_range'] = (max(low * size // high, 32), size)

    for split, loader in (('train', 'train_dataloader'),
                          ('val', 'val_dataloader'),
                          ('val', 'test_dataloader')):
        if loader not in cfg:
            continue
        for d in find_datasets(cfg[loader]):
            point_to_toy(d, split)
        _walk(cfg[loader], resize)
        cfg[loader]['num_workers'] = preset['num_workers']
        cfg[loader]['persistent_workers'] = preset['num_workers'] > 0
        if split == 'train':
            cfg[loader]['batch_size'] = preset['batch_size']
            if 'base_batch_size' in cfg.get('auto_scale_lr', {}):
                # the toy lr is set for the toy batch: --auto-scale-lr
                # scales it only by the number of processes
                cfg.auto_scale_lr.base_batch_size = preset['batch_size']
    # Pipelines kept as top-level variables (e.g. train_pipeline) are used
    # by hooks that switch pipelines; keep them consistent.
    for key in cfg.keys():
        if key.endswith('pipeline'):
            _walk(cfg[key], resize)
    if 'model' in cfg:
        _walk(cfg.model.get('data_preprocessor', {}), resize)

    def metric(d: dict) -> None:
        if 'ann_file' in d and 'pipeline' not in d:
            d['ann_file'] = osp.join(data_root, _ANN['val'])

    for key in ('val_evaluator', 'test_evaluator'):
        if key in cfg:
            _walk(cfg[key], metric)


def _patch_schedule(cfg: Config, preset: dict) -> None:
    new = preset['max_epochs']
    loop = cfg.train_cfg
    if loop.get('type', 'EpochBasedTrainLoop') != 'EpochBasedTrainLoop':
        raise ValueError(f'--toy supports epoch-based configs only; '
                         f'train_cfg.type={loop.get("type")!r}')
    if 'max_epochs' not in loop:
        warnings.warn('--toy: train_cfg has no max_epochs; the schedule is '
                      'scaled as if it were max_epochs=12 (mmdet\'s 1x)')
    old = loop.get('max_epochs', 12)
    loop.update(max_epochs=new, val_interval=new)

    def scale(x: int) -> int:
        return max(int(round(x * new / old)), 1)

    schedulers = cfg.get('param_scheduler') or []
    if isinstance(schedulers, dict):
        schedulers = [schedulers]
    for s in schedulers:
        if s.get('by_epoch', True):
            for key in ('begin', 'end', 'T_max'):
                if key in s:
                    s[key] = scale(s[key]) if s[key] else s[key]
            if 'milestones' in s:
                s['milestones'] = sorted({scale(m) for m in s['milestones']})
        elif s.get('end', 0) > preset['warmup_iters']:
            s['end'] = preset['warmup_iters']

    for hook in cfg.get('custom_hooks') or []:
        if 'switch_epoch' in hook:
            hook['switch_epoch'] = min(scale(hook['switch_epoch']), new)
        if hook.get('num_last_epochs'):
            # at least one epoch before the switch still runs (e.g. mixup)
            last = hook['num_last_epochs']
            hook['num_last_epochs'] = new if last >= old else min(
                scale(last), new - 1)
        if hook.get('type') == 'LossWeightScheduleHook' and hook.get(
                'by_epoch'):
            # fractional epochs: the ramp keeps its share of the schedule
            for sched in hook.get('schedules', []):
                for key in ('begin', 'end'):
                    if key in sched:
                        sched[key] = sched[key] * new / old
                if 'milestones' in sched:
                    sched['milestones'] = [
                        m * new / old for m in sched['milestones']]

    hooks = cfg.setdefault('default_hooks', ConfigDict())
    hooks.setdefault('checkpoint', dict(type='CheckpointHook'))
    hooks['checkpoint'].update(interval=new, max_keep_ckpts=1)
    hooks.setdefault('logger', dict(type='LoggerHook'))
    hooks['logger']['interval'] = preset['log_interval']

    optimizer = cfg.optim_wrapper.optimizer
    optimizer['lr'] = preset['lr_adam' if 'Adam' in optimizer['type']
                             else 'lr_sgd']


def apply_toy(cfg: Config, size: str = 'small',
              data_root: str = TOY_DATA_ROOT,
              max_epochs: Optional[int] = None) -> Config:
    """Rewrite ``cfg`` in place to run on the embedded toy dataset.

    A ``load_from`` of the config is dropped with a warning: the toy model
    cannot load a checkpoint of the config's model.

    Args:
        cfg (Config): A loaded config of this pack (or any mmdet config of
            the supported families).
        size (str): A key of ``TOY_SIZES``. Defaults to 'small'.
        data_root (str): Root written by ``tools/make_toy_dataset.py``.
            Defaults to 'data/toy/'.
        max_epochs (int, optional): Epochs instead of the size's; the
            schedule is scaled to them. Defaults to None.

    Returns:
        Config: ``cfg`` itself, for chaining.
    """
    check_toy_size(size)
    for key in ('model', 'train_dataloader', 'train_cfg', 'optim_wrapper'):
        if key not in cfg:
            raise ValueError(f'cannot apply --toy: the config has no '
                             f'{key!r}')
    preset = dict(TOY_SIZES[size])
    if max_epochs is not None:
        if not is_int(max_epochs) or max_epochs < 1:
            raise ValueError(f'max_epochs must be an int >= 1, got '
                             f'{max_epochs!r}')
        preset['max_epochs'] = max_epochs
    data_root = data_root.rstrip('/') + '/'
    classes = _toy_classes(data_root)
    cpu = not torch.cuda.is_available()
    _patch_model(cfg.model, len(classes), cpu)
    _patch_data(cfg, preset, data_root, classes)
    _patch_schedule(cfg, preset)
    # the toy model (ResNet-18, 64 channels, toy classes) cannot load a
    # checkpoint of the config's model
    if cfg.get('load_from'):
        warnings.warn(f'--toy: load_from={cfg.load_from!r} is dropped (set '
                      'to None); the toy model trains from scratch')
    cfg.load_from = None
    if cpu:
        cfg.setdefault('env_cfg', ConfigDict())
        cfg.env_cfg['dist_cfg'] = dict(backend='gloo')
        if 'Amp' in cfg.optim_wrapper.get('type', ''):
            warnings.warn('--toy on a CPU: AmpOptimWrapper replaced by '
                          'OptimWrapper (no CUDA autocast)')
            cfg.optim_wrapper['type'] = 'OptimWrapper'
            cfg.optim_wrapper.pop('loss_scale', None)
    return cfg
