"""Paths and helpers shared by the tests (``tests/`` is on ``pythonpath``)."""
import copy
import functools
import importlib.util
import json
import os
import os.path as osp
import socket
import subprocess
import sys

from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs')


@functools.lru_cache(maxsize=None)
def _read_repo_config(path: str) -> Config:
    return Config.fromfile(path)


def is_repo_config(path: str) -> bool:
    """Whether the file ``path`` is in ``configs/``."""
    return osp.dirname(osp.realpath(path)) == osp.realpath(CONFIGS)


def repo_config(path: str) -> Config:
    """``Config.fromfile`` of a config of ``configs/`` (a bare name, or a
    path in it), as a fresh copy. Each is read once per session: the suite
    loads the shipped configs hundreds of times, at ~0.4 s each with their
    mmdet ``_base_`` chains, and no test changes them."""
    path = osp.join(CONFIGS, path)
    if not is_repo_config(path):
        raise ValueError(f'{path!r} is not a config of {CONFIGS!r}')
    return copy.deepcopy(_read_repo_config(osp.realpath(path)))


def import_tool(name: str):
    """Import ``tools/<name>.py`` (the tools are scripts, not a package) by
    its path, once per session, as the module ``tools_<name>``: a tool's
    own name can be taken (``test`` is Python's own package)."""
    module_name = f'tools_{name}'
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            module_name, osp.join(REPO, 'tools', f'{name}.py'))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[module_name] = module
    return sys.modules[module_name]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a torch.distributed.run rendezvous."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_two_ranks(script: str, *args: str, timeout: int = 120,
                  **kwargs) -> subprocess.CompletedProcess:
    """Run ``script args`` as 2 processes with ``torch.distributed.run`` on
    127.0.0.1 (each rank starts its gloo group from the env), one thread
    each; returns the finished process with its output captured."""
    return subprocess.run([
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
        '--master_addr', '127.0.0.1', '--master_port', str(free_port()),
        str(script), *args
    ], env=dict(os.environ, OMP_NUM_THREADS='1'), capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def json_per_rank(source: str, tmp_path, **kwargs) -> list:
    """Run the script ``source`` as 2 ranks (see :func:`run_two_ranks`); it
    writes its result as JSON to ``sys.argv[1] + str(rank)``. Returns the
    two results, rank 0 first."""
    script = tmp_path / 'rank.py'
    script.write_text(source)
    proc = run_two_ranks(script, str(tmp_path / 'out'), **kwargs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = []
    for rank in (0, 1):
        with open(tmp_path / f'out{rank}') as f:
            results.append(json.load(f))
    return results
