"""Shared fixtures: a small toy dataset generated once per session, and
configs of this pack rewritten for it."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmdet_freebies.datasets.toy import make_toy_dataset
from mmdet_freebies.utils.toy import apply_toy

from helpers import CONFIGS, is_repo_config, repo_config

# The toy models are tiny: one intra-op thread is faster than two on a
# 2-core machine, and leaves the other core to dataloaders and subprocesses.
torch.set_num_threads(1)


@pytest.fixture(scope='session')
def toy_data_root(tmp_path_factory):
    """16 training and 8 validation images of 64x64 with 4 classes."""
    root = tmp_path_factory.mktemp('toy')
    make_toy_dataset(str(root), seed=0, num_train=16, num_val=8,
                     img_size=(64, 64), min_size=6)
    return str(root) + '/'


@pytest.fixture
def toy_cfg(toy_data_root):
    """``toy_cfg('retinanet_fl.py', size='tiny')`` -> a Config on toy data.

    A bare name is looked up in ``configs/``.
    """

    def load(path: str, size: str = 'tiny') -> Config:
        if not osp.isabs(path) and not osp.exists(path):
            path = osp.join(CONFIGS, path)
        cfg = repo_config(path) if is_repo_config(path) else \
            Config.fromfile(path)
        return apply_toy(cfg, size, toy_data_root)

    return load
