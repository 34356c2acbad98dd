"""Shared by the benchmarks: one thread for a timed block, and the side
order alternated between passes."""
import contextlib

import torch


@contextlib.contextmanager
def one_thread(cv2=None):
    """One torch thread (and one OpenCV thread when ``cv2`` is the module)
    for the block, restored afterwards: the benchmarks run one after another
    in ``run_all.py``. Per-step work this small runs on one thread, and one
    thread's CPU time is robust to other load on a shared machine."""
    threads = torch.get_num_threads()
    cv2_threads = cv2.getNumThreads() if cv2 else None
    torch.set_num_threads(1)
    if cv2:
        cv2.setNumThreads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if cv2:
            cv2.setNumThreads(cv2_threads)


def alternated(sides, r):
    """``sides`` in pass ``r``'s order: as given on even passes, reversed on
    odd ones, so that running first or second (warm caches, the previous
    side's garbage) favours neither."""
    return sides if r % 2 == 0 else sides[::-1]
