"""Shared command-line plumbing of ``tools/train.py``, ``tools/test.py`` and
the ablation tools: mmdet-compatible flags plus ``--toy``, and input checks
that turn a user's mistake into one clear message instead of a traceback
from deep inside mmengine."""
import argparse
import json
import os
import os.path as osp
import subprocess
from typing import List, Optional

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .toy import (TOY_DATA_ROOT, TOY_SIZES, apply_toy, check_toy_size,
                  find_datasets)

# Annotation files above this size are only checked for existence: parsing
# COCO train2017 (450 MB) twice would cost half a minute.
_PARSE_LIMIT = 50 * 2**20


class UserInputError(Exception):
    """A problem with the user's config, data or flags."""


def toy_size(text: str) -> str:
    """argparse ``type`` of ``--toy``: a key of ``TOY_SIZES``, checked while
    the arguments are parsed."""
    try:
        check_toy_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))
    return text


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every launcher (mmdet's names and meanings)."""
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings in the config, xxx=yyy format')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument(
        '--toy', nargs='?', const='small', default=None, metavar='SIZE',
        type=toy_size,
        help='run on the embedded synthetic dataset with a tiny backbone '
        f'and short schedule; SIZE is one of {sorted(TOY_SIZES)} '
        '(default: small)')
    parser.add_argument(
        '--toy-data', default=TOY_DATA_ROOT,
        help='root of the toy dataset (tools/make_toy_dataset.py --out)')


def check_toy_data(toy: Optional[str], toy_data: Optional[str],
                   unset: Optional[str] = None) -> None:
    """Refuse ``--toy-data`` given without ``--toy``, which would ignore
    it silently; ``unset`` is the flag's default."""
    if toy is None and toy_data != unset:
        raise UserInputError(f'--toy-data {toy_data!r} is only read with '
                             '--toy')


# Per launcher: the variables mmengine's launcher reads (Open MPI's and the
# master's address for mpi), and the error naming the missing ones.
LAUNCHER_ENV = {
    'pytorch': (('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
                '--launcher pytorch needs the variables torchrun sets '
                '({missing} missing): start it with tools/dist_train.sh or '
                'torchrun'),
    'slurm': (('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
              '--launcher slurm needs {missing} in the environment: start '
              'it with srun (tools/slurm_train.sh)'),
    'mpi': (('OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE',
             'OMPI_COMM_WORLD_LOCAL_RANK', 'MASTER_ADDR'),
            "--launcher mpi needs the variables Open MPI's mpirun sets and "
            'MASTER_ADDR ({missing} missing): start it with mpirun -x '
            'MASTER_ADDR=<first host> ...'),
}


def check_launcher_env(launcher: str) -> None:
    """Refuse a launcher started without its variables, which mmengine
    would meet with a bare KeyError (see ``LAUNCHER_ENV``)."""
    keys, message = LAUNCHER_ENV[launcher]
    missing = [k for k in keys if k not in os.environ]
    if missing:
        raise UserInputError(message.format(missing=', '.join(missing)))


def read_config(path: str) -> Config:
    """``Config.fromfile(path)``, a missing or unloadable file being a
    :class:`UserInputError` that names it."""
    if not osp.isfile(path):
        raise UserInputError(f'config file {path!r} does not exist')
    try:
        return Config.fromfile(path)
    except Exception as e:  # mmengine raises many types for a bad file
        raise UserInputError(
            f'cannot load config {path!r}: {type(e).__name__}: {e}')


def load_config(args: argparse.Namespace) -> Config:
    """Load ``args.config`` and apply ``--cfg-options``, ``--toy`` and
    ``--work-dir`` (CLI > config > ``work_dirs/<config name>``)."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = read_config(args.config)
    check_toy_data(args.toy, getattr(args, 'toy_data', TOY_DATA_ROOT),
                   unset=TOY_DATA_ROOT)
    if args.toy is not None:
        # --cfg-options train_cfg.max_epochs=N: the toy schedule (steps,
        # cosine, mixup switch, validation) is scaled to N, not to the size's
        max_epochs = (args.cfg_options or {}).get('train_cfg.max_epochs')
        try:
            apply_toy(cfg, args.toy, args.toy_data, max_epochs=max_epochs)
        except (FileNotFoundError, ValueError) as e:
            raise UserInputError(f'--toy: {e}')
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.launcher in LAUNCHER_ENV:
        check_launcher_env(args.launcher)
        if not torch.cuda.is_available():
            setup_cpu_distributed(cfg, args.launcher)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


def runner_from_cfg(cfg: Config) -> Runner:
    """The runner of ``cfg``: its ``runner_type`` from the ``RUNNERS``
    registry if it names one, else mmengine's ``Runner`` (as mmdet's tools
    build it)."""
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def finish_distributed() -> None:
    """After a distributed run, wait for every rank and destroy the process
    group. Left to the interpreter's exit, a gloo group can abort a rank
    whose run succeeded ('terminate called without an active exception',
    exit status -6), which a launcher then reports as a failed job."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def setup_cpu_distributed(cfg: Config, launcher: str = 'pytorch') -> None:
    """Make mmengine's pytorch, slurm and mpi launchers work without CUDA.

    mmengine 0.10 calls ``torch.cuda.set_device(local_rank)`` before
    ``init_process_group`` and wraps the model in DDP with
    ``device_ids=[local_rank]``; both fail for CPU modules. We start the gloo
    process group ourselves (the runner then skips its own ``init_dist``) and
    let DDP run on the CPU (``device_ids=None``). GPU runs are untouched.
    """
    import torch.distributed as dist
    if launcher == 'slurm':
        _env_from_slurm()
    elif launcher == 'mpi':
        _env_from_mpi()
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def _env_from_mpi() -> None:
    """Set torch.distributed's ``env://`` variables from Open MPI's, as
    mmengine's mpi launcher does (MASTER_PORT 29500 unless set)."""
    os.environ['RANK'] = os.environ['OMPI_COMM_WORLD_RANK']
    os.environ['WORLD_SIZE'] = os.environ['OMPI_COMM_WORLD_SIZE']
    os.environ['LOCAL_RANK'] = os.environ['OMPI_COMM_WORLD_LOCAL_RANK']
    os.environ.setdefault('MASTER_PORT', '29500')


def _env_from_slurm() -> None:
    """Set torch.distributed's ``env://`` variables from slurm's, as
    mmengine's slurm launcher does: MASTER_ADDR is the first node of
    SLURM_NODELIST and MASTER_PORT 29500, unless they are set
    (:func:`check_launcher_env` has checked slurm's)."""
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ['SLURM_NODELIST']
        try:
            hosts = subprocess.run(['scontrol', 'show', 'hostname', nodes],
                                   capture_output=True, text=True,
                                   check=True).stdout.split()
        except (OSError, subprocess.CalledProcessError) as e:
            raise UserInputError(
                f'cannot expand SLURM_NODELIST={nodes!r} with scontrol '
                f'({e}); set MASTER_ADDR to the first node')
        os.environ['MASTER_ADDR'] = hosts[0]


def check_checkpoint(path: str, what: str = 'checkpoint') -> None:
    """Raise ``UserInputError`` if the local checkpoint ``path`` is missing;
    a URL (the model zoo) is mmengine's to fetch."""
    if '://' not in path and not osp.isfile(path):
        raise UserInputError(f'{what} {path!r} does not exist')


def check_annotation_file(path: str, training: bool = False) -> None:
    """Raise ``UserInputError`` naming ``path`` if it is missing, empty, not
    a COCO file (a JSON object), or has no images or categories; for
    ``training``, also without annotations (mmdet's ``filter_empty_gt``
    would then drop every image)."""
    if not osp.isfile(path):
        raise UserInputError(
            f'annotation file {path!r} does not exist (check data_root and '
            'ann_file, or use --toy for the embedded dataset)')
    size = osp.getsize(path)
    if size == 0:
        raise UserInputError(f'annotation file {path!r} is empty')
    if path.endswith('.json') and size < _PARSE_LIMIT:
        try:
            with open(path) as f:
                content = json.load(f)
        except ValueError as e:
            raise UserInputError(f'annotation file {path!r} is not valid '
                                 f'JSON: {e}')
        if not isinstance(content, dict):
            raise UserInputError(
                f'annotation file {path!r} is not a COCO annotation file (a '
                'JSON object with images, annotations and categories)')
        for key in ('images', 'categories') + (
                ('annotations', ) if training else ()):
            if not content.get(key):
                raise UserInputError(f'annotation file {path!r} has no '
                                     f'{key}')


def check_pretrained(cfg: Config) -> None:
    """Fail before training when an ``init_cfg`` loads ``torchvision://``
    weights (mmdet's ResNet configs) and torchvision is not installed:
    mmengine would stop only at weight init, after building everything."""
    def find(node, key):
        if isinstance(node, dict):
            checkpoint = node.get('checkpoint')
            if key.endswith('init_cfg') and isinstance(checkpoint, str) \
                    and checkpoint.startswith('torchvision://'):
                yield key, checkpoint
            for k, v in node.items():
                yield from find(v, f'{key}.{k}')
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                yield from find(v, f'{key}[{i}]')

    found = next(find(cfg.get('model') or {}, 'model'), None)
    if found is None:
        return
    try:
        import torchvision  # noqa: F401
    except ImportError:
        key, checkpoint = found
        raise UserInputError(
            f'{key}.checkpoint={checkpoint!r} needs torchvision, which is '
            'not installed: install the torchvision that matches your '
            'torch, or set the checkpoint to a local file (or '
            f'{key}=None to train from scratch)')


def check_data(cfg: Config, loaders: Optional[List[str]] = None) -> None:
    """Check every dataset's annotation file under the given dataloaders."""
    for loader in loaders or ['train_dataloader', 'val_dataloader']:
        for ds in find_datasets(cfg.get(loader) or {}):
            root = ds.get('data_root') or ''
            path = ds['ann_file']
            if not path:
                continue
            check_annotation_file(
                path if osp.isabs(path) else osp.join(root, path),
                training=loader == 'train_dataloader')
