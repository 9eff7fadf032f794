"""The C heap under a training run (glibc, Linux).

A decoder run's peak RSS can sit a gigabyte above the bytes of its tensors: glibc serves a request above its mmap
threshold (128 KiB at start) with a mapping of its own, returned to the system when freed, but each such free
raises the threshold to the freed size (up to 32 MiB), so that from then on tensors of that size come from the
heap. A freed heap block stays resident for reuse, and blocks of many sizes (after a cut every layer has widths
of its own) leave holes that a later tensor of another size does not fit. ``train.mmap_threshold`` fixes the
threshold (glibc then stops moving it): every tensor above it is mapped and unmapped by itself, and RSS follows
the live tensors, at the price of fresh zeroed pages for every activation of every step
(``benchmarks/train_rss.py`` measures both).
"""

from __future__ import annotations

import ctypes

from aptune.config import MAX_MMAP_THRESHOLD

M_MMAP_THRESHOLD = -3  # mallopt's parameter number for the threshold (glibc's malloc.h)


def fix_mmap_threshold(nbytes: int) -> None:
    """Serve every allocation above ``nbytes`` with its own mapping, for the rest of the process (glibc only)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError as err:
        raise RuntimeError("train.mmap_threshold needs glibc (libc.so.6, Linux); this system has none: "
                           "leave train.mmap_threshold null") from err
    if libc.mallopt(M_MMAP_THRESHOLD, int(nbytes)) != 1:
        raise RuntimeError(f"glibc refused train.mmap_threshold={nbytes}: it takes 0 to {MAX_MMAP_THRESHOLD} "
                           "bytes")
