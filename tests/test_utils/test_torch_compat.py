import io
import pickle

import pytest
import torch
from mmengine.logging import HistoryBuffer

import mmdet_freebies  # noqa: F401  (registers the allowlist)


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf)  # weights_only=True is torch's default


def test_history_buffer_loads_weights_only():
    hb = HistoryBuffer()
    hb.update(1.5)
    hb.update(2.5)
    loaded = _roundtrip({'buffer': hb, 'w': torch.ones(2)})
    assert loaded['buffer'].mean() == 2.0
    assert torch.equal(loaded['w'], torch.ones(2))


class Evil:

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


class NotAllowed:
    pass


def test_other_globals_stay_rejected():
    with pytest.raises(pickle.UnpicklingError, match='NotAllowed'):
        _roundtrip({'x': NotAllowed()})
    # getattr is only resolved for HistoryBuffer's statistics methods.
    with pytest.raises(pickle.UnpicklingError, match='not allowed'):
        _roundtrip({'x': Evil()})


def test_nothing_is_registered_before_torch_2_6(monkeypatch):
    """torch 2.4-2.5 read every allowlist entry as ``f.__module__``, so a
    ``(function, name)`` entry would break every weights-only load; they
    do not load weights-only by default, so nothing is needed there."""
    from mmdet_freebies.utils.torch_compat import (
        _history_buffer_getattr, register_torch_safe_globals)
    before = list(torch.serialization.get_safe_globals())
    monkeypatch.setattr(torch, '__version__', '2.5.1')
    assert register_torch_safe_globals() == []
    assert torch.serialization.get_safe_globals() == before
    monkeypatch.setattr(torch, '__version__', '2.5.0rc1')
    assert register_torch_safe_globals() == []
    # pre-releases of 2.6 already load weights-only
    for version in ('2.6.0', '2.6.0rc1', '2.6.0a0+ecf3bae40a',
                    '2.6.0.dev20241112', '2.13.0+cpu', '10.0.0'):
        monkeypatch.setattr(torch, '__version__', version)
        assert (_history_buffer_getattr,
                'builtins.getattr') in register_torch_safe_globals(), version
