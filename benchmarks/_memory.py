"""Shared by the benchmarks: exact peak tensor memory, without the
allocator.

A ``TorchDispatchMode`` sees every tensor the ops under it create, adds its
storage's bytes when it appears and subtracts them when a weakref finalizer
reports the storage freed; the peak of that running sum is what the block
needed beyond the tensors that existed before it (pass those as
``inputs``, so that an in-place op on one of them counts nothing). Memory
that kernels allocate internally and free before they return is not seen.
"""
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakMemory(TorchDispatchMode):
    """Running bytes of the storages created under the mode, and its peak."""

    def __init__(self, inputs=()):
        super().__init__()
        # the inputs' storages exist already: a view of one, or an in-place
        # op on it, allocates nothing
        self.live = {t.untyped_storage().data_ptr() for t in inputs}
        self.current, self.peak = 0, 0

    def _free(self, key, nbytes):
        self.live.discard(key)
        self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or key in self.live:
                continue
            self.live.add(key)
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key, nbytes)
        return out
