"""End-to-end launches on the toy dataset: tools/train.py (and resume),
tools/test.py, tools/dist_train.sh and the slurm launcher with 2 gloo
processes, and openmim's `mim train`."""
import glob
import json
import os
import os.path as osp
import pickle
import subprocess
import sys
import types
import warnings

import pytest
import torch
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmdet_freebies.utils.ablation import read_scalars
from mmdet_freebies.utils.toy import TOY_SIZES

from helpers import CONFIGS, REPO, free_port, import_tool

TRAIN = osp.join(REPO, 'tools', 'train.py')
TEST = osp.join(REPO, 'tools', 'test.py')
BIN = osp.dirname(sys.executable)
TINY = TOY_SIZES['tiny']['img_size']


def _run(cmd, env=None, timeout=600):
    """Run ``cmd`` in the repository; ``env`` replaces the default
    environment (this interpreter's bin first on PATH, one thread)."""
    if env is None:
        env = dict(os.environ, PYTHON=sys.executable,
                   PATH=BIN + os.pathsep + os.environ['PATH'],
                   OMP_NUM_THREADS='1')
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _scalars(work_dir):
    records = read_scalars(work_dir)
    assert records, f'no scalars.json under {work_dir}'
    return records


@pytest.mark.slow
def test_train_toy_end_to_end(tmp_path, toy_data_root):
    work = str(tmp_path / 'w')
    # After 4 iterations no score passes 0.05; keep every box so that
    # COCO evaluation really runs.
    val_json = osp.join(str(tmp_path), 'val.json')
    proc = _run([sys.executable, TRAIN, f'{CONFIGS}/retinanet_fl.py',
                 '--toy', 'tiny', '--toy-data', toy_data_root,
                 '--work-dir', work, '--val-metrics', val_json,
                 '--cfg-options', 'model.test_cfg.score_thr=0'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))
    records = _scalars(work)
    # COCO evaluation ran and scored boxes (AP50 >= AP holds for any real
    # precision-recall curves; a missing key fails here)
    assert 0 <= records[-1]['coco/bbox_mAP'] <= \
        records[-1]['coco/bbox_mAP_50'] <= 1
    # --val-metrics: what the evaluator returned, as logged
    with open(val_json) as f:
        metrics = json.load(f)
    assert metrics['coco/bbox_mAP'] == pytest.approx(
        records[-1]['coco/bbox_mAP'], abs=1e-4)
    assert records[0]['iter'] == 1 and 'loss_cls' in records[0]
    # tools/test.py on that checkpoint: COCO metrics and the predictions
    test_cmd = [sys.executable, TEST, f'{CONFIGS}/retinanet_fl.py',
                osp.join(work, 'epoch_1.pth'), '--toy', 'tiny', '--toy-data',
                toy_data_root, '--work-dir', work, '--cfg-options',
                'model.test_cfg.score_thr=0']
    out = str(tmp_path / 'preds.pkl')
    proc = _run(test_cmd + ['--out', out, '--show-dir', 'painted'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'coco/bbox_mAP' in proc.stdout + proc.stderr
    with open(out, 'rb') as f:
        assert len(pickle.load(f)) == 8  # every val image of the fixture
    # mmdet's VisualizationHook paints them under <work dir>/<timestamp>/
    assert len(glob.glob(osp.join(work, '*', 'painted', '*.png'))) == 8
    # a non-pickle --out is refused before the runner is built (in-process,
    # as a process start costs ~8 s: test_bad_input_is_one_line_on_stderr
    # checks a real process's error exit)
    with pytest.raises(SystemExit, match=r'must be a \.pkl or \.pickle'):
        import_tool('test').main(test_cmd[2:] +
                                 ['--out', str(tmp_path / 'p.json')])
    # --tta: the config's TTA (mmdet's RetinaNet one: 3 scales, all at the
    # toy size here, x 2 flips) runs, evaluates and merges its passes
    tta_out = str(tmp_path / 'tta.pkl')
    proc = _run(test_cmd + ['--tta', '--out', tta_out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'coco/bbox_mAP' in proc.stdout + proc.stderr
    with open(out, 'rb') as f, open(tta_out, 'rb') as g:
        plain, tta = pickle.load(f), pickle.load(g)
    assert len(tta) == 8 and any(
        not torch.equal(a['pred_instances']['bboxes'],
                        b['pred_instances']['bboxes'])
        for a, b in zip(plain, tta))


@pytest.mark.slow
def test_resume_continues_with_same_optimizer_state(tmp_path,
                                                    toy_data_root):
    """Train 2 epochs saving each, then resume from epoch 1, in-process:
    the runner continues at the saved iteration with the saved optimizer
    state, and torch's weights-only loader stays on."""
    train = import_tool('train')
    opts = ['--cfg-options', 'train_cfg.max_epochs=2',
            'default_hooks.checkpoint.interval=1',
            'default_hooks.checkpoint.max_keep_ckpts=3']
    first = str(tmp_path / 'first')
    # mmengine's visualizer is a per-name singleton in this process
    train.main([f'{CONFIGS}/retinanet_fl.py', '--toy', 'tiny', '--toy-data',
                toy_data_root, '--work-dir', first] + opts +
               ['visualizer.name=vis_first'])
    ckpt = osp.join(first, 'epoch_1.pth')

    # Without the pack's allowlist, torch >= 2.6 refuses the checkpoint.
    bare = _run([sys.executable, '-c',
                 f'import torch; torch.load({ckpt!r})'])
    assert 'HistoryBuffer' in bare.stderr
    # The allowlist covers exactly what the checkpoint needs.
    needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(ckpt))
    from mmdet_freebies.utils.torch_compat import safe_global_names
    assert needed <= set(safe_global_names()), needed - set(
        safe_global_names())

    saved = torch.load(ckpt, map_location='cpu')  # weights_only default
    runner = train.build_runner(train.parse_args([
        f'{CONFIGS}/retinanet_fl.py', '--toy', 'tiny', '--toy-data',
        toy_data_root, '--work-dir', str(tmp_path / 'resumed'), '--resume',
        ckpt] + opts + ['visualizer.name=vis_resumed']))
    runner._train_loop = runner.build_train_loop(runner._train_loop)
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    runner.load_or_resume()
    assert runner.iter == saved['meta']['iter'] == 4
    assert runner.epoch == 1
    state = runner.optim_wrapper.state_dict()['state']
    for key, value in saved['optimizer']['state'].items():
        assert torch.equal(state[key]['momentum_buffer'],
                           value['momentum_buffer'])
    runner.train()
    assert runner.iter == 8
    assert not osp.exists(osp.join(str(tmp_path / 'resumed'),
                                   'epoch_1.pth'))


@pytest.mark.slow
def test_dist_train_two_gloo_processes(tmp_path, toy_data_root):
    """Sampling-Free RetinaNet: OptimalBiasInit and GuidedLossScaling reach
    the detector inside MMDistributedDataParallel."""
    work = str(tmp_path / 'dist')
    proc = _run(['bash', 'tools/dist_train.sh',
                 f'{CONFIGS}/retinanet_ce_sf.py', '2', '--toy', 'tiny',
                 '--toy-data', toy_data_root, '--work-dir', work])
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = open(glob.glob(osp.join(work, '*', '*.log'))[0]).read()
    assert 'Distributed launcher: pytorch' in log
    assert 'Distributed training: True' in log
    # torchrun exits 0 only when both ranks did; the 8 images shared by two
    # ranks at 2 per batch make 2 iterations per epoch (4 on one process).
    losses = [r for r in _scalars(work) if 'loss' in r]
    assert losses[-1]['iter'] == 2
    assert all(r['gls_ratio_cls'] > 0 for r in losses)
    assert 'MMDistributedDataParallel' in log
    assert 'OptimalBiasInit: {"head": "bbox_head:RetinaHead", ' \
        '"layer": "retina_cls", "source": "counted"' in log
    assert glob.glob(osp.join(work, '*.pth')) == [
        osp.join(work, 'epoch_1.pth')]


@pytest.mark.parametrize('script, args, env_gpus, nproc, rest', [
    ('dist_train.sh', ['C.py', '2', '--toy', 'tiny'], None, '2',
     ['C.py', '--launcher', 'pytorch', '--toy', 'tiny']),
    # GPUS left out: the next argument is a flag, not the process count
    ('dist_train.sh', ['C.py', '--toy', 'tiny'], '3', '3',
     ['C.py', '--launcher', 'pytorch', '--toy', 'tiny']),
    ('dist_train.sh', ['C.py'], None, '8', ['C.py', '--launcher', 'pytorch']),
    ('dist_test.sh', ['C.py', 'ck.pth', '4', '--toy', 'tiny'], None, '4',
     ['C.py', 'ck.pth', '--launcher', 'pytorch', '--toy', 'tiny']),
    ('dist_test.sh', ['C.py', 'ck.pth', '--toy', 'tiny'], '3', '3',
     ['C.py', 'ck.pth', '--launcher', 'pytorch', '--toy', 'tiny']),
])
def test_dist_scripts_read_an_optional_gpu_count(script, args, env_gpus,
                                                 nproc, rest):
    env = dict(os.environ, PYTHON='echo')
    env.pop('GPUS', None)
    if env_gpus:
        env['GPUS'] = env_gpus
    proc = _run(['bash', f'tools/{script}', *args], env=env)
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    assert f'--nproc_per_node={nproc}' in words
    assert words[words.index(f'tools/{script[5:-3]}.py') + 1:] == rest


def _launcher_env(launcher, rank):
    """The variables srun or Open MPI's mpirun set for task ``rank`` of 2."""
    if launcher == 'slurm':
        return dict(SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank),
                    SLURM_NTASKS='2', SLURM_NODELIST='localhost')
    return dict(OMPI_COMM_WORLD_RANK=str(rank), OMPI_COMM_WORLD_SIZE='2',
                OMPI_COMM_WORLD_LOCAL_RANK=str(rank))


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU path')
@pytest.mark.parametrize('launcher', ['slurm', 'mpi'])
def test_cluster_launchers_two_gloo_processes(tmp_path, toy_data_root,
                                              launcher):
    """tools/train.py --launcher slurm (mpi) as srun (mpirun) starts it, one
    process per task with the launcher's variables set: on a CPU both ranks
    train on gloo (mmengine's own launchers call torch.cuda.set_device)."""
    work = str(tmp_path / launcher)
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, OMP_NUM_THREADS='1', MASTER_ADDR='127.0.0.1',
                   MASTER_PORT=port, **_launcher_env(launcher, rank))
        with open(tmp_path / f'rank{rank}.err', 'w') as err:
            procs.append(subprocess.Popen(
                [sys.executable, TRAIN, f'{CONFIGS}/retinanet_fl.py',
                 '--toy', 'tiny', '--toy-data', toy_data_root,
                 '--work-dir', work, '--launcher', launcher],
                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err))
    for rank, proc in enumerate(procs):
        assert proc.wait(timeout=600) == 0, open(
            tmp_path / f'rank{rank}.err').read()[-3000:]
    log = open(glob.glob(osp.join(work, '*', '*.log'))[0]).read()
    assert f'Distributed launcher: {launcher}' in log
    assert 'Distributed training: True' in log
    losses = [r for r in _scalars(work) if 'loss' in r]
    assert losses[-1]['iter'] == 2  # 8 images, 2 ranks, batch 2


# Stands in for slurm's srun: drops its options (the command starts at
# $PYTHON) and runs the command as 2 tasks with slurm's variables.
_FAKE_SRUN = """#!/usr/bin/env bash
while [[ $# -gt 0 && "$1" != "$PYTHON" ]]; do shift; done
pids=()
for rank in 0 1; do
    SLURM_PROCID=$rank SLURM_LOCALID=$rank SLURM_NTASKS=2 \\
        SLURM_NODELIST=localhost "$@" &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
"""


@pytest.mark.slow
def test_slurm_scripts_train_and_test_through_srun(tmp_path, toy_data_root):
    """tools/slurm_train.sh, then tools/slurm_test.sh on its checkpoint,
    each as 2 slurm tasks on gloo."""
    fake_bin = tmp_path / 'bin'
    fake_bin.mkdir()
    (fake_bin / 'srun').write_text(_FAKE_SRUN)
    (fake_bin / 'srun').chmod(0o755)
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1',
               PATH=f'{fake_bin}{os.pathsep}{BIN}{os.pathsep}'
               f'{os.environ["PATH"]}', MASTER_ADDR='127.0.0.1',
               MASTER_PORT=str(free_port()), GPUS='2')
    work = str(tmp_path / 'w')
    toy = ['--toy', 'tiny', '--toy-data', toy_data_root]
    proc = _run(['bash', 'tools/slurm_train.sh', 'part', 'job',
                 f'{CONFIGS}/retinanet_fl.py', work] + toy, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r['iter'] for r in _scalars(work) if 'loss' in r][-1] == 2
    out = str(tmp_path / 'preds.pkl')
    env['MASTER_PORT'] = str(free_port())
    proc = _run(['bash', 'tools/slurm_test.sh', 'part', 'job',
                 f'{CONFIGS}/retinanet_fl.py',
                 osp.join(work, 'epoch_1.pth'), '--out', out] + toy, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Distributed launcher: slurm' in proc.stdout + proc.stderr
    with open(out, 'rb') as f:
        assert len(pickle.load(f)) == 8  # every val image, from both ranks


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU path')
def test_slurm_launcher_outside_srun_says_what_is_missing(
        toy_data_root, monkeypatch):
    """In-process, as a process start costs ~8 s (see
    test_bad_input_is_one_line_on_stderr for a real process's exit)."""
    for key in list(os.environ):
        if key.startswith('SLURM'):
            monkeypatch.delenv(key)
    # the launcher sets these; setting them first has monkeypatch restore
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_PORT',
                'MASTER_ADDR'):
        monkeypatch.setenv(key, '')
        monkeypatch.delenv(key)
    args = ['--toy', 'tiny', '--launcher', 'slurm']
    assert ('--launcher slurm needs SLURM_PROCID, SLURM_NTASKS, '
            'SLURM_NODELIST') in _train_error(args, toy_data_root)
    # no MASTER_ADDR and no scontrol to expand the node list
    monkeypatch.setenv('PATH', BIN)
    for key, value in dict(SLURM_PROCID='0', SLURM_NTASKS='1',
                           SLURM_NODELIST='node[1-2]').items():
        monkeypatch.setenv(key, value)
    message = _train_error(args, toy_data_root)
    assert "cannot expand SLURM_NODELIST='node[1-2]'" in message
    assert 'set MASTER_ADDR' in message


@pytest.mark.slow
def test_mim_train(tmp_path, toy_data_root):
    cfg = str(tmp_path / 'retinanet_toy.py')
    import_tool('toy_config').main([f'{CONFIGS}/retinanet_fl.py', '--size',
                                    'tiny', '--toy-data', toy_data_root,
                                    '--out', cfg])
    work = str(tmp_path / 'mim')
    proc = _run([osp.join(BIN, 'mim'), 'train', 'mmdet', cfg,
                 '--work-dir', work])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))


def test_bad_input_is_one_line_on_stderr(toy_data_root):
    """The command line's contract, in a real process: an error message,
    no traceback, exit status 1 (the cases below run in-process, through
    the same ``main``, to save a process start of ~8 s each)."""
    proc = _run([sys.executable, TRAIN, f'{CONFIGS}/retinanet_fl.py',
                 '--toy-data', toy_data_root, '--toy', 'tiny',
                 '--resume', 'nowhere.pth'])
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert proc.stderr.splitlines()[-1] == \
        "error: --resume checkpoint 'nowhere.pth' does not exist"


def _train_error(args, toy_data_root):
    """The message tools/train.py exits with (``sys.exit`` prints it to
    stderr with status 1); any other exception fails the test."""
    with pytest.raises(SystemExit) as exit_:
        import_tool('train').main([f'{CONFIGS}/retinanet_fl.py',
                                   '--toy-data', toy_data_root] + args)
    assert isinstance(exit_.value.code, str), exit_.value.code
    return exit_.value.code


@pytest.mark.parametrize('args, message', [
    (['--cfg-options', 'train_dataloader.dataset.ann_file=missing.json'],
     'missing.json'),
    (['--amp'], '--amp needs CUDA'),
])
def test_bad_input_gives_clear_message(args, message, toy_data_root):
    assert message in _train_error(['--toy', 'tiny'] + args, toy_data_root)


def test_unknown_toy_size_is_a_usage_error(toy_data_root, capsys):
    with pytest.raises(SystemExit):
        import_tool('train').main([f'{CONFIGS}/retinanet_fl.py',
                                   '--toy-data', toy_data_root,
                                   '--toy', 'huge'])
    assert "unknown --toy size 'huge'" in capsys.readouterr().err


def test_empty_annotation_file_is_named(tmp_path, toy_data_root):
    empty = tmp_path / 'empty.json'
    empty.write_text('')
    assert f"annotation file '{empty}' is empty" in _train_error(
        ['--toy', 'tiny', '--cfg-options',
         f'train_dataloader.dataset.ann_file={empty}'], toy_data_root)


def test_val_metrics_folder_is_made_when_written(tmp_path):
    """A --val-metrics file in a folder that does not exist yet (the work
    dir, or a mistyped one) is written, not lost after the training."""
    train = import_tool('train')
    path = tmp_path / 'not' / 'yet' / 'val.json'
    train.ValMetricsWriter(str(path)).after_val_epoch(
        None, {'coco/bbox_mAP': 0.5, 'note': 'x'})
    assert json.loads(path.read_text()) == {'coco/bbox_mAP': 0.5,
                                            'note': 'x'}


def test_toy_config_out_needs_a_config_format(capsys):
    toy_config = import_tool('toy_config')
    with pytest.raises(SystemExit):
        toy_config.main([f'{CONFIGS}/retinanet_fl.py', '--out', '/tmp/x'])
    assert "--out '/tmp/x' must end in .py, .json or .yaml" in \
        capsys.readouterr().err


def test_missing_config():
    with pytest.raises(SystemExit,
                       match="config file 'configs/nope.py' does not exist"):
        import_tool('train').main(['configs/nope.py'])


@pytest.mark.slow
@pytest.mark.parametrize('config', [
    'retinanet_ce_sf.py', 'faster_rcnn_sf.py', 'yolov3_mixup.py',
    'faster_rcnn_libra.py'
])
def test_flagship_configs_train_end_to_end(config, tmp_path, toy_data_root):
    """A few real iterations plus validation, through tools/train.py's own
    runner construction (in-process, to keep the suite fast)."""
    train = import_tool('train')
    runner = train.build_runner(train.parse_args([
        f'{CONFIGS}/{config}', '--toy', 'tiny', '--toy-data', toy_data_root,
        '--work-dir', str(tmp_path),
        # mmengine's visualizer is a per-name singleton in this process
        '--cfg-options', f'visualizer.name=vis_{config}']))
    runner.train()
    assert runner.iter == 4
    assert osp.isfile(osp.join(str(tmp_path), 'epoch_1.pth'))
    losses = [r for r in _scalars(str(tmp_path)) if 'loss' in r]
    assert losses and all(
        torch.isfinite(torch.tensor(v)) for r in losses
        for k, v in r.items() if k.startswith('loss'))


def test_checkpoint_urls_are_left_to_mmengine(toy_data_root, monkeypatch):
    """A model-zoo URL is not a local file: test.py and train.py --resume
    pass it on to the runner instead of refusing it."""
    url = 'https://download.openmmlab.com/mmdetection/v2.0/x.pth'
    common = ['--toy', 'tiny', '--toy-data', toy_data_root]
    config = f'{CONFIGS}/retinanet_fl.py'
    seen = []
    monkeypatch.setattr(Runner, 'from_cfg', lambda cfg: seen.append(
        cfg.load_from) or types.SimpleNamespace(test=lambda: None))
    import_tool('test').main([config, url] + common)
    train_tool = import_tool('train')
    monkeypatch.setattr(Runner, 'from_cfg',
                        lambda cfg: seen.append((cfg.resume, cfg.load_from)))
    train_tool.build_runner(train_tool.parse_args([config, '--resume', url]
                                                  + common))
    assert seen == [url, (True, url)]


def _tta_cfg(config, monkeypatch, toy_data_root, tmp_path):
    """The config tools/test.py --tta hands the runner, and its warnings."""
    checkpoint = tmp_path / 'x.pth'
    checkpoint.write_bytes(b'')
    seen = []
    monkeypatch.setattr(Runner, 'from_cfg', lambda cfg: seen.append(
        cfg) or types.SimpleNamespace(test=lambda: None))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        import_tool('test').main([
            f'{CONFIGS}/{config}', str(checkpoint), '--tta', '--toy',
            'tiny', '--toy-data', toy_data_root])
    return seen[0], [str(w.message) for w in caught]


def test_tta_defaults_are_mmdets_and_warn(monkeypatch, toy_data_root,
                                          tmp_path):
    """Without tta_model and tta_pipeline in the config, --tta uses mmdet's
    defaults (flip, NMS at 0.5), says so, and wraps the config's own model
    and test pipeline."""
    cfg, caught = _tta_cfg('fcos_fl.py', monkeypatch, toy_data_root,
                           tmp_path)
    assert sum('has no tta_model' in m for m in caught) == 1
    assert sum('has no tta_pipeline' in m and 'PackDetInputs' in m
               for m in caught) == 1
    assert cfg.model.type == 'DetTTAModel'
    assert cfg.model.tta_cfg.nms.iou_threshold == 0.5
    assert cfg.model.module.type == 'FCOS'
    pipeline = cfg.test_dataloader.dataset.pipeline
    assert pipeline[-1].type == 'TestTimeAug'
    assert [(t.type, t.prob) for t in pipeline[-1].transforms[0]] == [
        ('RandomFlip', 1.0), ('RandomFlip', 0.0)]
    # the toy test pipeline before the packer is kept (toy image size)
    assert pipeline[1].type == 'Resize' and pipeline[1].scale == (TINY, ) * 2


@pytest.mark.slow
@pytest.mark.parametrize('config,defaults', [
    ('fcos_fl.py', True),  # mmdet's default flip TTA
    ('retinanet_ce_sf.py', False),  # the config's; OptimalBiasInit checks
])
def test_tta_runs_end_to_end(config, defaults, toy_cfg, toy_data_root,
                             tmp_path, capfd):
    """Every image is predicted once from its merged passes, and COCO
    evaluation runs; the pack's hooks find the detector inside the TTA
    model (OptimalBiasInit checks its head before any run). In-process
    (the command line's TTA runs in test_train_toy_end_to_end)."""
    from mmdet.registry import MODELS
    checkpoint = str(tmp_path / 'init.pth')
    torch.save({'state_dict': MODELS.build(
        toy_cfg(config).model).state_dict()}, checkpoint)
    out = str(tmp_path / 'tta.pkl')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        import_tool('test').main([
            f'{CONFIGS}/{config}', checkpoint, '--toy', 'tiny', '--toy-data',
            toy_data_root, '--tta', '--out', out, '--work-dir',
            str(tmp_path / 'w'), '--cfg-options', 'model.test_cfg.score_thr=0',
            # mmengine's visualizer is a per-name singleton in this process
            f'visualizer.name=vis_tta_{config}'])
    assert any('has no tta_pipeline' in str(w.message)
               for w in caught) == defaults
    assert 'coco/bbox_mAP' in ''.join(capfd.readouterr())
    with open(out, 'rb') as f:
        results = pickle.load(f)
    assert len(results) == 8 and all(
        len(r['pred_instances']['bboxes']) > 0 for r in results)


def test_tta_of_the_config_is_used_at_the_toy_size(monkeypatch,
                                                   toy_data_root, tmp_path):
    """mmdet's RetinaNet configs bring a multi-scale tta_pipeline; --toy
    scales it down like every other pipeline, and nothing warns."""
    cfg, caught = _tta_cfg('retinanet_fl.py', monkeypatch, toy_data_root,
                           tmp_path)
    assert not any('--tta' in m for m in caught)
    assert cfg.model.type == 'DetTTAModel'
    assert cfg.model.module.type == 'RetinaNet'
    pipeline = cfg.test_dataloader.dataset.pipeline
    assert pipeline == cfg.tta_pipeline
    resizes = pipeline[-1].transforms[0]
    assert len(resizes) == 3 and all(
        t.type == 'Resize' and t.scale == (TINY, ) * 2 for t in resizes)


def test_a_custom_runner_type_is_built_by_both_tools(toy_data_root,
                                                     monkeypatch, tmp_path):
    """As mmdet's tools do: a config's runner_type goes through RUNNERS."""
    common = ['--toy', 'tiny', '--toy-data', toy_data_root, '--cfg-options',
              'runner_type=MyRunner']
    config = f'{CONFIGS}/retinanet_fl.py'
    checkpoint = tmp_path / 'x.pth'
    checkpoint.write_bytes(b'')
    train_tool = import_tool('train')
    built = []
    monkeypatch.setattr(RUNNERS, 'build', lambda cfg: built.append(
        cfg.runner_type) or types.SimpleNamespace(test=lambda: None))
    import_tool('test').main([config, str(checkpoint)] + common)
    train_tool.build_runner(train_tool.parse_args([config] + common))
    assert built == ['MyRunner', 'MyRunner']
