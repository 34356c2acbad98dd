import numpy as np
import pytest

from mmdet_freebies.utils.checks import is_int, is_real


@pytest.mark.parametrize('value, as_int, as_real', [
    (3, True, True), (np.int64(3), False, True), (2.5, False, True),
    (np.float32(0.5), False, True), (True, False, False),
    (False, False, False), ('1', False, False), (None, False, False),
])
def test_bools_are_not_numbers(value, as_int, as_real):
    assert (is_int(value), is_real(value)) == (as_int, as_real)
