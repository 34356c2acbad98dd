"""Every shipped config loads, builds its model and datasets on the toy data,
runs a loss forward and a predict forward with finite losses, and has the
state-dict layout of its plain mmdet detector."""
import ast
import copy
import glob
import os.path as osp
import random

import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.logging import MessageHub
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from torch.nn import SyncBatchNorm
from torch.nn.modules.batchnorm import _BatchNorm

from mmdet.registry import DATASETS, MODELS

from helpers import CONFIGS, repo_config

ALL_CONFIGS = sorted(osp.basename(p)
                     for p in glob.glob(osp.join(CONFIGS, '*.py')))


def _batch(dataset_cfg, n):
    dataset = DATASETS.build(dataset_cfg)
    return pseudo_collate([dataset[i] for i in range(n)])


def test_configs_exist():
    for name in ('retinanet_fl.py', 'fcos_fl.py', 'atss_fl.py', 'paa_fl.py',
                 'faster_rcnn_biased.py', 'yolov3_baseline.py'):
        assert name in ALL_CONFIGS


@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_config_builds_and_runs(name, toy_cfg):
    cfg = toy_cfg(name)
    assert cfg.custom_imports == dict(imports=['mmdet_freebies'],
                                      allow_failed_imports=False)
    init_default_scope('mmdet')
    # BatchSyncRandomResize reads the iteration from the message hub.
    MessageHub.get_current_instance().update_info('iter', 0)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    data = model.data_preprocessor(
        _batch(cfg.train_dataloader.dataset, 2), training=True)
    losses = model(**data, mode='loss')
    total, log_vars = model.parse_losses(losses)
    assert torch.isfinite(total), log_vars
    assert all(torch.isfinite(torch.as_tensor(v)) for v in log_vars.values())
    total.backward()

    model.eval()
    data = model.data_preprocessor(_batch(cfg.val_dataloader.dataset, 1),
                                   training=False)
    with torch.no_grad():
        results = model(**data, mode='predict')
    assert len(results) == 1
    pred = results[0].pred_instances
    assert pred.bboxes.shape[-1] == 4 and torch.isfinite(pred.bboxes).all()


@pytest.mark.parametrize('name', ['yolov3_cosine.py',
                                  'faster_rcnn_cosine.py'])
def test_cosine_follows_a_changed_schedule_length(name, toy_cfg, tmp_path):
    """The cosine has no end or T_max of its own: with max_epochs changed
    after the config is written (``--cfg-options train_cfg.max_epochs=3``)
    the runner's scheduler still decays to 0 at the last iteration, not at
    the baseline's 273 or 12 epochs."""
    cfg = toy_cfg(name)
    cosine, = [s for s in cfg.param_scheduler
               if s.type == 'CosineAnnealingLR']
    assert 'end' not in cosine and 'T_max' not in cosine
    cfg.train_cfg.max_epochs = 3
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    runner._train_loop = runner.build_train_loop(runner._train_loop)
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    built = runner.build_param_scheduler(runner.param_schedulers)
    iters = 3 * len(runner.train_dataloader)
    assert (built[1].begin, built[1].end, built[1].T_max) == (0, iters, iters)


def test_yolov3_syncbn_trains_every_bn_layer_synced():
    """The COCO config (Darknet-53, not the toy backbone): every norm layer
    is SyncBN and uses batch statistics in training, the backbone's too
    (mmdet's Darknet defaults to norm_eval=True)."""
    init_default_scope('mmdet')
    cfg = repo_config('yolov3_syncbn.py')
    model = MODELS.build(cfg.model)
    model.train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    backbone = [m for m in model.backbone.modules()
                if isinstance(m, _BatchNorm)]
    assert len(backbone) == 52 and len(norms) == 72
    assert all(isinstance(m, SyncBatchNorm) and m.training for m in norms)


def test_random_shapes_pads_after_flip_and_distortion(toy_cfg):
    """The square padding stays black and at the bottom and right: padded
    before the flip it would move to the left, and before
    PhotoMetricDistortion it would take the brightness shift."""
    init_default_scope('mmdet')
    dataset_cfg = toy_cfg('yolov3_random_shapes.py').train_dataloader.dataset
    pipeline = dataset_cfg.pipeline
    assert pipeline[-1].type == 'PackDetInputs'
    pad = [t.type for t in pipeline].index('Pad')

    def build(transforms):
        cfg = copy.deepcopy(dataset_cfg)
        cfg.pipeline = transforms
        return DATASETS.build(cfg)

    # the transforms before the pad, and all but the packing
    unpadded, padded_set = build(pipeline[:pad]), build(pipeline[:-1])

    def image(dataset, seed):
        random.seed(seed)
        np.random.seed(seed)
        return dataset[0]['img']

    padded = 0
    for seed in range(16):
        before, out = image(unpadded, seed), image(padded_set, seed)
        h, w = before.shape[:2]
        assert out.shape[0] == out.shape[1] == max(h, w)
        padded += out.shape[0] > min(h, w)
        assert not out[h:].any() and not out[:, w:].any()
    assert padded >= 4  # the crop made some of them non-square
    # the mixup rows restate the pipeline: the same order after the resize
    mixup = repo_config('yolov3_mixup.py')
    assert [t.type for t in mixup.train_pipeline][-4:-1] == \
        [t.type for t in pipeline][-4:-1] == [
            'RandomFlip', 'PhotoMetricDistortion', 'Pad']


@pytest.mark.parametrize('name, prior', [('fcos_ce_sf.py', 1e-4),
                                         ('atss_ce_sf.py', 3e-3),
                                         ('paa_ce_sf.py', 3e-3)])
def test_dense_sampling_free_configs_follow_the_2021_code(name, prior):
    """The code behind the published FCOS/ATSS/PAA numbers: a constant
    prior, GLS by the mean of box and quality losses, frozen after 100."""
    hooks = {h['type']: h for h in
             repo_config(name).custom_hooks}
    assert hooks['OptimalBiasInit'] == dict(type='OptimalBiasInit',
                                            prior=prior)
    assert hooks['GuidedLossScaling'] == dict(
        type='GuidedLossScaling', guide='mean', freeze_after=100)


def test_tta_merges_with_the_test_nms():
    """A config that changes the test NMS threshold (the CE RetinaNet rows:
    0.55) changes the one --tta merges its flipped results with too."""
    checked = {}
    for name in ALL_CONFIGS:
        cfg = repo_config(name)
        test_cfg = cfg.model.get('test_cfg') or {}
        nms = (test_cfg.get('rcnn') or test_cfg).get('nms')
        if nms is not None and 'tta_model' in cfg:
            checked[name] = nms.iou_threshold
            assert cfg.tta_model.tta_cfg.nms.iou_threshold == \
                nms.iou_threshold, name
    assert checked['retinanet_ce_sf.py'] == 0.55 and len(checked) >= 8


# The Libra rows add mmdet's BFP neck: their plain counterpart is mmdet's
# own Libra config, not the root of their _base_ chain.
PLAIN = {'faster_rcnn_libra.py': 'libra_rcnn/'
         'libra-faster-rcnn_r50_fpn_1x_coco.py',
         'retinanet_libra.py': 'libra_rcnn/libra-retinanet_r50_fpn_1x_coco.py'}


def _plain_mmdet_config(name):
    """The mmdet config at the root of ``name``'s ``_base_`` chain."""
    while name not in PLAIN:
        with open(osp.join(CONFIGS, name)) as f:
            base = next(ast.literal_eval(node.value)
                        for node in ast.parse(f.read()).body
                        if isinstance(node, ast.Assign)
                        and node.targets[0].id == '_base_')
        if base.startswith('mmdet::'):
            return base[len('mmdet::'):]
        name = osp.basename(base)
    return PLAIN[name]


@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_state_dict_is_the_plain_mmdet_detector_s(name, toy_cfg, tmp_path):
    """Zero inference cost: every config's model has the state-dict keys
    and shapes of its plain mmdet detector (both on the toy backbone), so
    its checkpoints load strictly into mmdet's config."""
    plain = tmp_path / 'plain.py'
    plain.write_text(f"_base_ = 'mmdet::{_plain_mmdet_config(name)}'\n")
    init_default_scope('mmdet')
    shapes = [{k: v.shape for k, v in
               MODELS.build(toy_cfg(path).model).state_dict().items()}
              for path in (name, str(plain))]
    assert shapes[0] == shapes[1]
