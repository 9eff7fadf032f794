"""train.mmap_threshold: glibc stops moving its threshold, so a tensor freed and asked for again is mapped again
(its pages leave RSS when it is freed) instead of coming back from the heap."""

import platform
import subprocess
import sys

import pytest

GLIBC = platform.libc_ver()[0] == "glibc"

# Bytes glibc holds in mappings of their own (mallinfo2's hblkhd) while a second 4 MiB tensor lives, after a first
# one of the same size was freed: glibc's default moves its threshold above 4 MiB at that free, so the second
# comes from the heap; with the threshold fixed it gets a mapping of its own again.
PROBE = """
import ctypes, sys, torch
from aptune.train.allocator import fix_mmap_threshold
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                  "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "fixed":
    fix_mmap_threshold(128 * 1024)
first = torch.empty(2**20)
del first
before = libc.mallinfo2().hblkhd
second = torch.empty(2**20)
print(libc.mallinfo2().hblkhd - before)
"""


def _mapped_growth(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="train.mmap_threshold is a glibc setting (Linux)")
def test_a_fixed_threshold_maps_a_tensor_that_glibc_would_take_from_the_heap():
    assert _mapped_growth("default") == 0
    assert _mapped_growth("fixed") >= 4 * 2**20
