from . import samplers  # noqa: F401
from . import prior_estimator  # noqa: F401
