"""Type checks of constructor arguments. ``bool`` is a subclass of ``int``
in Python, so without them ``True`` would pass as the number 1."""
import numbers


def is_int(value) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A real number (int, float, numpy scalar) that is not a ``bool``."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
