"""Reuse freed memory while torch trains: a much faster backbone on Linux.

PyTorch's CPU tensors come from the C library's malloc. With glibc's defaults, every
large block (a backbone activation of a training batch can be hundreds of MB) is mapped
fresh from the kernel and unmapped when freed, so every batch page-faults new memory
and the backbone runs several times slower (docs/decisions.md, "Allocator settings").

Two settings together remove it, and the numbers stay the same bit for bit:
- `THP_MEM_ALLOC_ENABLE=1`, PyTorch's own switch: blocks of 2 MB and more are aligned
  to and backed by 2 MB pages. It is read once, at torch's first allocation, so it is
  set when this module is imported before torch (`anomaly.training` imports it first).
- glibc serves every block from its heap (M_MMAP_MAX 0) and gives freed heap back to
  the system only beyond KEEP_BYTES (M_TRIM_THRESHOLD), so freed blocks are reused.
  Without the 2 MB alignment, slightly different sizes left freed blocks unused and the
  heap kept growing, so this is only done when the first setting took effect. (glibc
  still maps memory directly when its heap cannot grow.)

Kept memory is only worth keeping while the same sizes come back. Between training
phases (the backbone's activations are done once the feature bank is built; the bank
itself is freed before the patch memory) `release_freed_memory` hands every free page
back (glibc malloc_trim), so the process holds what it uses, not the largest phase's
leftovers. Results move by float rounding at most: where blocks sit can change which
vectorised path a kernel takes.

Only the torch side (training, the torch scorer) calls `keep_freed_memory`; the ONNX
runtime has its own arena. On other C libraries (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

KEEP_BYTES = 1 << 30  # freed heap kept for reuse before any is given back
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc malloc.h

# Must happen before torch is imported; a user's own setting wins.
_HUGE_PAGES = "torch" not in sys.modules and os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1") == "1"
_applied = False


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed memory (up to KEEP_BYTES of it) when torch's large
    blocks come in 2 MB pages; True if it took effect (now or on an earlier call).
    Idempotent and safe to call anywhere."""
    global _applied
    if _applied:
        return True
    if not (_HUGE_PAGES and sys.platform.startswith("linux")):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process already uses
    except (OSError, AttributeError):  # no mallopt: not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _applied = bool(mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES)) and bool(mallopt(_M_MMAP_MAX, 0))
    return _applied


def release_freed_memory() -> bool:
    """Give every whole free page of the heap back to the system, where freed memory is
    being kept (keep_freed_memory took effect); True if any was returned. Call it where
    a phase's large temporaries are done and the next phase allocates different sizes."""
    if not _applied:
        return False
    malloc_trim = ctypes.CDLL(None).malloc_trim
    malloc_trim.argtypes = (ctypes.c_size_t,)
    malloc_trim.restype = ctypes.c_int
    return bool(malloc_trim(0))
