"""cli: annotation-file, checkpoint and pretrained-weight checks and the
slurm environment, each failure a ``UserInputError`` naming what is
wrong."""
import json
import os
import re
import subprocess
import sys
import types

import pytest

from mmdet_freebies.utils import cli
from mmdet_freebies.utils.cli import UserInputError, check_annotation_file

from helpers import CONFIGS, repo_config


@pytest.mark.parametrize('content, match', [
    (None, 'does not exist'),
    ('', 'is empty'),
    ('{', 'is not valid JSON'),
    ('{}', 'has no images'),
    (json.dumps(dict(images=[], annotations=[])), 'has no images'),
    ('[]', 'is not a COCO annotation file'),
    (json.dumps(dict(images=[dict(id=1)], annotations=[])),
     'has no categories'),
])
def test_bad_annotation_file_is_named(tmp_path, content, match):
    path = tmp_path / 'ann.json'
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserInputError, match=re.escape(f"'{path}' {match}")):
        check_annotation_file(str(path))


def test_annotation_file_with_images_passes(tmp_path):
    """Without annotations a file may serve for testing, not for training:
    mmdet's filter_empty_gt would drop every image."""
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(dict(images=[dict(id=1)], annotations=[],
                                    categories=[dict(id=1, name='a')])))
    check_annotation_file(str(path))
    with pytest.raises(UserInputError, match='has no annotations'):
        check_annotation_file(str(path), training=True)


SLURM = dict(SLURM_PROCID='3', SLURM_NTASKS='8', SLURM_LOCALID='1',
             SLURM_NODELIST='node[07-08]')
DIST_KEYS = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')


@pytest.fixture
def slurm_env(monkeypatch):
    for key in DIST_KEYS:  # recorded, so the values the code sets go too
        monkeypatch.setenv(key, '')
        monkeypatch.delenv(key)
    for key, value in SLURM.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def test_slurm_env_sets_torch_distributed_variables(slurm_env):
    calls = []

    def scontrol(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout='node07\nnode08\n')

    slurm_env.setattr(subprocess, 'run', scontrol)
    cli._env_from_slurm()
    assert calls == [['scontrol', 'show', 'hostname', 'node[07-08]']]
    assert {k: os.environ[k] for k in DIST_KEYS} == dict(
        RANK='3', WORLD_SIZE='8', LOCAL_RANK='1', MASTER_ADDR='node07',
        MASTER_PORT='29500')


def test_slurm_env_keeps_a_given_master(slurm_env):
    slurm_env.setenv('MASTER_ADDR', 'head')
    slurm_env.setenv('MASTER_PORT', '1234')
    slurm_env.setattr(subprocess, 'run', None)  # scontrol is not needed
    cli._env_from_slurm()
    assert (os.environ['MASTER_ADDR'], os.environ['MASTER_PORT']) == (
        'head', '1234')


def test_slurm_env_errors_name_the_problem(slurm_env):
    slurm_env.delenv('SLURM_NTASKS')
    with pytest.raises(UserInputError, match='needs SLURM_NTASKS'):
        cli.check_launcher_env('slurm')
    slurm_env.setenv('SLURM_NTASKS', '8')

    def no_scontrol(cmd, **kwargs):
        raise FileNotFoundError('scontrol')

    slurm_env.setattr(subprocess, 'run', no_scontrol)
    with pytest.raises(UserInputError,
                       match=r"SLURM_NODELIST='node\[07-08\]'"):
        cli._env_from_slurm()


def test_checkpoint_check_names_a_missing_file_and_passes_urls(tmp_path):
    with pytest.raises(UserInputError,
                       match="--resume checkpoint 'nowhere.pth' does not"):
        cli.check_checkpoint('nowhere.pth', '--resume checkpoint')
    cli.check_checkpoint('https://download.openmmlab.com/x.pth')
    ckpt = tmp_path / 'a.pth'
    ckpt.write_bytes(b'')
    cli.check_checkpoint(str(ckpt))


def test_torchvision_checkpoint_without_torchvision_is_named(
        toy_cfg, monkeypatch):
    """mmdet's ResNet configs load torchvision:// weights; without
    torchvision the run would fail only at weight init."""
    cfg = repo_config('retinanet_fl.py')
    monkeypatch.setitem(sys.modules, 'torchvision', None)  # not installed
    with pytest.raises(UserInputError, match=re.escape(
            "model.backbone.init_cfg.checkpoint='torchvision://resnet50'")):
        cli.check_pretrained(cfg)
    cli.check_pretrained(toy_cfg('retinanet_fl.py'))  # no pretrained weights
    cli.check_pretrained(repo_config('yolov3_baseline.py'))
    monkeypatch.setitem(sys.modules, 'torchvision', types.ModuleType('tv'))
    cli.check_pretrained(cfg)


def test_pytorch_launcher_outside_torchrun_is_named(monkeypatch):
    from types import SimpleNamespace

    from mmdet_freebies.utils.cli import load_config
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    args = SimpleNamespace(
        config=f'{CONFIGS}/retinanet_fl.py', toy=None, local_rank=0,
        launcher='pytorch', work_dir=None, cfg_options=None)
    with pytest.raises(UserInputError, match='--launcher pytorch needs the '
                       'variables torchrun sets .RANK, WORLD_SIZE, '
                       'MASTER_ADDR, MASTER_PORT missing.'):
        load_config(args)


def test_mpi_launcher_outside_mpirun_is_named(monkeypatch):
    """mmengine's mpi launcher would fail with a bare KeyError."""
    from types import SimpleNamespace

    from mmdet_freebies.utils.cli import load_config
    for key in ('OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE',
                'OMPI_COMM_WORLD_LOCAL_RANK', 'MASTER_ADDR'):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv('OMPI_COMM_WORLD_SIZE', '2')
    args = SimpleNamespace(
        config=f'{CONFIGS}/retinanet_fl.py', toy=None, local_rank=0,
        launcher='mpi', work_dir=None, cfg_options=None)
    with pytest.raises(UserInputError, match='--launcher mpi needs the '
                       "variables Open MPI's mpirun sets and MASTER_ADDR "
                       r'\(OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_LOCAL_RANK, '
                       r'MASTER_ADDR missing\)'):
        load_config(args)


def test_toy_data_without_toy_is_named():
    from types import SimpleNamespace

    from mmdet_freebies.utils.cli import load_config
    args = SimpleNamespace(
        config=f'{CONFIGS}/retinanet_fl.py', toy=None, toy_data='my/toy/',
        local_rank=0, launcher='none', work_dir=None, cfg_options=None)
    with pytest.raises(UserInputError, match="--toy-data 'my/toy/' is only "
                       'read with --toy'):
        load_config(args)


def test_work_dir_from_the_cli_then_the_config_then_the_name(tmp_path):
    """As mmdet's tools/train.py: --work-dir, else the config's work_dir,
    else ./work_dirs/<config file name>."""
    from types import SimpleNamespace

    from mmdet_freebies.utils.cli import load_config
    config = tmp_path / 'my_cfg.py'
    config.write_text(f"_base_ = '{CONFIGS}/retinanet_fl.py'\n")
    args = dict(config=str(config), toy=None, local_rank=0, launcher='none',
                cfg_options=None)
    assert load_config(SimpleNamespace(work_dir=None, **args)).work_dir == \
        './work_dirs/my_cfg'
    config.write_text(f"_base_ = '{CONFIGS}/retinanet_fl.py'\n"
                      "work_dir = 'from/config'\n")
    assert load_config(SimpleNamespace(work_dir=None, **args)).work_dir == \
        'from/config'
    assert load_config(SimpleNamespace(work_dir='from/cli', **args)
                       ).work_dir == 'from/cli'


def test_finish_distributed_destroys_the_group(tmp_path):
    """After a run the group is destroyed (a gloo group left to the
    interpreter's exit can abort a rank that succeeded); without one it
    does nothing."""
    import torch.distributed as dist
    cli.finish_distributed()  # no group: nothing to do
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store',
                            rank=0, world_size=1)
    assert dist.is_initialized()
    cli.finish_distributed()
    assert not dist.is_initialized()
