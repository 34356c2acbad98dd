"""One torch thread for a timed block, restored afterwards (the benchmarks
run one after another in ``run_all.py``)."""
import contextlib

import torch


@contextlib.contextmanager
def one_thread():
    """Per-step work this small runs on one thread, and one thread's CPU
    time is robust to other load on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
