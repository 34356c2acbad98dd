"""Paths and helpers shared by the tests (``tests/`` is on ``pythonpath``)."""
import os.path as osp
import socket

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs')


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a torch.distributed.run rendezvous."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
