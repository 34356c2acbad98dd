"""End to end on the toy set: the hook stops the failing Sampling-Free
ablation row (CE with the focal-loss bias) and stays quiet on focal loss."""
import os.path as osp

import pytest
from mmengine.runner import Runner

from mmdet_freebies.engine.hooks import TrainingHealthHook
from mmdet_freebies.engine.hooks.training_health_hook import \
    TrainingFailureError

ITERS = 12  # 2 warm-up iterations ('tiny') + a window of 10


def _runner(toy_cfg, tmp_path, config):
    cfg = toy_cfg(config)
    # At 64 px an image has 774 anchors, too few negatives for CE's
    # imbalance to show (cls/reg ~3.7); at 128 px (3069 anchors, as the
    # 'small' preset) it is ~8, as in the ablation's toy runs.
    for t in cfg.train_dataloader.dataset.pipeline:
        if 'scale' in t:
            t['scale'] = (128, 128)
    cfg.train_cfg.max_epochs = ITERS // 4  # 8 images, batch 2
    cfg.train_cfg.val_interval = ITERS // 4
    cfg.val_evaluator = [cfg.val_evaluator,
                         dict(type='DetectionErrorMetric', score_thr=0.05)]
    cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
        dict(type='TrainingHealthHook', action='stop', window=10,
             score_interval=2)]
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    hook = next(h for h in runner.hooks if isinstance(h, TrainingHealthHook))
    return runner, hook


def test_stops_retinanet_ce(toy_cfg, tmp_path):
    runner, hook = _runner(toy_cfg, tmp_path, 'retinanet_ce.py')
    with pytest.raises(TrainingFailureError,
                       match='iter 12: classification domination'):
        runner.train()
    assert [d['pattern'] for d in hook.detections] == [
        'classification_domination']
    assert 'configs/retinanet_ce_sf.py' in hook.detections[0]['message']
    assert osp.isfile(osp.join(tmp_path, 'health_stop_iter_12.pth'))


def test_no_false_alarm_on_retinanet_fl(toy_cfg, tmp_path):
    runner, hook = _runner(toy_cfg, tmp_path, 'retinanet_fl.py')
    runner.train()
    assert hook.detections == []
    hub = runner.message_hub
    ratio = hub.get_scalar('train/health/ratio_det').current()
    assert 0.2 < ratio < 5.0
    assert hub.get_scalar('train/health/grad_norm_retina_cls').current() > 0
    assert 0.001 < hub.get_scalar('train/health/fg_max').current() < 1
    # DetectionErrorMetric ran next to CocoMetric in the list evaluator
    # (after 12 iterations CocoMetric finds nothing to score, so only the
    # error counts are logged: every val box is a miss or a hit).
    assert [type(m).__name__ for m in runner.val_evaluator.metrics] == [
        'CocoMetric', 'DetectionErrorMetric']
    metrics = {k: v.current() for k, v in hub.log_scalars.items()
               if k.startswith('val/det_err/')}
    assert metrics['val/det_err/fn'] + metrics['val/det_err/tp'] == \
        sum(len(runner.val_dataloader.dataset.get_data_info(i)['instances'])
            for i in range(len(runner.val_dataloader.dataset)))
