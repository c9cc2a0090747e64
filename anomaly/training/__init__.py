"""Training and export: needs the `train` extra (torch).

The allocator settings must be in place before torch allocates anything, so this package
applies them first; the inspection side never imports it.
"""

from anomaly.training import allocator  # noqa: F401  (sets torch's huge-page switch before torch loads)
