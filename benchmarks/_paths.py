"""Shared by the benchmarks: the repository's paths. The pack itself is
importable without them: ``make install`` installs it, editable."""
import os.path as osp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs')
