"""Paths shared by the tests (``tests/`` is on ``pythonpath``)."""
import os.path as osp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs')
