"""Let ``--resume`` work on torch >= 2.6 without disabling weights-only loading.

torch 2.6 made ``torch.load(weights_only=True)`` the default. mmengine 0.10
calls ``torch.load`` without the argument, and its checkpoints pickle a few
non-tensor objects: the message hub's ``HistoryBuffer``, the numpy arrays,
dtypes and scalars inside it, and the buffer's statistics methods, which
pickle protocol 2 stores as ``builtins.getattr(HistoryBuffer, 'mean')``.
We allowlist exactly those. ``getattr`` is not allowlisted as such: the name
``builtins.getattr`` maps to a function that only resolves HistoryBuffer's
own statistics methods, so torch's safe unpickler still rejects everything
else.
"""
import re
from typing import Callable, List, Tuple, Union

import numpy as np
import torch

SafeGlobal = Union[Callable, Tuple[Callable, str]]


def _history_buffer_getattr(obj, name: str):
    """``getattr`` restricted to what a pickled HistoryBuffer needs."""
    from mmengine.logging.history_buffer import HistoryBuffer
    allowed = {'min', 'max', 'current', 'mean',
               *HistoryBuffer._statistics_methods}
    if obj is HistoryBuffer and name in allowed and not name.startswith('_'):
        return getattr(HistoryBuffer, name)
    raise torch.serialization.pickle.UnpicklingError(
        f'weights-only load: getattr({obj!r}, {name!r}) is not allowed; '
        'mmdet_freebies only allows HistoryBuffer statistics methods')


def _checkpoint_globals() -> List[SafeGlobal]:
    """The globals an mmengine 0.10 / mmdet 3.3 checkpoint holds (pinned by
    ``tests/test_tools/test_train.py``)."""
    from mmengine.logging.history_buffer import HistoryBuffer
    globals_: List[SafeGlobal] = [
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
        np.ndarray,
        np.dtype,
        np.core.multiarray._reconstruct,
        np.core.multiarray.scalar,
    ]
    # A dtype is rebuilt by numpy.dtype('f8'), then its state is set; torch
    # checks the built object's class: numpy.dtypes.Float64DType and the
    # like on numpy >= 1.25, numpy.dtype[float64] before (no numpy.dtypes)
    globals_ += [type(np.dtype(code))
                 for code in ('f8', 'f4', 'i8', 'i4', '?', 'u1')]
    return globals_


def safe_global_names() -> List[str]:
    """Full names of the allowlisted globals, as torch reports them."""
    return [g[1] if isinstance(g, tuple) else f'{g.__module__}.{g.__qualname__}'
            for g in _checkpoint_globals()]


def register_torch_safe_globals() -> List[SafeGlobal]:
    """Add mmengine's checkpoint globals to torch's weights-only allowlist.

    Returns:
        list: the globals added ([] before torch 2.6, which does not
        default to weights-only loading; its allowlist, from 2.4, takes no
        ``(function, name)`` entries).
    """
    # release numbers only: a 2.6 pre-release (2.6.0rc1, NVIDIA's
    # 2.6.0a0+...) already loads weights-only, and digit_version orders it
    # before 2.6.0
    major, minor = re.match(r'(\d+)\.(\d+)', str(torch.__version__)).groups()
    if (int(major), int(minor)) < (2, 6):
        return []
    add = torch.serialization.add_safe_globals
    globals_ = _checkpoint_globals()
    add(globals_)
    return globals_
