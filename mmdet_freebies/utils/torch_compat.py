"""Let ``--resume`` work on torch >= 2.6 without disabling weights-only loading.

torch 2.6 made ``torch.load(weights_only=True)`` the default. mmengine 0.10
calls ``torch.load`` without the argument, and its checkpoints pickle a few
non-tensor objects (the message hub's ``HistoryBuffer`` and the numpy arrays
and scalars inside it). We allowlist exactly those globals; everything else
stays rejected by torch's safe unpickler.
"""
import numpy as np
import torch

# Found by saving and resuming real mmengine/mmdet checkpoints
# (tests/test_utils/test_torch_compat.py pins the set).
def _checkpoint_globals() -> list:
    from mmengine.logging.history_buffer import HistoryBuffer
    globals_ = [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        np.core.multiarray._reconstruct,
        np.core.multiarray.scalar,
    ]
    # numpy >= 1.25 pickles dtypes by their class (numpy.dtypes.Float64DType).
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        globals_ += [
            getattr(dtypes, name) for name in (
                'Float64DType', 'Float32DType', 'Int64DType', 'Int32DType',
                'BoolDType', 'UInt8DType') if hasattr(dtypes, name)
        ]
    return globals_


def register_torch_safe_globals() -> list:
    """Add mmengine's checkpoint globals to torch's weights-only allowlist.

    Returns:
        list: the globals added ([] on torch < 2.4, which has no allowlist
        and does not default to weights-only loading).
    """
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:
        return []
    globals_ = _checkpoint_globals()
    add(globals_)
    return globals_
