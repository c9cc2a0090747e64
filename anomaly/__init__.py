"""anomaly: learn what good parts look like, find defects, run on a plain CPU.

The runtime side (imageio, runtime, batch, data, metrics) imports no torch; training
and export (model, train, detector, export) need the `train` extra.
"""

from . import allocator  # noqa: F401  (sets torch's huge-page switch before torch loads)

__version__ = "0.1.0"
