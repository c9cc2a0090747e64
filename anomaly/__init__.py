"""anomaly: learn what good parts look like, find defects, run on a plain CPU.

The runtime side (imageio, runtime, batch, data, metrics) imports no torch; training
and export (model, train, detector, export) need the `train` extra.
"""

__version__ = "0.1.0"
