"""The process's memory as the kernel and the allocator see it, read now (Linux).

* ``rss``: resident set size; ``anonymous`` is its heap-like part, the rest (``files``) is mapped files: the
  interpreter's and libraries' code and data (``libtorch_cpu.so`` alone is hundreds of MB), read-only weights
  files (from ``/proc/self/smaps_rollup``).
* ``heap_in_use``: bytes ``malloc`` has handed out and not had back; ``heap_free_held``: what the allocator holds
  from the system beyond them (freed, kept for reuse). Asked of the allocator the process runs under
  (:func:`aptune.allocator.current`): tcmalloc's and jemalloc's statistics, glibc's ``mallinfo2``.
* ``other_anonymous``: anonymous memory outside ``malloc``'s heap: Python's own object arenas (pymalloc maps them
  directly), the threads' stacks, what libraries map for themselves.

Everything here is a reading, not an estimate; None where the platform does not give it.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from aptune import allocator

_PAGE = 4096


def rss_now() -> int | None:
    """Current resident set size in bytes (cheap: one small read of ``/proc/self/statm``)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE
    except OSError:
        return None


def file_backed_ranges() -> list[tuple[int, int]]:
    """The address ranges of this process's file-backed mappings (from ``/proc/self/maps``): a tensor whose data lies
    in one is a mapped file's pages (a safetensors checkpoint loaded with mmap), not heap."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[4] != "0" and fields[5].startswith("/"):  # an inode and a path
            start, end = fields[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


def _rollup() -> dict[str, int]:
    try:
        text = Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[name] = int(parts[0]) * 1024
    return fields


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _glibc_heap() -> tuple[int, int] | None:
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):  # glibc < 2.33
        return None
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    # in use in the arenas + chunks mmapped on their own; the arenas' bytes from the system + those chunks
    return info.uordblks + info.hblkhd, info.arena + info.hblkhd


def _tcmalloc_heap() -> tuple[int, int] | None:
    getter = ctypes.CDLL(None).MallocExtension_GetNumericProperty
    getter.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t)]

    def get(name: bytes) -> int:
        value = ctypes.c_size_t()
        if not getter(name, ctypes.byref(value)):
            raise AttributeError(name)
        return value.value

    return (get(b"generic.current_allocated_bytes"),
            get(b"generic.heap_size") - get(b"tcmalloc.pageheap_unmapped_bytes"))


def _jemalloc_heap() -> tuple[int, int] | None:
    mallctl = ctypes.CDLL(None).mallctl
    mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p,
                        ctypes.c_size_t]
    epoch = ctypes.c_uint64(1)
    mallctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.sizeof(epoch))  # refresh the statistics

    def get(name: bytes) -> int:
        value = ctypes.c_size_t()
        size = ctypes.c_size_t(ctypes.sizeof(value))
        if mallctl(name, ctypes.byref(value), ctypes.byref(size), None, 0) != 0:
            raise AttributeError(name)
        return value.value

    return get(b"stats.allocated"), get(b"stats.resident")


_HEAP = {"glibc": _glibc_heap, "tcmalloc": _tcmalloc_heap, "jemalloc": _jemalloc_heap}


def heap(name: str | None = None) -> tuple[int, int] | None:
    """(bytes handed out, bytes held from the system) of the process's allocator (``name``, default
    :func:`aptune.allocator.current`); None where it does not say."""
    reader = _HEAP.get(name or allocator.current())
    try:
        return reader() if reader else None
    except (AttributeError, OSError):  # a build without the statistics symbols
        return None


def heap_in_use(name: str | None = None) -> int | None:
    """Bytes the process's allocator has handed out and not had back."""
    both = heap(name)
    return None if both is None else both[0]


def reading() -> dict:
    """rss, anonymous, files, heap_in_use, heap_free_held and other_anonymous (bytes; None where unknown), and the
    allocator."""
    name = allocator.current()
    rollup = _rollup()
    rss, anonymous = rollup.get("Rss", rss_now()), rollup.get("Anonymous")
    in_use, held = heap(name) or (None, None)
    return {
        "allocator": name, "rss": rss, "anonymous": anonymous,
        "files": None if rss is None or anonymous is None else rss - anonymous,
        "heap_in_use": in_use, "heap_free_held": None if held is None else held - in_use,
        "other_anonymous": None if anonymous is None or held is None else anonymous - held,
    }

